"""Copies of the trained parameters kept beside them: the exponential moving average (used
for evaluation) and SAGE-GRPO's moving anchor (the reference of its trust region)."""

from __future__ import annotations

import contextlib

import torch


class EMA:
    """``shadow = d * shadow + (1 - d) * param``, called after every optimizer step.

    With ``every = 1`` and ``warmup = False`` (the defaults) ``d = decay`` at every step. Flow-GRPO's
    ``EMAModuleWrapper`` (``flow_grpo/ema.py``, driven from ``scripts/train_sd3.py`` with decay 0.9
    and ``update_step_interval=8``) applies it only when ``(n + 1) % every == 0`` and warms the
    decay up as ``d = min((1 + n) / (10 + n), decay)``, ``n`` the optimizer steps taken so far.

    One difference, kept on purpose: Flow-GRPO calls ``ema.step`` after every rollout micro-batch
    (``train_sd3.py``'s loop over ``samples_batched``), passing the optimizer-step counter, so with
    gradient accumulation an interval's update is applied once per micro-batch that sees an interval
    count (several times with the same weights, i.e. a decay near ``d**G``). genrl applies it once per
    optimizer step, so with accumulation its EMA weights move less than Flow-GRPO's."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float, every: int = 1, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        if every < 1:
            raise ValueError(f"EMA interval must be >= 1, got {every}")
        self.params, self.decay, self.every, self.warmup = list(params), decay, int(every), bool(warmup)
        self.shadow = [p.detach().clone() for p in self.params]
        self.optimizer_steps = 0

    def current_decay(self) -> float:
        n = self.optimizer_steps
        return min((1 + n) / (10 + n), self.decay) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        self.optimizer_steps += 1
        if (self.optimizer_steps + 1) % self.every:
            return
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1.0 - d)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily load the EMA weights into the model (for evaluation)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "shadow": [s.clone() for s in self.shadow],
            "optimizer_steps": self.optimizer_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the trained parameters")
        for s, t in zip(self.shadow, state["shadow"]):
            s.copy_(t)
        self.optimizer_steps = int(state.get("optimizer_steps", 0))


class Anchor:
    """SAGE-GRPO's moving anchor (arXiv 2603.21872, dual trust region): a copy of the trained
    parameters, taken at the start and again after every ``period``-th optimizer step. The
    KL term then measures the drift from the anchor instead of from the initial model.

    The anchor forward runs the same module with the anchor's tensors in place of the trained
    parameters (``torch.func.functional_call``). The parameters themselves are never
    overwritten, so a gradient forward taken before it stays valid."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], period: int):
        if period < 1:
            raise ValueError(f"anchor period must be >= 1, got {period}")
        self.params, self.period = dict(named_params), int(period)
        self.weights = {n: p.detach().clone() for n, p in self.params.items()}
        self.optimizer_steps = 0  # since the start of the run
        self.moved_at = 0  # the optimizer step of the last copy

    @torch.no_grad()
    def step(self) -> None:
        """Call after every optimizer step; copies the parameters every ``period`` steps."""
        self.optimizer_steps += 1
        if self.optimizer_steps % self.period == 0:
            for n, p in self.params.items():
                self.weights[n].copy_(p.detach())
            self.moved_at = self.optimizer_steps

    def view(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` computing with the anchor's weights (its other parameters and buffers as they are)."""
        return WithWeights(module, self.weights)

    def state_dict(self) -> dict:
        return {
            "period": self.period,
            "optimizer_steps": self.optimizer_steps,
            "moved_at": self.moved_at,
            "weights": {n: w.clone() for n, w in self.weights.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if set(state["weights"]) != set(self.weights) or state["period"] != self.period:
            raise ValueError("anchor state does not match the trained parameters or objective.anchor_period")
        for n, t in state["weights"].items():
            self.weights[n].copy_(t)
        self.optimizer_steps, self.moved_at = int(state["optimizer_steps"]), int(state["moved_at"])


class WithWeights(torch.nn.Module):
    """Calls ``module`` with some of its parameters replaced by ``weights`` (by name, e.g. a
    ``trainable_state_dict``) through ``torch.func.functional_call``; the module's own parameters
    are never overwritten."""

    def __init__(self, module: torch.nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.inner, self.weights = module, weights

    def forward(self, *args, **kwargs):
        return torch.func.functional_call(self.inner, self.weights, args, kwargs)
