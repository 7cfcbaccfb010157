"""CAPO, Curvature-Aware Policy Optimization (Melo, Abate, Gal, "Stabilizing Policy Gradients for
Sample-Efficient Reinforcement Learning in LLM Reasoning", arXiv 2510.00819 v2, ICLR 2026): objective
``capo``, a mask on the tokens of another objective's loss (``objective.capo.base``: ``grpo`` = CAPO,
``dr_grpo`` = Dr.CAPO).

Before each update CAPO predicts, per token, how far the update would move the objective and the
policy, with a second-order model of the **language-model head** ``W`` [V, H] alone (the paper's
eqs 7-9: gradient, Hessian and Fisher of the last layer), and leaves out of the loss every token
whose prediction falls outside a trust region. The base objective is otherwise unchanged.

Per token, with ``h`` [H] the LM head's input (the last hidden state; divided by the policy's
temperature, so that ``W h`` are the logits the log-prob reads), ``pi`` [k] the policy's
distribution over its top-``k`` tokens renormalised, ``e_a`` the sampled token's one-hot among them
(all zeros when it is not in the top-``k``), ``v = e_a - pi`` and ``A`` the (clamped) advantage:

* gradient rows ``g = A v (x) h`` [k, H] (``d (A log pi(a)) / d W`` on the top-``k`` rows);
* planned step direction ``G`` [k, H]: Adam's, ``m^ / (sqrt(v^) + eps)`` with
  ``m^ = (b1 m + (1 - b1) g) / (1 - b1^(t+1))``, ``v^ = (b2 v + (1 - b2) g^2) / (1 - b2^(t+1))``, from
  shadow moments ``m, v`` kept per vocabulary row (``optimizer_model: adam``; ``G = g`` before the
  first update, and always with ``optimizer_model: sgd``); ``b1, b2, eps`` are the run's optimizer's;
* ``u = G h`` [k] (the logits' change per unit learning rate);
* predicted objective change ``m_H = lr <g, G> + lr^2 / 2 * A ((v . u)^2 - u^T (diag(pi) - pi pi^T) u)``;
* predicted policy shift ``m_F = lr^2 / 2 * (v . u)^2`` (the sampled-action Fisher);
* kept iff ``m_F < fisher_tau`` and ``-hessian_tau < m_H < hessian_tau`` (``symmetric``; else
  ``0 <= m_H < hessian_tau``); a tau of 0 turns its test off. ``lr`` is the optimizer's current one.

After each optimizer step the shadow moments take one Adam moment step with, for every vocabulary row,
the mean of the gradient rows ``g`` of the kept tokens' top-``k`` entries that fall on it (over the
step's micro-batches and all processes), and the step count ``t`` grows by one; rows no kept token
touched stay as they were, and a skipped optimizer step moves nothing (the authors step once per loss
call, which is once per optimizer step in all their recipes). An optimizer step in which no token is
kept on any process is skipped, as one with nothing to train. The moments and ``t`` go into every
checkpoint (a resume is exact). The loss is the base objective's over the kept tokens, rescaled by
(its normaliser over the kept tokens) / (over the trained ones), so that splitting the batch into
micro-batches or chunks never changes the gradient (genrl's rule): with the base's
``seq-mean-token-mean`` that is the authors' loss (each sequence's mean over its kept tokens, averaged
over the sequences); with ``token-mean`` the masked tokens stay in the denominator. The base's own
metrics (``ratio/*``, ...) are over the kept tokens.

Where the numbers come from. The paper's body could not be read here; the formulas above are from the
authors' code (luckeciano/stable-pg-llm at 933fe01, ``src/open_r1/grpo_entropy_trainer.py``
(``capo_only`` mode) and ``src/open_r1/sparse_optim_models/sparse_adam_model.py``) and two paper notes
quoting eqs 7-10, which agree with it. Defaults are the authors' GRPO -> CAPO recipe
(``recipes/Qwen2.5-Math-7B/grpo/*fisher_mask_token_1e-4_hessian_mask_token_0.01*``): ``fisher_tau``
1e-4, ``hessian_tau`` 0.01, symmetric, Adam model, ``top_k`` 50 (transformers' generation default that
the code inherits); their Dr.CAPO recipes use ``fisher_tau`` 1e-3 and ``hessian_tau`` 5e-4 (with
``objective.capo.base=dr_grpo``, which needs ``advantages.std=none``). The paper's Table 4 of thresholds could
not be read. Where we differ from the code, on purpose: ``h`` is taken at the position whose logits
predict the token (the code takes the token's own position, one later), the temperature enters ``h``,
the advantage is the clamped one the loss uses, and the moments are float32 (the code: bf16).

Modalities: tokens only. A denoising step has no softmax head, and the paper defines no analogue:
``capo`` with a flow or diffusion policy is a config error, and so is LoRA (``policy.lora.rank`` > 0
leaves the head frozen, so there is no head update to model; the authors fine-tune in full). Memory:
the shadow moments are two [V, H] float32 tensors on the policy's device (a 7B model's head,
152k x 3584, needs 4.4 GB for them) plus a few [n, k, H] float32 tensors for the gradient rows, where the
tokens are taken ``n`` at a time so that one such tensor stays under ``HEAD_CHUNK_BYTES`` (256 MiB: 374
tokens of a 7B head at k = 50; the result equals the one-piece computation up to the float rounding of each
token's own sums, and the moments are accumulated in token order); the moments' statistics are all-reduced once
per optimizer step. Metrics: ``capo/kept`` (share of trained
tokens kept), ``capo/fisher_masked``, ``capo/hessian_masked`` (shares each test removes),
``capo/m_F_mean``, ``capo/m_H_mean``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from genrl.config.base import Section, option, unused_unless
from genrl.config.checks import at_least, require
from genrl.objectives.common import agg_normaliser, chunk_agg, clamp_advantages
from genrl.registry import OBJECTIVES


@dataclass
class CAPOConfig(Section):
    """Options of objective ``capo`` (``objective.capo.*``); defaults from the authors' GRPO -> CAPO recipe."""

    base: str = option(
        "grpo",
        "the objective whose loss CAPO masks: grpo (CAPO), dr_grpo (Dr.CAPO; advantages.std=none), or any other "
        "stateless policy-gradient objective",
    )
    fisher_tau: float = option(1e-4, "delta_F: keep a token only if its predicted policy shift m_F < this (0 = off)")
    hessian_tau: float = option(
        0.01, "delta_H: keep a token only if -delta_H < m_H < delta_H (symmetric=false: 0 <= m_H < delta_H; 0 = off)"
    )
    symmetric: bool = option(True, "Hessian test -tau < m_H < tau (true, every recipe) or 0 <= m_H < tau")
    optimizer_model: Literal["adam", "sgd"] = option(
        "adam", "the planned step: Adam's direction from shadow moments per vocabulary row, or the raw gradient"
    )
    top_k: int = option(50, "vocabulary rows modelled per token: its distribution's top-k (renormalised)")

    def validate(self) -> None:
        for key in ("fisher_tau", "hessian_tau"):
            value = getattr(self, key)
            require(value >= 0 and math.isfinite(value), key, value, "must be finite and >= 0 (0 = off)")
        at_least(self, 1, "top_k")
        unused_unless(self, self.hessian_tau > 0, "when hessian_tau > 0 (the Hessian test on)", "symmetric")
        require(self.base != "capo", "base", self.base, "must be another objective (grpo, dr_grpo, ...)")


