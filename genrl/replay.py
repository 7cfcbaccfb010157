"""SePPO's random checkpoint replay (RCR): the pool of earlier weights the reference is drawn from.

SePPO (Zhang et al., arXiv 2410.05255; v2 calls it "Random Checkpoint Replay") does not keep the
reference model fixed: the checkpoints saved so far in the run, the starting model included, form
a pool, and the reference is drawn uniformly from it (``ref ~ U(0, k - 1)`` in v1's algorithm as
its reviewers quote it; the v1 ablation compares it with the fixed starting model, as
Diffusion-DPO and DITTO use, and with the latest checkpoint, as SPIN-Diffusion does). A pool entry
is a copy of the trained parameters (``Policy.trainable_state_dict``: the LoRA adapters, or the
whole denoiser under full fine-tuning) held in CPU memory; the reference runs the policy's own
module with those tensors (``genrl.ema.WithWeights``), so nothing is reloaded.

The pool is part of the trainer's checkpoint (``state_dict``: tensors and ints only, loadable with
``torch.load(weights_only=True)``), and draws use a generator seeded per step by the trainer, so a
resumed run draws the same references.
"""

from __future__ import annotations

from typing import Optional

import torch

from genrl.ema import WithWeights

REFERENCE_MODES = ("replay", "fixed", "latest")


class CheckpointPool:
    """Snapshots of the trained parameters taken at optimizer steps; entry 0 is the start.

    ``mode``: ``replay`` draws uniformly from every entry (SePPO's RCR), ``fixed`` always takes the
    start (Diffusion-DPO), ``latest`` the newest entry (SPIN-Diffusion). ``max_size > 0`` keeps the
    start and the newest ``max_size - 1`` snapshots (memory bound for large full fine-tunes); 0 keeps
    all. Raises ``ValueError`` for an unknown mode or a negative size."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], mode: str = "replay", max_size: int = 0):
        if mode not in REFERENCE_MODES:
            raise ValueError(f"reference mode {mode!r}; valid: {', '.join(REFERENCE_MODES)}")
        if max_size < 0:
            raise ValueError(f"pool size must be >= 0, got {max_size}")
        self.params, self.mode, self.max_size = dict(named_params), mode, int(max_size)
        self.steps: list[int] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.add(0)

    @torch.no_grad()
    def add(self, step: int, current: int = 0) -> int:
        """Snapshot the current parameters (CPU copies) as taken after optimizer step ``step``. Returns
        where the entry at index ``current`` (the reference in use) now is: it moves down by one when
        the oldest snapshot after the start is dropped (``max_size``), and is -1 if it was dropped."""
        self.steps.append(int(step))
        self.weights.append({n: p.detach().to("cpu", copy=True) for n, p in self.params.items()})
        if self.max_size and len(self.steps) > self.max_size:  # keep the start
            del self.steps[1], self.weights[1]
            return -1 if current == 1 else current - (current > 1)
        return current

    def draw(self, generator: Optional[torch.Generator] = None) -> int:
        """The index of the next reference: uniform over the pool (``replay``), 0 or the newest."""
        if self.mode == "fixed":
            return 0
        if self.mode == "latest":
            return len(self.steps) - 1
        return int(torch.randint(0, len(self.steps), (1,), generator=generator))

    def reference(self, index: int, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` computing with entry ``index``'s weights (moved to the parameters' device)."""
        device = next(iter(self.params.values())).device
        return WithWeights(module, {n: w.to(device) for n, w in self.weights[index].items()})

    def __len__(self) -> int:
        return len(self.steps)

    def state_dict(self) -> dict:
        return {"mode": self.mode, "steps": list(self.steps), "weights": [dict(w) for w in self.weights]}

    def load_state_dict(self, state: dict) -> None:
        if state["mode"] != self.mode:
            raise ValueError(
                f"the checkpoint's pool was drawn with reference.mode={state['mode']!r}, not {self.mode!r}"
            )
        if state["weights"] and set(state["weights"][0]) != set(self.params):
            raise ValueError("the checkpoint's pool holds other parameters than this policy trains")
        self.steps, self.weights = [int(s) for s in state["steps"]], [dict(w) for w in state["weights"]]


__all__ = ["REFERENCE_MODES", "CheckpointPool"]
