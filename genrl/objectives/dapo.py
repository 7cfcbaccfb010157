"""DAPO's policy loss (Yu et al. 2025, arXiv 2503.14476): GRPO's clipped surrogate with
**Clip-Higher** (§3.1), a decoupled, larger upper clip bound,

``loss = agg_{b,t} max(-A_b r_bt, -A_b clip(r_bt, 1 - eps_low, 1 + eps_high)) + beta * agg(KL)``

with ``eps_low = objective.clip_range`` and ``eps_high = objective.clip_range_high``
(``null`` = ``eps_low``, i.e. plain GRPO). The paper uses ``eps_low = 0.2``,
``eps_high = 0.28`` (§4.1) for tokens; set them explicitly (our defaults are Flow-GRPO's
flow-step ``1e-3``). Raising only the upper bound lets low-probability actions with a
positive advantage grow, against entropy collapse.

DAPO's **Token-Level Policy Gradient Loss** (§3.3) is ``loss_agg=token-mean`` (the default,
recommended with this objective): every token weighs the same, so long responses are not
down-weighted. The paper's other parts are not in the loss: dynamic sampling (§3.2) and
overlong filtering / soft overlong punishment (§3.4) belong to the sampler and rewards; the
paper also drops the KL term (``beta = 0``, §2.3). Advantages are clamped to
``+-adv_clip_max`` as in grpo.
"""

from __future__ import annotations

from genrl.objectives.grpo import clipped_policy_loss
from genrl.registry import OBJECTIVES


@OBJECTIVES.register("dapo")
def dapo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    return clipped_policy_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config, config.loss_agg)