def check_config(cfg) -> None:
    """A VLM policy (a softmax head), and a base objective that exists and can be masked."""
    from genrl.config import ConfigError

    if not hasattr(cfg.policy, "max_new_tokens"):
        raise ConfigError(
            "objective.name",
            "capo masks tokens with a model of the language-model head; a denoising policy has no softmax head "
            "(use it with a VLM policy)",
            "capo",
        )
    base = cfg.objective.capo.base
    try:
        meta = OBJECTIVES.meta(base)
    except ValueError as e:
        raise ConfigError("objective.capo.base", str(e), base) from None
    if meta.get("kind") == "preference" or meta.get("state") is not None:
        raise ConfigError("objective.capo.base", "must be a policy-gradient objective without state", base)
    if meta.get("check_config") is not None:
        try:
            meta["check_config"](cfg)
        except ConfigError as e:
            raise ConfigError("objective.capo.base", f"objective {base} refuses this config: {e}", base) from None
    if cfg.policy.lora.rank > 0:
        raise ConfigError(
            "policy.lora.rank",
            "objective capo models the update of the language-model head, which LoRA leaves frozen (its "
            "authors fine-tune in full): set policy.lora.rank=0",
            cfg.policy.lora.rank,
        )


def base_chunk_agg(config) -> str:
    """The aggregation of ``objective.capo.base`` (what CAPO's chunks are weighted by)."""
    return chunk_agg(OBJECTIVES.get(config.capo.base), config)


