"""What every policy shares: the trained module, its trainable state and its reference."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


class Policy:
    """Base class. Subclasses set ``module`` (the trained ``nn.Module``, unwrapped) and
    ``model`` (what gradient forwards go through; the trainer may wrap it for DDP), and
    implement ``rollout``, ``log_prob``, ``window`` and ``_set_adapters``. ``ref_model`` is a
    frozen copy under full fine-tuning and ``None`` under LoRA."""

    module: torch.nn.Module
    ref_model: Optional[torch.nn.Module] = None
    anchor = None  # a genrl.ema.Anchor when the objective's KL is to a moving anchor
    # log ratio mean/std per action index: meaningful for the ~10 denoising steps of a flow
    # sampler, noise for the hundreds of token positions of a language model
    per_step_metrics = False

    def output_grad_norms(self) -> dict[int, float]:
        """After a backward: the gradient norm of the loss with respect to the network's output,
        per action index (flow policies: the predicted velocity of each denoising step, the
        quantity SAGE-GRPO's equaliser balances). ``{}`` where a policy does not track it."""
        return {}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.module.named_parameters())
        unknown = sorted(set(state) - {n for n, p in params.items() if p.requires_grad})
        if unknown:
            raise ValueError(f"checkpoint holds parameters this policy does not train: {unknown[:5]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def _set_adapters(self, enabled: bool) -> None:
        raise NotImplementedError

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
