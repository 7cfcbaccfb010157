"""Objective registry: one file per objective family, each a pure function

``objective(log_probs_new, log_probs_old, advantages, mask, step_info, config) -> (loss, metrics)``

over ``[B, T]`` action log-probs, so the same objective trains a flow sampler (actions =
denoising steps) and a language model (actions = tokens). Look one up with
``genrl.registry.OBJECTIVES.get(name)``.
"""

from genrl.objectives import grpo  # noqa: F401  (registers "grpo")
