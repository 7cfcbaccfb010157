"""Pieces shared by the objectives: loss aggregation, the KL-to-reference term, ratio
clipping and the diagnostics every objective logs.

All tensors are ``[B, T]`` over actions (denoising steps of a flow sampler, or response
tokens of a language model) with a float ``mask`` marking the trained ones.

Loss aggregation (``config.loss_agg``), for per-action values ``x`` and mask ``m``:

* ``token-mean``: ``sum(x m) / sum(m)``, every trained action weighs the same (DAPO's
  token-level loss, arXiv 2503.14476 §3.3; Flow-GRPO's mean over steps).
* ``seq-mean-token-mean``: ``mean_b [sum_t x m / sum_t m]``, every sequence weighs the
  same whatever its length (the original GRPO ``1/|o_i|``); sequences with no trained
  action are left out of the mean.
* ``seq-mean-token-sum-norm``: ``sum(x m) / (B * L)`` with a constant ``L`` =
  ``config.max_len_norm`` (``0`` = the padded length ``T``): Dr. GRPO's fixed-length
  normalisation (arXiv 2503.20783 §3.1), which has neither GRPO's length bias nor a
  batch-dependent divisor.

Chunks, micro-batches and processes (``train.timestep_chunk``,
``train.gradient_accumulation_steps``, data parallelism). The trainer calls the objective on
column chunks of micro-batches and backpropagates ``loss_chunk * weight``. Every aggregation
divides a sum over actions by a *normaliser* (:func:`agg_normaliser`: the number of trained
actions, of sequences with a trained action, or ``B * L``). The loss of one optimizer step is
the aggregation over **all** of its actions, on every process (one optimizer step, one
normaliser), so each chunk's weight is ``normaliser(chunk) / normaliser(optimizer batch)``,
the latter summed over the micro-batches and all-reduced over the processes; the trainer also
multiplies by the number of processes, which data parallelism averages away. Dividing each
micro-batch by its own count and weighting it ``1 / gradient_accumulation_steps`` would weight
a token of a short micro-batch more than one of a long micro-batch (DAPO's token-level loss,
arXiv 2503.14476 §3.3, is over the whole batch). That reproduces the full-batch loss exactly

* for ``token-mean`` and ``seq-mean-token-sum-norm`` with any chunking (for the latter with
  ``max_len_norm = 0`` a chunk divides by its own width ``t``, and its normaliser is ``b * t``);
* for ``seq-mean-token-mean`` (and a sequence-level ratio, GSPO) only with whole-width chunks:
  a chunk's per-sequence means use the chunk's own lengths, which no scalar weight corrects.

:func:`chunk_weight` returns those weights and refuses the impossible case;
:func:`objective_chunk_weight` also applies what an objective forces on the aggregation.

Ratios are formed with :func:`safe_exp`: a log-ratio is clamped to ``+-LOG_RATIO_CLAMP`` (20)
before ``exp``, as verl does (``core_algos.compute_policy_loss``), so an action whose log-ratio
overflows (``exp(95)`` is ``inf`` in fp32) gives a finite loss and a zero, not NaN, gradient.
"""

from __future__ import annotations

from typing import Optional

import torch

from genrl.registry import OBJECTIVES

LOSS_AGGS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_TYPES: tuple[str, ...] = ("gaussian", "k1", "k3")


def checked_call(fn, *args, option: str, name: str) -> tuple[torch.Tensor, dict[str, float]]:
    """``fn(*args)``, an objective's call (``genrl.registry.plugin_call``: its errors named by ``option``),
    with its return value checked (:func:`checked_output`)."""
    from genrl.registry import plugin_call

    return checked_output(plugin_call(fn, *args, option=option, name=name), option, name)


# what the trainers log themselves beside an objective's metrics (prefixes end in "/"): an objective's
# "reward/total_mean" replaced the trainer's weighted reward in metrics.jsonl and the progress bar
TRAINER_METRICS = ("reward/", "time/", "train/", "grad/norm")


