"""What every task answered in text shares: scoring by the verifiable rewards and evaluation.

A vision-language task (``digit_sum``, ``vlm_data``) derives from :class:`ResponseTask` and
supplies its examples; this base evaluates a policy (``evaluate``, the online trainer's hook) or
a bare model and processor (``evaluate_model``, the SFT trainer's) through one writer,
``genrl.evaluation.evaluate_responses``, so both trainers' evaluations match field for field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from genrl.evaluation import evaluate_responses
from genrl.registry import REWARDS
from genrl.vlm_batching import NEVER_SAMPLE_TOKENS, model_answerer, policy_answerer


class ResponseTask:
    """Base class of tasks answered in text. A subclass sets ``name`` and implements:

    * ``eval_examples(n) -> [(prompt, metadata, record)]``: the first ``n`` held-out examples;
      ``metadata`` holds the prompt's images and what the rewards need (``answer``, ...);
      ``record`` the fields written beside each response in ``samples.jsonl`` (``question``,
      ``answer``, an id).
    * ``sft_examples(n, generator) -> [(prompt, metadata, target)]`` (only for SFT): ``n``
      training examples drawn with ``generator``, each with its target response.

    ``suppress_tokens`` are never generated when a bare model answers (``evaluate_model``). With
    ``answer_with_generate`` the online trainer's evaluation too answers with the policy's module
    through ``model.generate`` (not the policy's own sampler), so SFT and RL evaluations of the
    task decode identically."""

    name: str
    gold_metric = "accuracy"  # what ``genrl compare`` reads as gold: held-out greedy accuracy, checked exactly
    suppress_tokens: tuple[str, ...] = NEVER_SAMPLE_TOKENS
    answer_with_generate: bool = False

    def eval_examples(self, n: int) -> list[tuple[str, dict, dict]]:
        raise NotImplementedError

    def sft_examples(self, n: int, generator: torch.Generator) -> list[tuple[str, dict, str]]:
        raise NotImplementedError(f"task {self.name!r} has no SFT targets")

    def check_prompts(self, policy, eval_cfg) -> None:
        """The online trainer's start-up check: ``policy.check_prompts`` on every training prompt (with
        ``policy.max_new_tokens``) and the evaluated examples (with ``eval.max_new_tokens``, the length
        evaluation generates): a prompt over ``policy.max_prompt_length``, or one that leaves no room for
        the response in the model's context, fails now, naming its row, not at the step that draws it."""
        policy.check_prompts(list(self.train_prompts()))
        evaluated = [(p, m) for p, m, _ in self.eval_examples(eval_cfg.num_questions)]
        policy.check_prompts(evaluated, eval_cfg.max_new_tokens, "eval.max_new_tokens")

    def reward(self, name: str):
        """A verifiable reward by registry name, built once (``genrl`` never imports ``rewards``)."""
        cache: dict[str, Any] = self.__dict__.setdefault("_reward_cache", {})
        if name not in cache:
            cache[name] = REWARDS.get(name)()
        return cache[name]

    def score(self, responses: Sequence[str], metadata: Sequence[dict]) -> dict[str, torch.Tensor]:
        """``{"accuracy": [N], "format": [N]}``: the accuracy and R1-format rewards (NaN where a
        response cannot be scored)."""
        if len(responses) != len(metadata):
            raise ValueError(f"got {len(responses)} responses for {len(metadata)} examples")
        return {n: self.reward(n)(list(responses), None, list(metadata))[n] for n in ("accuracy", "format")}

    def evaluate(self, policy, rewards, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        """Online-trainer hook: a ``VLMPolicy`` answers the held-out examples (``evaluate_responses``)."""
        if self.answer_with_generate:
            return self.evaluate_model(policy.module, policy.processor, eval_cfg, run_dir, step, seed)
        return self._evaluate(policy_answerer(policy, eval_cfg), eval_cfg, run_dir, step, seed)

    def evaluate_model(self, model, processor, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        """SFT-trainer hook: a transformers model answers with ``model.generate``."""
        return self._evaluate(
            model_answerer(model, processor, eval_cfg, self.suppress_tokens), eval_cfg, run_dir, step, seed
        )

    def _evaluate(self, answer, eval_cfg, run_dir: str, step: int, seed: int) -> dict[str, float]:
        examples = self.eval_examples(eval_cfg.num_questions)
        if not examples:
            return {}
        prompts, metadata, records = (list(x) for x in zip(*examples))
        return evaluate_responses(answer, prompts, metadata, records, self.score, eval_cfg, run_dir, step, seed)


__all__ = ["ResponseTask"]
