"""Objective registry: one file per objective family, each a pure function

``objective(log_probs_new, log_probs_old, advantages, mask, step_info, config) -> (loss, metrics)``

over ``[B, T]`` action log-probs, so the same objective trains a flow sampler (actions =
denoising steps) and a language model (actions = tokens). Look one up with
``genrl.registry.OBJECTIVES.get(name)``. Registered: ``grpo`` (Flow-GRPO), ``dapo``
(clip-higher), ``dr_grpo`` (fixed-length normalisation), ``gspo`` (sequence-level ratio),
``sapo`` (soft gate), ``grpo_guard`` (GRPO-Guard's ratio normalisation and step reweighting;
flow policies only), ``sage_grpo`` (SAGE-GRPO's equaliser and dual trust region; ``sage`` steps).
Shared aggregation / KL / chunk-weight helpers: ``common``. Every module of this package is
imported here, so a new file registers itself.
"""

from genrl.registry import import_submodules

import_submodules(__name__, skip=("common",))
