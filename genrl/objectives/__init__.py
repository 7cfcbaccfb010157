"""Objective registry: one file per objective family, each a pure function

``objective(log_probs_new, log_probs_old, advantages, mask, step_info, config) -> (loss, metrics)``

over ``[B, T]`` action log-probs, so the same objective trains a flow sampler (actions =
denoising steps) and a language model (actions = tokens). Look one up with
``genrl.registry.OBJECTIVES.get(name)``. Registered: ``grpo`` (Flow-GRPO), ``dapo``
(clip-higher), ``dr_grpo`` (fixed-length normalisation), ``gspo`` (sequence-level ratio),
``sapo`` (soft gate), ``grpo_guard`` (GRPO-Guard's ratio normalisation and step reweighting;
flow policies only), ``sage_grpo`` (SAGE-GRPO's equaliser and dual trust region; ``sage`` steps), ``mhpo`` (bounded log-ratio map
and hazard penalty), ``mdpo`` (mirror descent: unclipped surrogate + annealed KL to the rollout
policy), ``fiberpo`` (trajectory and per-action gates), ``capo`` (a curvature-aware mask on another
objective's tokens; VLM policies only; it keeps state, registered with ``state=``), and the preference
objectives ``diffusion_dpo``, ``seppo``, ``sft`` (``trainer: preference``).
An objective with options declares them as a config section in its own file
(``objective.<name>.*``, e.g. ``MHPOConfig``), which ``genrl.config.online.ObjectiveConfig`` holds.
Shared aggregation / KL / chunk-weight helpers: ``common``. Every module of this package is
imported here, so a new file registers itself.
"""

import genrl.config  # noqa: F401  (first: its ObjectiveConfig imports the option sections of mhpo, mdpo, ...)
from genrl.registry import import_submodules

import_submodules(__name__, skip=("common",))
