"""What every policy shares: the trained module, its trainable state and its reference."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

# PolicyConfig.dtype / VLMPolicyConfig.dtype -> the dtype of the frozen weights
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def prompt_location(prompts, i: int) -> str:
    """Where prompt ``i`` of ``[(prompt, metadata)]`` is, for a start-up refusal: its file and row
    (``metadata[genrl.tasks.rows.LOCATION]``) where the task gives them, else its index and text (shortened)."""
    from genrl.tasks.rows import LOCATION, SHORT  # lazy: the tasks import the policies' modules

    return (prompts[i][1] or {}).get(LOCATION) or f"prompt {i} ({SHORT.repr(prompts[i][0])})"


def check_encodable(prompts) -> None:
    """``ValueError`` naming the first of ``[(prompt, metadata)]`` that is not text UTF-8 can encode (a lone
    surrogate: a JSON ``"\\ud800"`` escape, bytes that are not UTF-8 in a command line) and how many are; its
    location (:func:`prompt_location`). Every tokenizer refuses such text, in a
    ``TypeError`` naming nothing, at whichever step drew the prompt. Part of each policy's ``check_prompts``."""
    bad = []
    for i, (p, _) in enumerate(prompts):
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as e:
            bad.append((i, e.start))
    if bad:
        i, at = bad[0]
        raise ValueError(
            f"{prompt_location(prompts, i)}: the prompt holds a character UTF-8 cannot encode (a lone surrogate, at character {at}: a "
            f"JSON \\ud800-style escape or bytes that are not UTF-8); {len(bad)} of {len(prompts)} prompts do"
        )


class Policy:
    """Base class. Subclasses set ``module`` (the trained ``nn.Module``, unwrapped) and
    ``model`` (what gradient forwards go through; the trainer may wrap it for DDP), and
    implement ``rollout``, ``log_prob`` and ``window`` (and ``_set_adapters`` if their adapters are
    not peft adapters on ``module``). ``ref_model`` is a
    frozen copy under full fine-tuning and ``None`` under LoRA."""

    module: torch.nn.Module
    ref_model: Optional[torch.nn.Module] = None
    anchor = None  # a genrl.ema.Anchor when the objective's KL is to a moving anchor
    # log ratio mean/std per action index: meaningful for the ~10 denoising steps of a flow
    # sampler, noise for the hundreds of token positions of a language model
    per_step_metrics = False

    # what its samples are (``genrl.scoring.SAMPLE_KINDS``): the rewards declare what they score, and a
    # mismatch is refused at start-up (``genrl.scoring.check_reward_samples``)
    samples: str = "images"

    @classmethod
    def samples_before_loading(cls, cfg) -> Optional[str]:
        """What the policy of config ``cfg`` makes, known before its model loads; None where only
        loading tells (then ``samples`` of the loaded policy)."""
        return cls.samples

    # (network output [B * t, ...] of the last gradient forward with retain_grad, its action indices [B * t]);
    # set by policies that report output_grad_norms
    _last_output = None

    def check_prompts(self, prompts, max_new_tokens: Optional[int] = None, key: str = "policy.max_new_tokens") -> None:
        """Start-up check of ``[(prompt, metadata)]`` against what this policy can take (the VLM
        policy: ``policy.max_prompt_length``, and room for ``max_new_tokens`` response tokens, the setting
        ``key``, in the model's context; a response task passes ``eval.max_new_tokens`` for its evaluated
        prompts); ``ValueError`` naming the first prompt that does not fit (``prompt_location``, its
        file and row, when the task gives one). Here: only that every prompt is text UTF-8 can encode
        (:func:`check_encodable`)."""
        check_encodable(prompts)

    def sample_shape(self) -> Optional[tuple[int, ...]]:
        """The shape of one sample (``[C, H, W]``, ``[F, C, H, W]``), known without sampling: what the
        trainers' start-up checks hold against the task's and the rewards' needs. None for samples
        without one (text)."""
        return None

    def output_grad_norms(self) -> dict[int, float]:
        """After a backward: ``{action index: mean over samples of ||d loss / d output||}`` for the
        last ``log_prob`` forward (flow policies: the predicted velocity of each denoising step, the
        quantity SAGE-GRPO's equaliser balances). ``{}`` where a policy does not track it, or no backward
        reached that forward. Either way the forward's output is let go (with it, its graph)."""
        if self._last_output is None:
            return {}
        out, steps = self._last_output
        self._last_output = None
        if out.grad is None:
            return {}
        norms = out.grad.flatten(1).norm(dim=1)  # [B * t]
        return {int(k): norms[steps == k].mean().item() for k in torch.unique(steps).tolist()}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.module.named_parameters())
        unknown = sorted(set(state) - {n for n, p in params.items() if p.requires_grad})
        if unknown:
            raise ValueError(f"checkpoint holds parameters this policy does not train: {unknown[:5]}")
        wrong = [(n, tuple(t.shape), tuple(params[n].shape)) for n, t in state.items() if t.shape != params[n].shape]
        if wrong:
            n, got, want = wrong[0]
            raise ValueError(
                f"checkpoint parameter {n} has shape {got}, this policy's {want} ({len(wrong)} such): it was "
                "trained with other settings (e.g. policy.lora.rank); resume with its config.yaml, or "
                "start over (resume=false or a new output_dir)"
            )
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def _set_adapters(self, enabled: bool) -> None:
        """Switch the LoRA adapters on or off (diffusers and transformers modules with peft adapters)."""
        if enabled:
            self.module.enable_adapters()
        else:
            self.module.disable_adapters()

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The KL reference: the moving anchor's weights when the trainer set ``anchor``
        (SAGE-GRPO); otherwise the frozen starting model, i.e. adapters disabled (LoRA) or
        the frozen copy (full FT)."""
        if self.anchor is not None:
            yield self.anchor.view(self.module)
            return
        if self.ref_model is not None:
            yield self.ref_model
            return
        self._set_adapters(False)
        try:
            yield self.module
        finally:
            self._set_adapters(True)
