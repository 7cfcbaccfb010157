"""The interfaces a task and a reward implement, written down (``typing.Protocol``).

genrl finds both by name (``genrl.registry``) or by import path (``my_pkg.mod:Name``); nothing
has to inherit from these classes. ``isinstance(obj, Task)`` checks the methods exist (Python's
runtime protocols check names, not signatures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union, runtime_checkable

import torch

RewardOutput = Union[Mapping[str, torch.Tensor], torch.Tensor]


@runtime_checkable
class Reward(Protocol):
    """A reward: ``reward(samples, prompts, metadata)``.

    * ``samples``: what the policy produced, ``B`` of them: images ``[B, C, H, W]`` or videos
      ``[B, F, C, H, W]`` as float tensors in ``[0, 1]`` (flow and diffusion policies), or a list
      of ``B`` response strings (vision-language policies).
    * ``prompts``: the ``B`` prompts (``list[str]``); ``metadata``: ``B`` dicts, each the task's
      metadata of its prompt (e.g. ``{"digit": 7}``, ``{"answer": "8"}``, a VLM's images).
    * Returns ``{name: Tensor[B], ...}`` holding at least the reward's own (configured) name, with
      any further keys logged beside it (``reward/<key>_mean``), or a bare ``Tensor[B]`` taken as the
      reward's own values. Units are the reward's own; ``rewards:`` weights them.
    * Optional start-up checks, as attributes (static or class methods, or a function's attributes):
      ``check_samples(shape)`` with one sample's shape ``(C, H, W)`` / ``(F, C, H, W)`` and
      ``check_prompts(prompts)`` with the task's training and evaluation ``[(prompt, metadata)]``,
      each raising ``ValueError`` when the reward cannot score such samples or prompts (the digits
      rewards: 1x8x8 images, a digit in every prompt); the trainer refuses the run before anything
      is written (``genrl.scoring.check_rewards_take``).
    * A sample the reward cannot score gets ``NaN`` (never a silent 0): the trainer masks it out of
      the update and of every advantage statistic and counts it in ``reward/<name>_failed``. A
      reward that raises, or returns the wrong shape, fails its whole batch the same way.
    * Rewards are classes built with ``cls(**reward_args[name])`` (a missing model file is a
      ``ValueError`` naming the path, at start-up) or plain functions (their options bound as
      keyword arguments).
    """

    def __call__(self, samples: Any, prompts: Sequence[str], metadata: Sequence[dict]) -> RewardOutput: ...


@runtime_checkable
class Task(Protocol):
    """What the online trainer asks of a task (``task:`` in a config).

    * ``name``: the registered name.
    * ``from_config(cfg)``: the task for a trainer config (``OnlineConfig`` / ``OnlineVLMConfig``);
      bad data is a ``ValueError`` naming the file and row, raised here, before any training.
    * ``train_prompts()``: the RL prompt pool, ``[(prompt, metadata)]``; the sampler draws groups
      from it and ``metadata`` goes to the rewards with each sample.
    * ``evaluate(policy, rewards, eval_cfg, run_dir, step, seed)``: evaluate the policy, write
      ``run_dir/eval/step-XXXXXX/`` (``samples.jsonl`` and the samples) and return metrics
      ``{"eval/<name>": float}``.
    """

    name: str

    @classmethod
    def from_config(cls, cfg) -> Task: ...

    def train_prompts(self) -> list[tuple[str, dict]]: ...

    def evaluate(
        self, policy, rewards: Mapping[str, Reward], eval_cfg, run_dir: str, step: int, seed: int = 0
    ) -> dict[str, float]: ...


@runtime_checkable
class PromptTask(Task, Protocol):
    """A text-to-image / text-to-video task: what ``genrl.evaluation.evaluate_images`` and
    ``genrl gallery`` also use.

    * ``prompts()``: the evaluation prompts, ``list[str]``; ``metadata(prompt)``: that prompt's dict.
    * ``eval_rewards()``: extra judges scored at evaluation only, never optimised
      (``{name: Reward}``; e.g. the digits gold classifier).
    * ``eval_metrics(images, prompts, metadata)``: other evaluation metrics (e.g. diversity).
    * Optional, for ``genrl compare``: ``gold_metric``, the evaluation metric read as gold (the
      command refuses a task without one before training), and ``report_metrics``, more evaluation
      metrics reported beside it.
    """

    def prompts(self) -> list[str]: ...

    def metadata(self, prompt: str) -> dict: ...

    def eval_rewards(self) -> dict[str, Reward]: ...

    def eval_metrics(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict]
    ) -> dict[str, float]: ...


@runtime_checkable
class SFTTask(Task, Protocol):
    """A task the SFT trainer (``trainer: sft``) trains on; ``genrl.tasks.response.ResponseTask``
    implements both methods from a subclass's examples.

    * ``sft_examples(n, generator)``: ``n`` training examples drawn with ``generator``, each
      ``(prompt, metadata, target response)``; ``metadata`` holds the prompt's images
      (``"image"`` or ``"images"``, PIL).
    * ``evaluate_model(model, processor, eval_cfg, run_dir, step, seed)``: evaluate a bare
      transformers model and processor like ``evaluate`` does a policy (same files, same metrics).
    * Optional ``sft_rows()``: every training example ``sft_examples`` may draw, same form; a task of
      fixed rows (``vlm_data``) gives it: each row's words must be the model's, and its prompt and response
      must fit the model's context (checked at start-up, naming the row: ``genrl.vlm_batching.check_vlm_prompts``).
    """

    def sft_examples(self, n: int, generator: torch.Generator) -> list[tuple[str, dict, str]]: ...

    def evaluate_model(
        self, model, processor, eval_cfg, run_dir: str, step: int, seed: int = 0
    ) -> dict[str, float]: ...


@runtime_checkable
class EmbeddedTask(Task, Protocol):
    """A task that owns a model built or trained here (``policy.model: task:<name>``):
    ``prepare()`` returns the model folder, building it (atomically, logged) if missing. A task
    whose model is a denoising pipeline names its class in ``pipeline_class`` (``"DigitsPipeline"``),
    so that config validation finds the model family before the model is built."""

    def prepare(self, progress: bool = True) -> str: ...
