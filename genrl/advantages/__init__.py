"""Advantage estimators: one file each, each registered in ``genrl.registry.ADVANTAGE_ESTIMATORS``,

``estimator(rewards [B], group_ids [B], config: AdvantageConfig) -> (advantages [B], stats)``

over the rewards gathered from every process (NaN = a failed reward: advantage 0, left out of the
statistics). An estimator is a pure function, or a class when it keeps state across steps: built once
per run as ``cls(config)``, called like the function, with ``state_dict`` / ``load_state_dict`` that
checkpoints carry (``Advantages``). Registered: ``grpo`` (group mean / std), ``bnpo`` (Beta
normalisation), ``riskpo`` (mixed value-at-risk over bundles of prompts; a class: its tracked
quantiles). ``Advantages`` is the run's computation (the estimator over the reward sum, or each
reward's advantages weighted: ``weighted_advantages``); ``d3s`` selects samples and actions after them.
An estimator with options declares them as a config section in its own file (``advantages.<name>.*``).
Every module of this package is imported here, so a new file registers itself.
"""

import genrl.config  # noqa: F401  (first: its AdvantageConfig imports the option sections of bnpo, riskpo, d3s)
from genrl.advantages.common import Advantages, build_estimator, weighted_advantages
from genrl.advantages.grpo import group_advantages, group_stats
from genrl.registry import import_submodules

__all__ = ["Advantages", "build_estimator", "group_advantages", "group_stats", "weighted_advantages"]

import_submodules(__name__)
