"""Stateless flow-matching sampler steps with exact Gaussian log-probabilities.

A step moves a sample ``x`` from noise level ``sigma`` to ``sigma_next < sigma`` given the
predicted velocity ``v`` (diffusers' flow-matching convention: ``x_sigma = (1 - sigma) x0 +
sigma * noise`` and ``v = noise - x0``). Every stochastic step is a Gaussian
``x' ~ N(mean, std^2 I)``; the functions return that mean and std along with the sampled
``x'`` and its exact log-density, so a stored transition can be re-scored by new weights.

Log-prob convention: the exact Gaussian log-density *averaged* over the non-batch
dimensions (Flow-GRPO's convention, so its published clip ranges transfer); pass
``reduce="sum"`` for the full joint log-density.

Steps (``dt = sigma_next - sigma`` is negative):

- ``ode``: Euler, ``x' = x + dt * v``; deterministic (what evaluation uses).
- ``flow_sde``: Flow-GRPO (Liu et al. 2025, arXiv 2505.05470, eq. 9-10), the reverse SDE
  with the same marginals as the ODE: ``std_t = eta * sqrt(sigma / (1 - sigma))`` (at
  ``sigma = 1`` the denominator uses the schedule's second sigma), mean
  ``x (1 + std_t^2 dt / (2 sigma)) + v (1 + std_t^2 (1 - sigma) / (2 sigma)) dt`` and
  Gaussian std ``std_t * sqrt(-dt)``.
- ``cps``: coefficient-preserving sampling (Wang & Yu 2025, arXiv 2509.05952; Flow-GRPO's
  ``sde_type='cps'``): ``std = sigma_next * sin(eta * pi / 2)``, ``x0 = x - sigma v``,
  ``eps = x + (1 - sigma) v``, mean ``x0 (1 - sigma_next) + eps sqrt(sigma_next^2 - std^2)``.
  Its final step (``sigma_next = 0``) has ``std = 0``: it is deterministic and carries no
  log-prob, so policies never train it.
- ``sage``: SAGE-GRPO's manifold-aware step (arXiv 2603.21872): variance
  ``Sigma = eta^2 [ln((1 - sigma_next) / (1 - s~)) - (sigma - sigma_next)]`` (``s~ = min(sigma,
  1 - 3e-3)``), the exact integral of ``eta^2 s / (1 - s)`` over the step; mean
  ``x + dt v + Sigma / 2 * score`` with ``score = -(x - (1 - sigma) x0) / sigma^2``. As the
  authors' ``hyvideo/schedulers/scheduling_flow_match_discrete.py`` (``sde_type='sage_grpo'`` with
  ``sde_solver=True``), clamp included. The integral diverges at ``sigma = 1``, so the first step's
  variance is set by that clamp: with 6 evenly spaced steps and ``eta = 0.7``, 1.89 against ``flow_sde``'s 0.49
  (later steps add less noise than ``flow_sde``, as the paper intends).

With ``eta = 0`` every step reduces to the Euler step of
``diffusers.FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x' [B, ...]
    mean: torch.Tensor  # Gaussian mean of x' [B, ...]
    std: torch.Tensor  # Gaussian std of x' per element [B]; 0 for deterministic steps
    log_prob: torch.Tensor  # [B]; 0 where std == 0


def expand_batch(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample ``[B]`` (or scalar) tensor against ``like`` ``[B, ...]``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def reduce_nonbatch(t: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """Mean (or sum) over every dimension but the first."""
    dims = tuple(range(1, t.ndim))
    if reduce == "mean":
        return t.mean(dim=dims)
    if reduce == "sum":
        return t.sum(dim=dims)
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def gaussian_log_prob(
    value: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: str = "mean"
) -> torch.Tensor:
    """Exact log N(value; mean, std^2 I) reduced over non-batch dims; 0 where ``std == 0``.

    value, mean: [B, ...]; std: [B]. Returns [B].
    """
    stochastic = std > 0  # [B]
    safe_std = torch.where(stochastic, std, torch.ones_like(std))
    s = expand_batch(safe_std, mean)
    lp = -((value.detach() - mean) ** 2) / (2 * s**2) - torch.log(s) - _LOG_SQRT_2PI
    return torch.where(stochastic, reduce_nonbatch(lp, reduce), torch.zeros_like(std))


def gaussian_kl(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """KL(N(mean_p, std^2) || N(mean_q, std^2)) = ||mean_p - mean_q||^2 / (2 std^2), per sample.

    ``std`` is the Gaussian std of the step itself (for ``flow_sde`` that includes the
    ``sqrt(-dt)`` factor, which Flow-GRPO's KL omits). Reduced like the log-probs. [B].
    """
    stochastic = std > 0
    safe_std = torch.where(stochastic, std, torch.ones_like(std))
    kl = (mean_p - mean_q) ** 2 / (2 * expand_batch(safe_std, mean_p) ** 2)
    return torch.where(stochastic, reduce_nonbatch(kl, reduce), torch.zeros_like(std))


def gaussian_step(
    mean: torch.Tensor,
    std: torch.Tensor,
    prev_sample: Optional[torch.Tensor],
    generator: Optional[torch.Generator],
    reduce: str = "mean",
) -> StepOutput:
    """The Gaussian step ``N(mean, std^2 I)`` (``mean`` [B, ...], ``std`` [B]): draws ``x'`` with
    ``generator`` unless ``prev_sample`` (a stored transition to re-score) is given, and returns it
    with its log-density. Every step function of this module (and DDIM's) ends here."""
    if prev_sample is None:
        # drawn on the generator's device (the trainer's generator is a CPU one), then moved:
        # the same noise on a CPU and a GPU, and no device mismatch error on CUDA
        dev = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=dev).to(mean.device)
        prev_sample = mean + expand_batch(std, mean) * noise
    return StepOutput(prev_sample, mean, std, gaussian_log_prob(prev_sample, mean, std, reduce))


def ode_step(v, x, sigma, sigma_next, eta=0.0, sigma_1=None, prev_sample=None, generator=None, reduce="mean"):
    """Euler step ``x' = x + dt * v``; deterministic (std 0, log-prob 0)."""
    v, x = v.float(), x.float()
    dt = expand_batch(sigma_next, x) - expand_batch(sigma, x)
    mean = x + dt * v
    std = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return StepOutput(mean if prev_sample is None else prev_sample.float(), mean, std, torch.zeros_like(std))


def flow_sde_std(sigma: torch.Tensor, sigma_1: float, eta: float) -> torch.Tensor:
    """Flow-GRPO's diffusion coefficient ``eta sqrt(s / (1 - s))`` ([B]), with ``s = 1`` in the
    denominator replaced by the schedule's second sigma ``sigma_1`` so it stays finite."""
    denom = 1 - torch.where(sigma >= 1, torch.full_like(sigma, sigma_1), sigma)
    return eta * torch.sqrt(sigma / denom)


def flow_sde_step(v, x, sigma, sigma_next, eta, sigma_1, prev_sample=None, generator=None, reduce="mean"):
    """Flow-GRPO's marginal-preserving SDE step (arXiv 2505.05470, eq. 9-10)."""
    v, x = v.float(), x.float()
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    sigma_next = torch.as_tensor(sigma_next, dtype=x.dtype, device=x.device).expand(x.shape[0])
    if sigma_1 is None:
        raise ValueError("flow_sde needs sigma_1, the schedule's second sigma (used at sigma = 1)")
    std_t = flow_sde_std(sigma, sigma_1, eta)  # [B]
    dt = sigma_next - sigma  # [B], negative
    s_, dt_, std_ = expand_batch(sigma, x), expand_batch(dt, x), expand_batch(std_t, x)
    mean = x * (1 + std_**2 * dt_ / (2 * s_)) + v * (1 + std_**2 * (1 - s_) / (2 * s_)) * dt_
    return gaussian_step(
        mean, std_t * torch.sqrt(-dt), None if prev_sample is None else prev_sample.float(), generator, reduce
    )


CPS_LOG_PROBS = ("flow_grpo", "gaussian")  # cps_step's log_prob choices
DEFAULT_CPS_LOG_PROB = "flow_grpo"  # Flow-GRPO's; PolicyConfig.cps_log_prob has the same default


def cps_step(
    v,
    x,
    sigma,
    sigma_next,
    eta,
    sigma_1=None,
    prev_sample=None,
    generator=None,
    reduce="mean",
    log_prob=DEFAULT_CPS_LOG_PROB,
):
    """Coefficient-preserving step (arXiv 2509.05952): noise energy is preserved exactly.

    ``log_prob="gaussian"``: the exact log-density. ``"flow_grpo"``: Flow-GRPO's CPS surrogate
    ``-(x' - mean)^2`` (reduced like the density), which drops the ``1 / (2 std^2)`` factor. The
    exact density weights each step's log-ratio by ``1 / std^2 ~ 1 / sigma_next^2``, so its
    gradient is dominated by the last, low-noise steps; the surrogate weights steps evenly."""
    v, x = v.float(), x.float()
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    sigma_next = torch.as_tensor(sigma_next, dtype=x.dtype, device=x.device).expand(x.shape[0])
    std = sigma_next * math.sin(eta * math.pi / 2)  # [B]
    s_, sn_ = expand_batch(sigma, x), expand_batch(sigma_next, x)
    x0 = x - s_ * v
    eps = x + (1 - s_) * v
    mean = x0 * (1 - sn_) + eps * torch.sqrt((sn_**2 - expand_batch(std, x) ** 2).clamp_min(0))
    out = gaussian_step(mean, std, None if prev_sample is None else prev_sample.float(), generator, reduce)
    if log_prob == "flow_grpo":
        sq = (out.prev_sample - mean) ** 2
        lp = reduce_nonbatch(-sq, reduce)
        out.log_prob = torch.where(std > 0, lp, torch.zeros_like(lp))
    elif log_prob != "gaussian":
        raise ValueError(f"cps log_prob must be 'gaussian' or 'flow_grpo', not {log_prob!r}")
    return out


SAGE_SIGMA_MAX = 1 - 3e-3  # sage: the log term at min(sigma, this), finite at sigma = 1 (the authors' clamp)


def sage_variance(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> torch.Tensor:
    """The exact integral of Flow-GRPO's ``eta^2 u / (1 - u)`` over ``u`` in
    ``[sigma_next, sigma]``: ``eta^2 [ln((1 - sigma_next) / (1 - s~)) - (sigma - sigma_next)]``
    with ``s~ = min(sigma, 1 - 3e-3)``. [B]"""
    s_tilde = sigma.clamp(max=SAGE_SIGMA_MAX)
    return (eta**2 * (torch.log((1 - sigma_next) / (1 - s_tilde)) - (sigma - sigma_next))).clamp_min(0)


def sage_step(v, x, sigma, sigma_next, eta, sigma_1=None, prev_sample=None, generator=None, reduce="mean"):
    """SAGE-GRPO's manifold-aware step (arXiv 2603.21872). The noise variance is the exact
    integral of the reverse SDE's ``g^2 = eta^2 s / (1 - s)`` over the step, instead of
    Flow-GRPO's one-point estimate ``g^2(sigma) |dt|``; this is the logarithmic correction,
    and it matters most near ``sigma = 1``. The mean adds the matching score drift:
    ``x + dt v + Sigma / 2 * score``, with ``score = -(x - (1 - sigma) x0) / sigma^2`` and
    ``x0 = x - sigma v``. For small steps it agrees with ``flow_sde``."""
    v, x = v.float(), x.float()
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    sigma_next = torch.as_tensor(sigma_next, dtype=x.dtype, device=x.device).expand(x.shape[0])
    var = sage_variance(sigma, sigma_next, eta)  # [B]
    s_, dt_, var_ = expand_batch(sigma, x), expand_batch(sigma_next - sigma, x), expand_batch(var, x)
    x0 = x - s_ * v
    score = -(x - (1 - s_) * x0) / s_**2
    mean = x + dt_ * v + 0.5 * var_ * score
    return gaussian_step(
        mean, torch.sqrt(var), None if prev_sample is None else prev_sample.float(), generator, reduce
    )


def sage_gradient_scale(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> torch.Tensor:
    """SAGE-GRPO's gradient-norm equaliser per step ([T] for the steps' sigmas): the size of
    ``d log p / d v`` for a ``sage`` step is ``g = |dt - Sigma (1 - sigma) / (2 sigma)| / sqrt(Sigma)``
    (the mean moves by that factor per unit of velocity, and the log-density's slope in the
    mean is ``z / sqrt(Sigma)``). Scaling each step's loss by ``median_k(g_k) / g_t`` equalises
    them. Deterministic steps (``Sigma = 0``) get 0."""
    var = sage_variance(sigma, sigma_next, eta)
    dt = sigma_next - sigma
    g = (dt - 0.5 * var * (1 - sigma) / sigma).abs() / var.clamp_min(1e-30).sqrt()
    live = var > 0
    if not bool(live.any()):
        return torch.zeros_like(sigma)
    return torch.where(live, g[live].median() / g.clamp_min(1e-30), torch.zeros_like(sigma))


StepFn = Callable[..., StepOutput]

# The valid values of ``policy.sde``. Every function shares one signature:
# (v, x, sigma, sigma_next, eta, sigma_1, prev_sample=None, generator=None, reduce="mean").
STEPS: dict[str, StepFn] = {
    "ode": ode_step,
    "flow_sde": flow_sde_step,
    "cps": cps_step,
    "sage": sage_step,
}


def get_step(name: str, cps_log_prob: str = DEFAULT_CPS_LOG_PROB) -> StepFn:
    """The step function ``name``; for ``cps``, with the chosen log-prob (see ``cps_step``)."""
    if name not in STEPS:
        raise ValueError(f"unknown sde {name!r}; valid: {', '.join(STEPS)}")
    if name == "cps":
        if cps_log_prob not in CPS_LOG_PROBS:
            raise ValueError(f"unknown cps log-prob {cps_log_prob!r}; valid: {', '.join(CPS_LOG_PROBS)}")
        return functools.partial(cps_step, log_prob=cps_log_prob)
    return STEPS[name]
