"""Preference objectives over denoising errors: SePPO, Diffusion-DPO and SFT on winners.

Unlike the policy-gradient objectives of this package, these take no log-probs: their inputs are
per-sample denoising errors ``[B]`` (``DenoisingPolicy.denoising_error``: the squared error of the
network's prediction, averaged over the latent's dimensions), of the trained policy and of the
reference model, on the winner ``x^w`` and on the second sample of the pair ``x^l`` (a human
loser in Diffusion-DPO, the reference model's own sample in SePPO), all noised at the same ``t``
with the same noise. They are registered with ``kind="preference"`` and run by the preference
trainer (``trainer: preference``, ``genrl.trainers.preference``):

    objective(err_w, err_w_ref, err_l, err_l_ref, config) -> (loss, metrics)

**Diffusion-DPO** (Wallace et al., arXiv 2311.12908, eq. 14), in the form of the authors'
``train.py`` (SalesforceAIResearch/DiffusionDPO), which scales by ``0.5 * beta`` per-pixel-mean
errors::

    d_w = err_w - err_w_ref,   d_l = err_l - err_l_ref
    loss = -log sigmoid(-0.5 * beta * (d_w - d_l))

``pref/implicit_acc`` is the share of pairs with ``d_w < d_l`` (the policy prefers the winner more
than the reference does), ``pref/dpo_margin`` the mean of ``-0.5 * beta * (d_w - d_l)``.

**SePPO** (Zhang et al., arXiv 2410.05255; v1 "SePPO", v2 "SSPO") replaces the loser with a
sample of the reference model for the same prompt and decides per pair, with the winner as the
anchor, whether that sample is likely a loser: when the policy fits the winner at least as well
as the reference (``err_w <= err_w_ref``), the reference is the weaker model and its sample is
treated as a loser (the DPO term above); otherwise it is likely a winner and

* ``criterion: flip`` (v1's "anchor-based adaptive flipper"): the sign of its term flips,
  ``loss = -log sigmoid(-0.5 * beta * (d_w + d_l))``, so both samples are pulled towards lower
  error than the reference's;
* ``criterion: switch`` (v2's "self-sampling regularisation", which "switches from DPO to SFT"):
  the pair's loss is SFT's, ``err_w``;
* ``criterion: none``: always the DPO term (SePPO without the criterion, an ablation).

What could not be verified here: the method section of neither version could be read in this
project's sources, only the abstracts and reviews quoting v1 (the anchor compares the policy's
and the reference's errors on the winner from one noise draw; when the reference wins, "both the
winning data point and the reference samples" are learned from). The forms above follow those
statements; the equation numbers, the tie rule (here: a tie counts as a loser) and whether v2's
SFT branch also trains on the reference sample are not confirmed. ``pref/winner_frac`` logs the
share of pairs the criterion called winners.

**SFT** on winners: ``loss = mean(err_w)`` (the denoising loss of ordinary fine-tuning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genrl.registry import OBJECTIVES

CRITERIA = ("flip", "switch", "none")  # SePPO's anchor criterion: v1, v2, off


def _dpo_inside(d_w: torch.Tensor, d_l: torch.Tensor, beta: float) -> torch.Tensor:
    """``-0.5 * beta * (d_w - d_l)`` [B]: positive when the policy prefers the winner more than the reference."""
    return -0.5 * beta * (d_w - d_l)


def _pair_metrics(inside: torch.Tensor, d_w: torch.Tensor, d_l: torch.Tensor) -> dict[str, float]:
    return {
        "pref/dpo_margin": inside.mean().item(),
        "pref/implicit_acc": (d_w < d_l).float().mean().item(),
        "pref/err_winner_delta": d_w.mean().item(),
        "pref/err_other_delta": d_l.mean().item(),
    }


@OBJECTIVES.register("diffusion_dpo", kind="preference")
def diffusion_dpo(err_w, err_w_ref, err_l, err_l_ref, config):
    """Diffusion-DPO (arXiv 2311.12908, eq. 14): ``-log sigmoid(-0.5 beta (d_w - d_l))``, mean over pairs.
    ``err_*`` are ``[B]``; ``config.beta`` > 0. Returns (scalar loss, metrics)."""
    d_w, d_l = err_w - err_w_ref, err_l - err_l_ref
    inside = _dpo_inside(d_w, d_l, config.beta)
    loss = -F.logsigmoid(inside).mean()
    return loss, {"loss/dpo": loss.item(), **_pair_metrics(inside.detach(), d_w.detach(), d_l.detach())}


def anchor_says_winner(err_w: torch.Tensor, err_w_ref: torch.Tensor) -> torch.Tensor:
    """SePPO's anchor criterion ``[B]`` bool: the reference fits the winner strictly better than the
    policy (same ``t`` and noise), so its own sample is likely a winner too."""
    return (err_w_ref < err_w).detach()


@OBJECTIVES.register("seppo", kind="preference", options=("criterion",))
def seppo(err_w, err_w_ref, err_l, err_l_ref, config):
    """SePPO over (winner, reference sample) pairs; ``config.criterion`` in ``flip`` (v1), ``switch``
    (v2) or ``none`` (see the module docstring). ``err_*`` are ``[B]``. Returns (loss, metrics)."""
    if config.criterion not in CRITERIA:
        raise ValueError(f"objective.criterion={config.criterion!r}; valid: {', '.join(CRITERIA)}")
    d_w, d_l = err_w - err_w_ref, err_l - err_l_ref
    winner = anchor_says_winner(err_w, err_w_ref) if config.criterion != "none" else torch.zeros_like(d_w, dtype=bool)
    if config.criterion == "flip":
        inside = _dpo_inside(d_w, torch.where(winner, -d_l, d_l), config.beta)
        per_pair = -F.logsigmoid(inside)
    else:
        inside = _dpo_inside(d_w, d_l, config.beta)
        per_pair = torch.where(winner, err_w, -F.logsigmoid(inside))
    loss = per_pair.mean()
    metrics = {"loss/seppo": loss.item(), "pref/winner_frac": winner.float().mean().item()}
    return loss, {**metrics, **_pair_metrics(inside.detach(), d_w.detach(), d_l.detach())}


@OBJECTIVES.register("sft", kind="preference", pairs=False, ignores=("beta",))
def sft(err_w, err_w_ref, err_l, err_l_ref, config):
    """Supervised fine-tuning on the winners: ``mean(err_w)``; the other inputs are unused (the
    trainer skips computing them for this objective)."""
    loss = err_w.mean()
    return loss, {"loss/sft": loss.item()}
