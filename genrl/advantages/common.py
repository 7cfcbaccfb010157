"""The run's advantages: the configured estimator, built once per run, over the weighted reward sum
or over each reward alone (``advantages.combine``), with any state it keeps carried by checkpoints."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch

from genrl.advantages.grpo import group_advantages, group_stats

AdvantageFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_estimator(entry: Any, config) -> Callable:
    """The callable ``(rewards [B], group_ids [B], config) -> (advantages [B], stats)`` for a registered
    estimator: a function is used as it is; a class (an estimator that keeps state across steps, such
    as RiskPO's tracked quantiles) is instantiated as ``entry(config)`` (a plug-in class that cannot be
    is one error naming ``advantages.estimator``: ``genrl.registry.plugin_call``). Its instance must have
    ``state_dict()`` and ``load_state_dict(state)``, which checkpoints carry, or say ``keeps_state = False``:
    a class keeping a count without them resumed inexactly, silently (``ValueError`` naming the setting)."""
    from genrl.registry import plugin_call

    if not inspect.isclass(entry):
        return entry
    estimator = plugin_call(entry, config, option="advantages.estimator", name=config.estimator)
    saves = all(callable(getattr(estimator, m, None)) for m in ("state_dict", "load_state_dict"))
    if not saves and getattr(estimator, "keeps_state", True) is not False:
        raise ValueError(
            f"advantages.estimator={config.estimator!r} is a class without state_dict() and load_state_dict(): "
            "what it keeps across steps would not be checkpointed, and a resume would start it afresh; give it "
            "both, or the class attribute keeps_state = False if it keeps nothing"
        )
    return estimator


def is_stateful(estimator: Callable) -> bool:
    """Whether ``estimator`` keeps state that checkpoints must carry: it has ``state_dict``, and does not
    say otherwise with ``keeps_state = False`` (RiskPO with each bundle's own quantiles)."""
    return callable(getattr(estimator, "state_dict", None)) and getattr(estimator, "keeps_state", True)


def weighted_advantages(
    rewards: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_ids: torch.Tensor,
    advantage_fn: Optional[Union[AdvantageFn, Mapping[str, AdvantageFn]]] = None,
) -> torch.Tensor:
    """``sum_k w_k * A_k`` with ``A_k = advantage_fn(rewards[k], group_ids)`` the advantages of reward
    ``k`` alone ([B] each; default: GRPO's group advantages; a mapping gives each reward its own
    function). MixGRPO's way of mixing rewards, so a reward on a larger scale does not drown the
    others; BNPO's advantage decomposition (each reward normalised by its own Beta, then averaged:
    weights ``1 / K``). A sample with any NaN reward is masked: it gets 0 and is left out of **every**
    reward's statistics (not only of the reward that failed), as in ``combine: rewards``. A reward of
    weight 0 takes no part (logged only: its failures mask nothing)."""
    weights = {name: w for name, w in weights.items() if w != 0}
    advantage_fn = advantage_fn or (lambda r, g: group_advantages(r, g)[0])
    fns = advantage_fn if isinstance(advantage_fn, Mapping) else dict.fromkeys(weights, advantage_fn)
    ok = torch.stack([torch.isfinite(rewards[name]) for name in weights]).all(0)
    nan = torch.full_like(group_ids, float("nan"), dtype=torch.float32)
    adv = sum(w * fns[name](torch.where(ok, rewards[name].float(), nan), group_ids) for name, w in weights.items())
    return torch.where(ok, adv, torch.zeros_like(adv))


class Advantages:
    """The run's advantage computation (``advantages.*``), called once per step on the rewards gathered
    from every process.

    * ``combine: rewards``: the estimator over the weighted reward sum.
    * ``combine: advantages``: the estimator over each reward alone, then weighted
      (:func:`weighted_advantages`); each reward has its own estimator instance, so a stateful one
      tracks each reward's distribution apart. Logged: :func:`group_stats` of the sum, and each
      reward's own estimator statistics (those outside ``reward/``) with ``_<reward>`` appended.

    ``state_dict()`` holds the state of every stateful estimator instance (``{}`` when none keeps any);
    the trainer saves it in each checkpoint and ``load_state_dict`` restores it, so a resume is exact.
    Why a class of ours: the estimators themselves stay plain functions (or small classes) that know
    nothing of rewards' weights or checkpoints.
    """

    def __init__(self, entry: Any, config, weights: Mapping[str, float]):
        self.config, self.weights = config, dict(weights)
        streams = ["total"] if config.combine == "rewards" else list(self.weights)
        self.estimators = {name: build_estimator(entry, config) for name in streams}

    def __call__(
        self, total: torch.Tensor, values: Mapping[str, torch.Tensor], group_ids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``total`` [B]: the weighted reward sum; ``values``: ``{reward: [B]}``; ``group_ids`` [B].
        Returns (advantages [B], stats)."""
        if self.config.combine == "rewards":
            return self._checked(self._call("total", total, group_ids), total)
        stats = group_stats(total, group_ids)

        def one(name: str) -> AdvantageFn:
            def fn(r: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
                adv, st = self._checked(self._call(name, r, g), r)
                stats.update({f"{k}_{name}": v for k, v in st.items() if not k.startswith("reward/")})
                return adv

            return fn

        adv = weighted_advantages(values, self.weights, group_ids, {name: one(name) for name in self.weights})
        return adv, stats

    def _call(self, stream: str, rewards: torch.Tensor, group_ids: torch.Tensor):
        from genrl.registry import plugin_call

        fn = self.estimators[stream]
        return plugin_call(
            fn, rewards, group_ids, self.config, option="advantages.estimator", name=self.config.estimator
        )

    def _checked(self, out, rewards: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """An estimator's return value against its contract, ``(advantages [B], stats dict)``, finite
        wherever ``rewards`` [B] is; a ``ValueError`` naming ``advantages.estimator`` where a plug-in broke
        it (before: "too many values to unpack", an IndexError deep in the update, or NaN advantages blamed
        on the learning rate)."""
        from genrl.registry import checked_metrics

        B, where = rewards.shape[0], f"advantages.estimator={self.config.estimator!r}"
        if not (isinstance(out, tuple) and len(out) == 2):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__!r} object"
            raise ValueError(f"{where} returned {got}; an estimator returns (advantages [B], stats)")
        adv, stats = out[0], checked_metrics(out[1], where, "stats")
        if not isinstance(adv, torch.Tensor) or tuple(adv.shape) != (B,):
            got = f"shape {tuple(adv.shape)}" if isinstance(adv, torch.Tensor) else f"a {type(adv).__name__}"
            raise ValueError(f"{where}: the advantages must be a tensor of shape ({B},), got {got}")
        bad = int((~torch.isfinite(adv) & torch.isfinite(rewards)).sum())
        if bad:
            raise ValueError(f"{where}: {bad} of {B} advantages are NaN or inf where the rewards are finite")
        return adv, stats

    def state_dict(self) -> dict[str, Any]:
        return {name: est.state_dict() for name, est in self.estimators.items() if is_stateful(est)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raises ``KeyError`` naming the estimator stream that ``state`` lacks."""
        for name, est in self.estimators.items():
            if is_stateful(est):
                if name not in state:
                    raise KeyError(name)
                est.load_state_dict(state[name])