def lm_head_terms(
    hidden: torch.Tensor,
    probs: torch.Tensor,
    action: torch.Tensor,
    adv: torch.Tensor,
    lr: float,
    direction=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CAPO's per-token predictions for the LM head.

    ``hidden`` [B, T, H] (the head's input over the temperature), ``probs`` [B, T, k] (top-k,
    renormalised), ``action`` [B, T, k] (one-hot of the sampled token among them), ``adv`` [B],
    ``lr`` the learning rate; ``direction(g)`` maps the gradient rows to the planned step ``G``
    (default: ``G = g``). Returns ``(m_H, m_F, g)``: [B, T], [B, T] and the gradient rows [B, T, k, H]."""
    v = action - probs  # [B, T, k]
    a = adv.to(hidden.dtype)[:, None]  # [B, 1]
    g = a[..., None, None] * v[..., None] * hidden[:, :, None, :]  # [B, T, k, H]
    G = g if direction is None else direction(g)
    u = (G * hidden[:, :, None, :]).sum(-1)  # [B, T, k]
    dot = (v * u).sum(-1)  # [B, T]
    u_fisher_u = (probs * u * u).sum(-1) - (probs * u).sum(-1) ** 2  # u^T (diag(pi) - pi pi^T) u
    m_H = lr * (g * G).sum((-1, -2)) + 0.5 * lr**2 * a * (dot**2 - u_fisher_u)
    m_F = 0.5 * lr**2 * dot**2
    return m_H, m_F, g


class ShadowAdam:
    """CAPO's state: shadow Adam moments per vocabulary row of the LM head (``m``, ``v``: [V, H] float32),
    their step count ``t``, and the gradient rows of the kept tokens of the current optimizer step.

    Built once per run by the trainer (``OBJECTIVES.register(..., state=ShadowAdam.for_run)``) from its
    config, policy and optimizer. The trainer passes it to the objective as
    ``step_info["objective_state"]``, adds ``log_prob_kwargs()`` to the policy's re-scoring, asks
    ``skip_step(accelerator)`` before each optimizer step (no token kept on any process: no step, as
    when nothing is trained), calls ``after_optimizer_step(accelerator, stepped)`` after it and saves
    ``state_dict()`` in checkpoints. ``opts``: a ``CAPOConfig``; ``vocab``, ``width``: the head's shape
    [V, H]; ``optimizer``: the run's (its current ``lr``, Adam's ``betas`` and ``eps``); ``device``: where
    the moments live (the policy's). Raises ``ValueError`` for the Adam model with an optimizer that has
    no ``betas``."""

    @classmethod
    def for_run(cls, cfg, policy, optimizer) -> "ShadowAdam":
        return cls(cfg.objective.capo, *policy.head_shape(), optimizer, device=policy.device)

    def __init__(self, opts: CAPOConfig, vocab: int, width: int, optimizer, device="cpu"):
        self.opts = opts
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        if self.opts.optimizer_model == "adam" and "betas" not in group:
            raise ValueError("objective.capo.optimizer_model=adam models Adam, but the optimizer has no betas")
        self.betas, self.eps = tuple(group.get("betas", (0.9, 0.999))), group.get("eps", 1e-8)
        self.m = torch.zeros(vocab, width, device=device)
        self.v = torch.zeros(vocab, width, device=device)
        self.t = 0
        self._sums, self._counts = torch.zeros_like(self.m), torch.zeros(vocab, device=device)
        self._kept = torch.zeros((), device=device)

    def log_prob_kwargs(self) -> dict[str, Any]:
        return {"head_top_k": self.opts.top_k}

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def direction(self, ids: torch.Tensor):
        """``g -> G`` for the gradient rows [B, T, k, H] on vocabulary rows ``ids`` [B, T, k]; ``None``
        means ``G = g`` (the SGD model, and Adam's before its first step)."""
        if self.opts.optimizer_model == "sgd" or self.t == 0:
            return None
        (b1, b2), t = self.betas, self.t + 1
        m, v = self.m[ids], self.v[ids]  # [B, T, k, H]

        def adam(g: torch.Tensor) -> torch.Tensor:
            m_hat = (b1 * m + (1 - b1) * g) / (1 - b1**t)
            v_hat = (b2 * v + (1 - b2) * g * g) / (1 - b2**t)
            return m_hat / (v_hat.sqrt() + self.eps)

        return adam

    def accumulate(self, g: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> None:
        """Add the kept tokens' gradient rows (``g`` [B, T, k, H] on rows ``ids`` [B, T, k]; ``keep`` [B, T])."""
        sel = keep.bool()
        rows, grads = ids[sel].flatten(), g[sel].flatten(0, 1).detach().float()  # [n k], [n k, H]
        self._sums.index_add_(0, rows, grads)
        self._counts.index_add_(0, rows, torch.ones_like(rows, dtype=self._counts.dtype))
        self._kept += sel.sum()

    def skip_step(self, accelerator=None) -> bool:
        """True when no token of this optimizer step was kept on any process (a collective)."""
        kept = self._kept
        if accelerator is not None and accelerator.num_processes > 1:
            kept = accelerator.reduce(kept.clone(), reduction="sum")
        return float(kept) == 0

    def after_optimizer_step(self, accelerator=None, stepped: bool = True) -> None:
        """One moment step with each touched row's mean kept gradient over the optimizer step (all processes),
        as the optimizer's own moments take one; nothing when the optimizer did not step."""
        sums, counts = self._sums, self._counts
        if stepped and accelerator is not None and accelerator.num_processes > 1:
            sums = accelerator.reduce(sums.clone(), reduction="sum")
            counts = accelerator.reduce(counts.clone(), reduction="sum")
        self._sums, self._counts, self._kept = (torch.zeros_like(x) for x in (self._sums, self._counts, self._kept))
        touched = counts > 0
        if not stepped or not touched.any():
            return
        g = sums[touched] / counts[touched, None]
        (b1, b2) = self.betas
        self.m[touched] = b1 * self.m[touched] + (1 - b1) * g
        self.v[touched] = b2 * self.v[touched] + (1 - b2) * g * g
        self.t += 1

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m.cpu().clone(), "v": self.v.cpu().clone(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` when the saved moments are of another head shape."""
        if tuple(state["m"].shape) != tuple(self.m.shape):
            raise ValueError(
                f"CAPO's shadow moments have shape {tuple(state['m'].shape)}, this model's head "
                f"{tuple(self.m.shape)}: resume with the model it was written with"
            )
        device = self.m.device
        self.m, self.v = state["m"].float().to(device).clone(), state["v"].float().to(device).clone()
        self.t = int(state["t"])


def keep_mask(m_H: torch.Tensor, m_F: torch.Tensor, opts) -> tuple[torch.Tensor, torch.Tensor]:
    """(Fisher test, Hessian test) as float masks [B, T]: 1 = the token passes (a tau of 0 passes all)."""
    fisher = (m_F < opts.fisher_tau) if opts.fisher_tau > 0 else torch.ones_like(m_F, dtype=torch.bool)
    if opts.hessian_tau <= 0:
        hessian = torch.ones_like(m_H, dtype=torch.bool)
    elif opts.symmetric:
        hessian = (m_H < opts.hessian_tau) & (m_H > -opts.hessian_tau)
    else:
        hessian = (m_H < opts.hessian_tau) & (m_H >= 0)
    return fisher.float(), hessian.float()


HEAD_CHUNK_BYTES = 256 * 2**20  # bound of one [n, k, H] float32 tensor of gradient rows (module docstring)


@torch.no_grad()
def masked_head_terms(head: dict, adv: torch.Tensor, mask: torch.Tensor, state: "ShadowAdam", opts):
    """:func:`lm_head_terms` and :func:`keep_mask` over the tokens ``n`` at a time (``HEAD_CHUNK_BYTES``),
    accumulating the kept gradient rows into ``state`` in token order (the one-piece computation's, up to
    the float rounding of each token's own sums). ``head`` as the policy returns it ([B, T, ...]);
    ``adv`` [B]; ``mask`` [B, T]. Returns ``(m_H, m_F, fisher, hessian)``, each [B, T]."""
    hidden, probs, ids, action = (head[key].flatten(0, 1) for key in ("hidden", "probs", "ids", "action"))
    B, T = mask.shape
    if B * T == 0:
        return tuple(torch.zeros(B, T, device=mask.device) for _ in range(4))
    per_token = adv[:, None].expand(B, T).flatten()  # [B T]
    flat_mask = mask.flatten()  # [B T]
    top_k, width = ids.shape[-1], hidden.shape[-1]
    n = max(1, HEAD_CHUNK_BYTES // (4 * top_k * width))
    out = []
    for s in range(0, B * T, n):
        c = slice(s, s + n)  # the chunk as [n, 1, ...]: one token per row
        m_H, m_F, g = lm_head_terms(
            hidden[c, None], probs[c, None], action[c, None], per_token[c], state.lr(), state.direction(ids[c, None])
        )
        fisher, hessian = keep_mask(m_H, m_F, opts)
        state.accumulate(g, ids[c, None], flat_mask[c, None] * fisher * hessian)
        out.append(torch.cat([m_H.float(), m_F.float(), fisher, hessian], dim=1))  # [n, 4]
    return tuple(x.view(B, T) for x in torch.cat(out).unbind(1))


def base_objective(config) -> tuple[str]:
    """``objective.capo.base``: capo reads that objective's own options too (``reads_options_of``)."""
    return (config.capo.base,)


@OBJECTIVES.register(
    "capo",
    chunk_agg=base_chunk_agg,
    check_config=check_config,
    state=ShadowAdam.for_run,
    options=("capo",),
    reads_options_of=base_objective,
    ignores=("clip_range", "clip_range_high"),  # its base's loss reads them, if any
)
def capo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]; ``step_info["head"]`` from the policy
    (``hidden`` [B, T, H], ``probs``, ``ids``, ``action`` [B, T, k]) and ``step_info["objective_state"]``
    (:class:`ShadowAdam`). Returns (loss, metrics): the base objective's on the kept tokens."""
    state, head = step_info.get("objective_state"), step_info.get("head")
    if state is None or head is None:
        raise ValueError("objective capo needs the trainer's ShadowAdam state and the policy's head outputs")
    opts = config.capo
    with torch.no_grad():
        adv = clamp_advantages(advantages, config)[:, 0].float()  # [B]
        m_H, m_F, fisher, hessian = masked_head_terms(head, adv, mask, state, opts)  # [B, T] each
        keep = mask * fisher * hessian  # [B, T]
        # the base aggregates over the kept tokens; the trainer weighs this chunk by its share of the
        # trained ones: rescale, so the optimizer step's loss is the same however the batch is split
        agg = base_chunk_agg(config)
        kept_norm = agg_normaliser(keep, agg, max_len_norm=config.max_len_norm)
        all_norm = agg_normaliser(mask, agg, max_len_norm=config.max_len_norm)
        scale = kept_norm / all_norm if all_norm > 0 else torch.zeros_like(all_norm)
    loss, metrics = OBJECTIVES.get(opts.base)(log_probs_new, log_probs_old, advantages, keep, step_info, config)
    loss = loss * scale
    n = mask.sum().clamp_min(1)
    metrics.update(
        {
            "capo/kept": (keep.sum() / n).item(),
            "capo/fisher_masked": (mask * (1 - fisher)).sum().item() / n.item(),
            "capo/hessian_masked": (mask * (1 - hessian)).sum().item() / n.item(),
            "capo/m_F_mean": ((m_F * mask).sum() / n).item(),
            "capo/m_H_mean": ((m_H * mask).sum() / n).item(),
        }
    )
    return loss, metrics
