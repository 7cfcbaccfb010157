"""What every policy shares: the trained module and its trainable state."""

from __future__ import annotations

import torch


class Policy:
    """Base class. Subclasses set ``module`` (the trained ``nn.Module``, unwrapped) and
    ``model`` (what gradient forwards go through; the trainer may wrap it for DDP), and
    implement ``rollout``, ``log_prob``, ``window`` and ``reference``."""

    module: torch.nn.Module
    # log ratio mean/std per action index: meaningful for the ~10 denoising steps of a flow
    # sampler, noise for the hundreds of token positions of a language model
    per_step_metrics = False

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
