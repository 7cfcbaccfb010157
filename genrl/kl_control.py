"""KL-coefficient control: the fixed ``objective.beta``, or SAGE-GRPO's adaptive controller.

SAGE-GRPO (arXiv 2603.21872; ``AdaptiveKLController`` in its ``hyvideo/commons/grpo_commons.py``,
driven from ``hyvideo/utils/grpo_utils.py`` ``train_one_step``) adapts the coefficient of its
dual-trust-region KL:

* every backward pass reads the current coefficient, computes the loss with it, then hands the
  measured KL (``KL_anchor + 0.1 KL_step``, the term the coefficient multiplies) to ``update``;
* for the first ``warmup`` updates (100) the coefficient ramps linearly from ``coef_min`` (their
  ``kl_min_coef``, 1e-7) to ``coef_max`` (their ``kl_weight``, 1e-5): ``min + (max - min) * n / 100``;
* afterwards, with ``avg`` the mean of the last ``window`` (10) measured values: ``x0.9`` when
  ``avg - target > 0.5 target``, ``x1.1`` when ``avg - target < -0.5 target``, then clamped to
  ``[coef_min, coef_max]`` (their ``max_kl_coef`` = ``kl_weight``); the history keeps the last
  ``horizon`` (100) values.

As in their code the KL is compared with ``target``. Their ``kl_weight`` is both the KL target and the
coefficient's bound (genrl's default, ``objective.kl_target: null``); when ``kl_target`` is set apart, the
ramp still ends at the coefficient's bound ``coef_max`` (``objective.beta``): the target is a KL value,
not a coefficient, and ramping to it had put the coefficient outside ``[coef_min, coef_max]``.
Written here (no library ships it); its state round-trips through checkpoints for exact resume.
"""

from __future__ import annotations


class FixedKL:
    """``objective.beta`` unchanged."""

    adaptive = False

    def __init__(self, beta: float):
        self.value = float(beta)

    def update(self, kl: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class AdaptiveKL:
    """SAGE-GRPO's adaptive KL coefficient (see the module docstring). ``value`` is the coefficient
    to use for the next backward pass."""

    adaptive = True

    def __init__(
        self,
        target: float,
        coef_min: float = 1e-7,
        coef_max: float = 1e-5,
        warmup: int = 100,
        window: int = 10,
        horizon: int = 100,
    ):
        if not 0 < coef_min <= coef_max:
            raise ValueError(f"adaptive KL needs 0 < kl_coef_min <= beta, got {coef_min} and {coef_max}")
        self.target, self.coef_min, self.coef_max = float(target), float(coef_min), float(coef_max)
        self.warmup, self.window, self.horizon = int(warmup), int(window), int(horizon)
        self.value, self.updates, self.history = self.coef_min, 0, []

    def update(self, kl: float) -> None:
        self.updates += 1
        self.history = (self.history + [float(kl)])[-self.horizon :]
        if self.updates < self.warmup:
            self.value = self.coef_min + (self.coef_max - self.coef_min) * self.updates / self.warmup
            return
        if len(self.history) >= self.window:
            error = sum(self.history[-self.window :]) / self.window - self.target
            if error > 0.5 * self.target:
                self.value *= 0.9
            elif error < -0.5 * self.target:
                self.value *= 1.1
            self.value = min(max(self.value, self.coef_min), self.coef_max)

    def state_dict(self) -> dict:
        return {"value": self.value, "updates": self.updates, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.updates, self.history = float(state["value"]), int(state["updates"]), list(state["history"])


def build_kl_controller(cfg):
    """The controller ``objective.kl_controller`` names, from an ``ObjectiveConfig``."""
    if cfg.kl_controller == "adaptive":
        return AdaptiveKL(
            target=cfg.kl_target if cfg.kl_target is not None else cfg.beta,
            coef_min=cfg.kl_coef_min,
            coef_max=cfg.beta,
            warmup=cfg.kl_warmup,
        )
    return FixedKL(cfg.beta)