def checked_output(out, option: str, name: str) -> tuple[torch.Tensor, dict[str, float]]:
    """An objective's return value against its contract, ``(loss, metrics)``: a 0-d tensor and a
    mapping of metric names to numbers (a one-element tensor is read as its number; ``step`` is the
    row's own). Returns ``(loss, metrics as floats)``; a ``ValueError`` naming ``option`` (e.g.
    ``objective.name``) and ``name`` otherwise, where a broken plug-in raised a traceback deep in
    the update or had its tensor metrics dropped from the logs."""
    where = f"{option}={name!r}"
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"{where} returned a {type(out).__name__!r} object; an objective returns (loss, metrics)")
    loss, metrics = out
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = (
            f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else f"a {type(loss).__name__}"
        )
        raise ValueError(f"{where}: the loss must be a 0-d tensor (a scalar), got {got}")
    if torch.is_grad_enabled() and not loss.requires_grad:  # backward would fail with torch's own words
        raise ValueError(
            f"{where}: the loss does not depend on the trained weights (no grad_fn); compute it from the "
            "log-probs or denoising errors it is given, without .item(), .detach() or torch.no_grad()"
        )
    from genrl.registry import checked_metrics

    return loss, checked_metrics(metrics, where, reserved=TRAINER_METRICS)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (0 if the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def aggregate(
    x: torch.Tensor, mask: torch.Tensor, loss_agg: str = "token-mean", max_len_norm: int = 0
) -> torch.Tensor:
    """Reduce per-action values ``x`` [B, T] to a scalar with mode ``loss_agg`` (see the
    module docstring); ``max_len_norm`` is the constant of ``seq-mean-token-sum-norm``."""
    if loss_agg == "token-mean":
        return masked_mean(x, mask)
    if loss_agg == "seq-mean-token-mean":
        per_seq_count = mask.sum(dim=1)
        per_seq = (x * mask).sum(dim=1) / per_seq_count.clamp_min(1.0)
        return per_seq.sum() / (per_seq_count > 0).sum().clamp_min(1)
    if loss_agg == "seq-mean-token-sum-norm":
        length = max_len_norm if max_len_norm > 0 else x.shape[1]
        return (x * mask).sum() / max(x.shape[0] * length, 1)
    raise ValueError(f"unknown loss_agg {loss_agg!r}; valid: {', '.join(LOSS_AGGS)}")


def agg_normaliser(mask: torch.Tensor, loss_agg: str, *, max_len_norm: int) -> torch.Tensor:
    """The divisor :func:`aggregate` uses for ``mask`` [B, T] (0-dim float tensor): the number of
    trained actions (``token-mean``), of sequences with a trained action
    (``seq-mean-token-mean``), or ``B * L`` with ``L = max_len_norm or T``
    (``seq-mean-token-sum-norm``). Additive over rows, so the normaliser of an optimizer batch is
    the sum over its micro-batches (and processes)."""
    if loss_agg == "token-mean":
        return mask.sum()
    if loss_agg == "seq-mean-token-mean":
        return (mask.sum(dim=1) > 0).sum().to(mask.dtype)
    if loss_agg == "seq-mean-token-sum-norm":
        return mask.new_tensor(float(mask.shape[0] * (max_len_norm if max_len_norm > 0 else mask.shape[1])))
    raise ValueError(f"unknown loss_agg {loss_agg!r}; valid: {', '.join(LOSS_AGGS)}")


def chunk_weight(
    mask_chunk: torch.Tensor,
    mask_full: torch.Tensor,
    loss_agg: str,
    *,
    max_len_norm: int,
    total: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Weight of one chunk's loss so that the weighted sum over all chunks equals the loss
    aggregated over the whole optimizer batch (0-dim tensor, on the mask's device).

    ``mask_chunk`` [b, t] is a column slice of ``mask_full`` [b, T], one micro-batch.
    ``total`` is the optimizer batch's :func:`agg_normaliser` (summed over its micro-batches
    and processes); ``None`` = ``mask_full`` is the whole batch. For ``seq-mean-token-mean``
    only the whole width is allowed: a partial chunk raises ``ValueError``."""
    if loss_agg == "seq-mean-token-mean" and mask_chunk.shape[1] != mask_full.shape[1]:
        raise ValueError(
            f"this loss is a mean over whole sequences (loss_agg=seq-mean-token-mean or a sequence-level "
            f"ratio) and cannot be split into timestep chunks ({mask_chunk.shape[1]} of {mask_full.shape[1]} "
            f"columns); set train.timestep_chunk=0"
        )
    if total is None:
        total = agg_normaliser(mask_full, loss_agg, max_len_norm=max_len_norm)
    if loss_agg == "seq-mean-token-sum-norm" and max_len_norm <= 0:  # the chunk divides by b * t, the batch by B * T
        part = agg_normaliser(mask_chunk, loss_agg, max_len_norm=0)
    else:
        part = agg_normaliser(mask_chunk, loss_agg, max_len_norm=max_len_norm)
    return part / total.clamp_min(1.0)


def chunk_agg(objective, config) -> str:
    """The aggregation that governs chunking for ``objective``: an objective that fixes its own
    (registered with ``OBJECTIVES.register(name, chunk_agg=...)``: dr_grpo, gspo) overrides
    ``config.loss_agg``; ``chunk_agg`` may be a function of the ``ObjectiveConfig`` (capo: its base's)."""
    agg = OBJECTIVES.meta(objective).get("chunk_agg")
    return (agg(config) if callable(agg) else agg) or config.loss_agg


def objective_normaliser(objective, mask: torch.Tensor, config) -> torch.Tensor:
    """:func:`agg_normaliser` of ``mask`` with the aggregation ``objective`` uses."""
    return agg_normaliser(mask, chunk_agg(objective, config), max_len_norm=config.max_len_norm)


def objective_chunk_weight(
    objective, mask_chunk: torch.Tensor, mask_full: torch.Tensor, config, total: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """:func:`chunk_weight` for a registered objective and its ``ObjectiveConfig``."""
    return chunk_weight(
        mask_chunk, mask_full, chunk_agg(objective, config), max_len_norm=config.max_len_norm, total=total
    )


LOG_RATIO_CLAMP = 20.0  # verl's clamp of the log-ratio before exp (core_algos.compute_policy_loss)


def safe_exp(log_ratio: torch.Tensor, bound: float = LOG_RATIO_CLAMP) -> torch.Tensor:
    """``exp(clamp(log_ratio, -bound, bound))``: a ratio that cannot overflow. Outside the bound
    the gradient is 0 (such an action is far outside every trust region anyway)."""
    return torch.exp(log_ratio.clamp(-bound, bound))


def clip_bounds(config) -> tuple[float, float]:
    """``(1 - clip_range, 1 + clip_range_high)``; ``clip_range_high = None`` means symmetric."""
    high = config.clip_range if config.clip_range_high is None else config.clip_range_high
    return 1.0 - config.clip_range, 1.0 + high


def clamp_advantages(advantages: torch.Tensor, config) -> torch.Tensor:
    """Advantages [B] clamped to ``+-adv_clip_max``, as a [B, 1] column."""
    return advantages.clamp(-config.adv_clip_max, config.adv_clip_max)[:, None]


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """PPO's pessimistic per-action loss ``max(-A r, -A clip(r, low, high))``; broadcasts."""
    return torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, low, high))


def kl_per_action(
    log_probs_new: torch.Tensor, step_info: dict, kl_type: str, convention: str = "exact"
) -> Optional[torch.Tensor]:
    """Per-action KL to the reference [B, T], or ``None`` when its input is missing.

    ``gaussian``: ``step_info["kl"]`` as the policy computed it (flow policies: closed-form KL
    of the two Gaussian step distributions); with ``convention="flow_grpo"``
    ``step_info["kl_flow_grpo"]``, Flow-GRPO's (``train_sd3.py``: divided by ``2 std_t^2`` with
    the per-unit-time ``std_t``, without the step's ``sqrt(-dt)``). ``k1``: ``logp - logp_ref``. ``k3``: Schulman's
    low-variance, always >= 0 estimator ``exp(logp_ref - logp) - (logp_ref - logp) - 1``
    (as in GRPO, arXiv 2402.03300 eq. 4); both from ``step_info["ref_log_probs"]`` (token
    policies). The reference is detached."""
    if kl_type == "gaussian":
        return step_info.get("kl" if convention == "exact" else "kl_flow_grpo")
    if kl_type not in KL_TYPES:
        raise ValueError(f"unknown kl_type {kl_type!r}; valid: {', '.join(KL_TYPES)}")
    ref = step_info.get("ref_log_probs")
    if ref is None:
        return None
    d = ref.detach() - log_probs_new
    return -d if kl_type == "k1" else safe_exp(d) - d - 1.0


def add_kl(
    loss: torch.Tensor,
    metrics: dict,
    log_probs_new: torch.Tensor,
    mask: torch.Tensor,
    step_info: dict,
    config,
    loss_agg: str,
) -> torch.Tensor:
    """``loss + beta * aggregate(kl)``; logs ``metrics["loss/kl"]`` whenever the KL is computable
    (also with ``beta = 0``). ``beta > 0`` without the needed input raises ``ValueError``."""
    kl_type = config.kl_type
    with torch.set_grad_enabled(torch.is_grad_enabled() and config.beta > 0):
        kl = kl_per_action(log_probs_new, step_info, kl_type, config.kl_convention)
        if kl is None:
            if config.beta > 0:
                need = "'kl'" if kl_type == "gaussian" else "'ref_log_probs'"
                hint = (
                    "token policies give 'ref_log_probs': set objective.kl_type=k3 (or k1)"
                    if kl_type == "gaussian"
                    else "flow policies give a closed-form 'kl': set objective.kl_type=gaussian"
                )
                raise ValueError(
                    f"objective.beta > 0 with kl_type={kl_type!r} but the policy gave no per-step {need} "
                    f"for the KL to the reference; {hint}"
                )
            return loss
        value = aggregate(kl, mask, loss_agg, config.max_len_norm)
    metrics["loss/kl"] = value.item()
    return loss + config.beta * value if config.beta > 0 else loss


def ratio_metrics(
    log_ratio: torch.Tensor, mask: torch.Tensor, clip_range: float, clip_range_high: Optional[float] = None
) -> dict[str, float]:
    """Diagnostics every objective logs: ratio moments, clip fraction (share of actions with
    ``r`` outside ``[1 - clip_range, 1 + clip_range_high]``), approx KL (k3-free
    ``0.5 * log_ratio^2``, as in Flow-GRPO/TRL). ``log_ratio``, ``mask``: [B, T]."""
    high = clip_range if clip_range_high is None else clip_range_high
    with torch.no_grad():
        ratio = safe_exp(log_ratio)
        mean = masked_mean(ratio, mask)
        var = masked_mean((ratio - mean) ** 2, mask)
        outside = (ratio < 1 - clip_range) | (ratio > 1 + high)
        return {
            "ratio/mean": mean.item(),
            "ratio/std": var.sqrt().item(),
            "ratio/clip_frac": masked_mean(outside.float(), mask).item(),
            "ratio/approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
        }


def per_step_moments(
    values: torch.Tensor, mask: torch.Tensor, step_index: torch.Tensor
) -> list[tuple[int, float, float, float]]:
    """``(step, mean, std, count)`` of each column of ``values [B, t]`` (a denoising step) over its unmasked
    entries (``mask [B, t]``; columns with none are left out); ``step`` from ``step_index [B, t]``."""
    if values.numel() == 0:
        return []
    with torch.no_grad():  # all columns at once, one host transfer (this runs on every minibatch)
        m, v = mask.float(), values.float()
        n = m.sum(0)  # [t]
        mean = (v * m).sum(0) / n.clamp_min(1)
        std = (((v - mean) ** 2 * m).sum(0) / n.clamp_min(1)).sqrt()
        rows = torch.stack([step_index[0].to(n), mean, std, n], 1).tolist()  # [t, 4]; steps exact below 2**24
    return [(int(i), mu, sd, c) for i, mu, sd, c in rows if c > 0]


def per_step_means(
    values: torch.Tensor, mask: torch.Tensor, step_index: torch.Tensor, key: str
) -> list[tuple[dict[str, float], float]]:
    """The masked mean of each column of ``values [B, t]`` (a denoising step), keyed by its step
    index: ``[({"<key>_step_XX": mean}, count)]`` (e.g. ``noise/std``: each step's Gaussian std)."""
    return [({f"{key}_step_{i:02d}": mean}, n) for i, mean, _, n in per_step_moments(values, mask, step_index)]


def per_step_ratio_stats(
    log_ratio: torch.Tensor, mask: torch.Tensor, step_index: torch.Tensor, prefix: str = ""
) -> list[tuple[dict[str, float], float]]:
    """Ratio mean/std of each column of ``[B, t]`` (a denoising step), keyed by its step
    index: ``[({"ratio/<prefix>mean_step_XX": ..., "ratio/<prefix>std_step_XX": ...}, count)]``."""
    return [
        ({f"ratio/{prefix}mean_step_{i:02d}": mean, f"ratio/{prefix}std_step_{i:02d}": std}, n)
        for i, mean, std, n in per_step_moments(safe_exp(log_ratio), mask, step_index)
    ]
