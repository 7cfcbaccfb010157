"""A flow-matching text-to-image sampler as a stochastic policy.

Wraps a diffusers flow transformer (``SD3Transformer2DModel``) and its
``FlowMatchEulerDiscreteScheduler`` sigmas. A rollout integrates from noise with the
``policy.sde`` step (``genrl.sde``) on the stochastic steps and Euler ODE steps elsewhere,
and records every stochastic transition ``x_t -> x_{t+1}`` with its log-prob; the update
re-scores those stored transitions with the current weights in batched forwards (all
trained steps of a sample stacked along the batch dimension).

SDE window (Flow-GRPO-Fast, MixGRPO arXiv 2507.21802): with ``sde_window_size = K > 0``
only K consecutive steps are stochastic and trained; the window start is drawn each
iteration from ``sde_window_range``. Steps whose Gaussian has zero std (``cps``'s final
step) are deterministic and never trained.
"""

from __future__ import annotations

import copy
import os
from typing import Optional

import torch

from genrl import sde as sde_lib
from genrl.policies.base import Policy
from genrl.registry import POLICIES, TASKS
from genrl.trajectory import Trajectory

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_COMPONENTS = ("transformer", "scheduler", "text_encoder", "tokenizer")


def resolve_model_path(model: str) -> str:
    """``task:<name>`` -> that embedded task's pretrained folder (built on first use);
    otherwise a local diffusers folder, checked for the components this policy loads."""
    if model.startswith("task:"):
        return TASKS.get(model[len("task:"):])().prepare()
    if not os.path.isdir(model):
        raise ValueError(
            f"policy.model={model!r} is not a local folder. This policy loads a diffusers folder "
            f"with subfolders {', '.join(_COMPONENTS)} (download hub models first, e.g. with "
            "`huggingface-cli download`), or an embedded task model such as 'task:digits'."
        )
    missing = [c for c in _COMPONENTS if not os.path.isdir(os.path.join(model, c))]
    if missing:
        raise ValueError(f"policy.model={model!r} lacks subfolder(s) {', '.join(missing)}; expected {', '.join(_COMPONENTS)}")
    return model


def encode_clip_prompts(tokenizer, text_encoder, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (last hidden state ``[B, L, D]``, projected eos embedding ``[B, P]``) of a
    ``CLIPTextModelWithProjection``, padded to ``tokenizer.model_max_length`` with no
    attention mask (SD3's CLIP path; the causal mask keeps real tokens independent of padding).
    What the digits base model is pretrained on and what the policy conditions on."""
    device = next(text_encoder.parameters()).device
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)  # [B, L]
    out = text_encoder(input_ids=ids)
    return out.last_hidden_state, out.text_embeds


def load_components(path: str) -> dict:
    """The real diffusers / transformers classes, loaded with their own ``from_pretrained``."""
    from diffusers import AutoModel, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    return {
        "transformer": AutoModel.from_pretrained(path, subfolder="transformer"),
        "scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler"),
        "text_encoder": CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder"),
        "tokenizer": AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
    }


@POLICIES.register("flow")
class FlowPolicy(Policy):
    """Stochastic policy over a flow transformer. ``cfg`` is a ``PolicyConfig``."""

    per_step_metrics = True
    _last_v = None  # (velocity [B * t, ...] of the last gradient forward, its step indices), for output_grad_norms

    def __init__(self, cfg, transformer, scheduler, text_encoder, tokenizer, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.step_fn = sde_lib.get_step(cfg.sde)
        dtype = _DTYPES[cfg.dtype]
        if transformer.dtype != dtype:  # frozen base weights in the run dtype (bf16 on GPUs)
            transformer = transformer.to(dtype=dtype)
            text_encoder = text_encoder.to(dtype=dtype)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        transformer = transformer.to(self.device)
        self.ref_model = None
        if cfg.lora.rank > 0:
            from peft import LoraConfig

            transformer.requires_grad_(False)
            transformer.add_adapter(LoraConfig(
                r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules), init_lora_weights="gaussian",
            ))
            for p in transformer.parameters():  # trained weights stay fp32 under mixed precision
                if p.requires_grad:
                    p.data = p.data.float()
        else:
            # Full fine-tuning: the reference is a frozen copy of the starting weights.
            self.ref_model = copy.deepcopy(transformer).eval().requires_grad_(False)
        self.transformer = transformer  # unwrapped module (adapters, saving)
        self.model = transformer  # what gradient forwards go through; the trainer may wrap it (DDP)
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.latent_shape = (transformer.config.in_channels, transformer.config.sample_size, transformer.config.sample_size)

    @classmethod
    def from_pretrained(cls, cfg, device="cpu") -> "FlowPolicy":
        return cls(cfg, device=device, **load_components(resolve_model_path(cfg.model)))

    # ----------------------------------------------------------------- parameters
    @property
    def module(self) -> torch.nn.Module:
        """The trained network, unwrapped (every policy exposes this; the trainer wraps it)."""
        return self.transformer

    def _set_adapters(self, enabled: bool) -> None:
        if enabled:
            self.transformer.enable_adapters()
        else:
            self.transformer.disable_adapters()

    # ----------------------------------------------------------------- conditioning
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings ``[B, L, D]`` and pooled ``[B, P]``, cached once per prompt."""
        new = sorted({p for p in prompts if p not in self._prompt_cache})
        if new:
            hidden, pooled = encode_clip_prompts(self.tokenizer, self.text_encoder, new)
            for i, p in enumerate(new):
                self._prompt_cache[p] = (hidden[i], pooled[i])
        embeds = torch.stack([self._prompt_cache[p][0] for p in prompts])
        pooled = torch.stack([self._prompt_cache[p][1] for p in prompts])
        return embeds, pooled

    def _conditioning(self, prompts: list[str], guidance_scale: float) -> dict[str, torch.Tensor]:
        embeds, pooled = self.encode_prompts(prompts)
        cond = {"embeds": embeds, "pooled": pooled}
        if guidance_scale > 1.0:
            neg, neg_pooled = self.encode_prompts([""] * len(prompts))
            cond.update(neg_embeds=neg, neg_pooled=neg_pooled)
        return cond

    def velocity(self, x, sigma, cond, guidance_scale, model=None) -> torch.Tensor:
        """Predicted velocity ``[B, C, H, W]`` at per-sample noise levels ``sigma [B]``.

        ``model`` defaults to ``self.model`` (the DDP-wrapped module, for gradient steps).
        No-grad sampling passes the unwrapped module: a DDP forward is a collective, and
        evaluation runs on the main process alone."""
        model = self.model if model is None else model
        dtype = self.text_encoder.dtype
        t = sigma * self.scheduler.config.num_train_timesteps
        if guidance_scale > 1.0:
            v_u, v_c = model(
                hidden_states=torch.cat([x, x]).to(dtype),
                encoder_hidden_states=torch.cat([cond["neg_embeds"], cond["embeds"]]),
                pooled_projections=torch.cat([cond["neg_pooled"], cond["pooled"]]),
                timestep=torch.cat([t, t]), return_dict=False,
            )[0].float().chunk(2)
            return v_u + guidance_scale * (v_c - v_u)
        return model(hidden_states=x.to(dtype), encoder_hidden_states=cond["embeds"],
                     pooled_projections=cond["pooled"], timestep=t, return_dict=False)[0].float()

    # ----------------------------------------------------------------- schedule
    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's ``num_steps + 1`` sigmas, from 1 down to 0. [N + 1]"""
        self.scheduler.set_timesteps(num_steps, device="cpu")
        return self.scheduler.sigmas.float().clone()

    def window(self, generator: torch.Generator) -> list[int]:
        """Indices of the stochastic steps of this iteration (drawn with ``generator``)."""
        n, k = self.cfg.num_steps, self.cfg.sde_window_size
        if k == 0:
            return list(range(n))
        lo, hi = self.cfg.sde_window_range or (0, n)
        start = int(torch.randint(lo, hi - k + 1, (1,), generator=generator))
        return list(range(start, start + k))

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, prompts, metadata, group_ids, generator, window) -> Trajectory:
        """Sample ``len(prompts)`` images; record the stochastic steps in ``window``."""
        cfg, B = self.cfg, len(prompts)
        sigmas = self.sigmas(cfg.num_steps)
        cond = self._conditioning(prompts, cfg.guidance_scale)
        x = torch.randn((B, *self.latent_shape), generator=generator).to(self.device)  # [B, C, H, W]
        xs, xns, means, lps, stds, trained = [], [], [], [], [], []
        for i in range(cfg.num_steps):
            s, sn = sigmas[i].expand(B).to(self.device), sigmas[i + 1].expand(B).to(self.device)
            v = self.velocity(x, s, cond, cfg.guidance_scale, model=self.transformer)
            fn = self.step_fn if i in window else sde_lib.ode_step
            out = fn(v, x, s, sn, cfg.eta, sigmas[1].item(), generator=generator)
            if i in window and bool((out.std > 0).all()):
                trained.append(i)
                xs.append(x)
                xns.append(out.prev_sample)
                means.append(out.mean)
                lps.append(out.log_prob)
                stds.append(out.std)
            x = out.prev_sample
        if not trained:
            raise ValueError(f"no stochastic step with nonzero noise in window {window} for sde={cfg.sde!r}")
        steps = torch.tensor(trained)
        return Trajectory(
            log_probs_old=torch.stack(lps, 1),  # [B, T]
            mask=torch.ones(B, len(trained), device=self.device),
            group_ids=torch.as_tensor(group_ids, device=self.device),
            step_info={
                "step_index": steps.expand(B, -1).to(self.device),  # [B, T]
                "sigma": sigmas[steps].expand(B, -1).to(self.device),
                "sigma_next": sigmas[steps + 1].expand(B, -1).to(self.device),
                "std": torch.stack(stds, 1),
                **({"grad_scale": sde_lib.sage_gradient_scale(sigmas[steps], sigmas[steps + 1], cfg.eta)
                    .expand(B, -1).to(self.device)} if cfg.sde == "sage" else {}),  # SAGE's equaliser
            },
            # [B, T, C, H, W]; the rollout's step means let an objective compare them with new ones (grpo_guard)
            data={"latents": torch.stack(xs, 1), "next_latents": torch.stack(xns, 1), "means": torch.stack(means, 1),
                  **cond},
            samples=self.decode(x),
            prompts=list(prompts),
            metadata=list(metadata),
        )

    def log_prob(self, traj: Trajectory, steps: slice, with_ref: bool = False) -> tuple[torch.Tensor, dict]:
        """Re-score the stored transitions ``traj[:, steps]`` with the current weights.

        All selected steps of all samples go through one batched forward. Returns
        log-probs ``[B, t]`` and per-step info, each ``[B, t]``: ``std``; ``mean_sq_diff``, the
        squared distance of the new step mean from the rollout's, averaged over dimensions (with
        gradient); ``dt`` (``sigma - sigma_next``) and ``mean_dt`` (``1 / num_steps``, the
        schedule's average); ``kl`` to the reference if asked.
        """
        cfg = self.cfg
        x = traj.data["latents"][:, steps]  # [B, t, C, H, W]
        B, t = x.shape[:2]
        flat = lambda a: a.flatten(0, 1)  # noqa: E731  [B, t, ...] -> [B * t, ...]
        rep = lambda a: a.repeat_interleave(t, dim=0)  # noqa: E731  [B, ...] -> [B * t, ...]
        cond = {k: rep(traj.data[k]) for k in ("embeds", "pooled", "neg_embeds", "neg_pooled") if k in traj.data}
        s, sn = flat(traj.step_info["sigma"][:, steps]), flat(traj.step_info["sigma_next"][:, steps])
        x, xn = flat(x), flat(traj.data["next_latents"][:, steps])
        sigma_1 = self.sigmas(cfg.num_steps)[1].item()
        v = self.velocity(x, s, cond, cfg.guidance_scale)  # [B * t, C, H, W]
        if v.requires_grad:  # keep d loss / d v per step for the diagnostics (output_grad_norms)
            v.retain_grad()
            self._last_v = (v, traj.step_info["step_index"][:, steps].reshape(-1))
        out = self.step_fn(v, x, s, sn, cfg.eta, sigma_1, prev_sample=xn)
        old_mean = flat(traj.data["means"][:, steps])
        info = {"std": out.std.view(B, t),
                "mean_sq_diff": sde_lib.reduce_nonbatch((out.mean - old_mean) ** 2).view(B, t),
                "dt": (s - sn).view(B, t), "mean_dt": torch.full((B, t), 1.0 / cfg.num_steps, device=x.device)}
        if with_ref:
            with torch.no_grad(), self.reference() as ref:
                v_ref = self.velocity(x, s, cond, cfg.guidance_scale, model=ref)
            ref_out = self.step_fn(v_ref, x, s, sn, cfg.eta, sigma_1, prev_sample=xn)
            info["kl"] = sde_lib.gaussian_kl(out.mean, ref_out.mean, out.std).view(B, t)
        return out.log_prob.view(B, t), info

    def output_grad_norms(self) -> dict[int, float]:
        """``{step: mean over samples of ||d loss / d v||}`` for the last ``log_prob`` forward."""
        if self._last_v is None or self._last_v[0].grad is None:
            return {}
        v, steps = self._last_v
        self._last_v = None
        norms = v.grad.flatten(1).norm(dim=1)  # [B * t]
        return {int(k): norms[steps == k].mean().item() for k in torch.unique(steps).tolist()}

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], num_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Deterministic ODE samples for evaluation: sample ``i`` starts from noise seeded by
        ``seeds[i]``, so base and trained models see identical noise. Images ``[B, C, H, W]``."""
        num_steps = num_steps or self.cfg.num_steps
        sigmas = self.sigmas(num_steps)
        cond = self._conditioning(prompts, guidance_scale)
        x = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        x = x.to(self.device)
        for i in range(num_steps):
            s, sn = sigmas[i].expand(len(prompts)).to(self.device), sigmas[i + 1].expand(len(prompts)).to(self.device)
            v = self.velocity(x, s, cond, guidance_scale, model=self.transformer)
            x = sde_lib.ode_step(v, x, s, sn).prev_sample
        return self.decode(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixel-space models (no VAE): ``[-1, 1]`` latents -> images in ``[0, 1]``."""
        return ((latents.float() + 1) / 2).clamp(0, 1)
