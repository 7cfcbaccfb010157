"""Wan2.1 / Wan2.2 text-to-video (``WanPipeline``): a 3-D DiT over a causal video VAE latent,
one UMT5 text encoder. Conventions from the diffusers pipeline
(``diffusers/pipelines/wan/pipeline_wan.py``, Wan, arXiv 2503.20314):

* noise ``[C, (F - 1) // t + 1, H // s, W // s]`` (``prepare_latents``; ``t``, ``s`` the VAE's
  temporal and spatial factors), defaults ``480 x 832``, 81 frames;
* prompts: ``encode_prompt`` (UMT5, zero-padded to ``max_sequence_length``, default 512);
* the transformer takes ``t = sigma * num_train_timesteps`` (Wan2.2 TI2V's ``expand_timesteps``:
  ``t`` repeated for every 2x2 latent patch, ``[B, F' * H'/2 * W'/2]``);
* CFG ``uncond + g * (cond - uncond)`` with ``negative_prompt=""``: the pipeline runs two
  forwards, the base class batches them (same values);
* decoding: ``z / (1 / latents_std) + latents_mean``, ``AutoencoderKLWan.decode``, ``[-1, 1] -> [0, 1]``,
  returned as ``[B, F, C, H, W]`` (the pipeline's ``output_type="pt"`` layout).

Scheduler: the stock checkpoints ship ``UniPCMultistepScheduler`` (``flow_shift``); genrl's sampler
is the Euler step, so the family then samples with a ``FlowMatchEulerDiscreteScheduler`` of the same
shift (``flow_shift``, else ``shift``, of the shipped config): sigmas ``shift(linspace(1, sigma_min, N))``
and float timesteps ``sigma * 1000``. UniPC's own flow sigmas are ``shift(linspace(1, 1/1000, N + 1)[:-1])``
with integer timesteps (Flow-GRPO's ``train_wan2_1.py`` steps its SDE on those); the two agree only
roughly at few steps. The pipeline's ``scheduler`` is replaced by that Euler scheduler (as DDPO replaces
SD's with DDIM), so that the pipeline itself, and ``genrl export``'s folder, sample as genrl does. A
pipeline loaded with a ``FlowMatchEulerDiscreteScheduler`` is used as is.

Wan2.2 A14B (``transformer_2`` + ``boundary_ratio``): steps with ``t >= boundary_ratio * 1000`` run
``transformer`` (high-noise expert), the rest the frozen ``transformer_2``, with the same guidance
scale (the pipeline's default ``guidance_scale_2``). genrl trains only ``transformer``: log-probs of
low-noise steps carry no gradient, so keep the SDE window (``sde_window_range``) on the high-noise
steps, or at least never a ``timestep_chunk`` made only of low-noise steps.
"""

from __future__ import annotations

import inspect

import torch

from genrl.families.base import Family
from genrl.registry import FAMILIES


@FAMILIES.register("wan")
class WanFamily(Family):
    pipeline_classes = ("WanPipeline",)
    # Flow-GRPO's Wan2.1 LoRA targets (scripts/train_wan2_1.py), suffix-matched. In T2V they hit the self- and
    # cross-attention q/k/v/out (attn1, attn2); add_k/v_proj exist only in I2V, add_q_proj/to_add_out nowhere in Wan
    lora_targets = ("add_k_proj", "add_q_proj", "add_v_proj", "to_add_out", "to_k", "to_out.0", "to_q", "to_v")
    video = True
    options = ("height", "width", "num_frames", "max_sequence_length")
    default_max_sequence_length = 512  # WanPipeline's; None: the tokenizer's model_max_length

    def __init__(self, pipe, cfg):
        super().__init__(pipe, cfg)
        from diffusers import FlowMatchEulerDiscreteScheduler

        if pipe.transformer is None:
            raise ValueError("this WanPipeline has no `transformer` (high-noise expert), the network genrl trains")
        ratio = pipe.config.get("boundary_ratio")
        if ratio is not None and pipe.transformer_2 is None:
            raise ValueError(f"WanPipeline has boundary_ratio={ratio} but no transformer_2 (low-noise expert)")
        sched = pipe.scheduler
        if not isinstance(sched, FlowMatchEulerDiscreteScheduler):
            shift = sched.config.get("flow_shift", sched.config.get("shift"))
            if shift is None:
                raise ValueError(
                    f"no flow_shift/shift in the {type(sched).__name__} config; "
                    "load the pipeline with a FlowMatchEulerDiscreteScheduler"
                )
            sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=sched.config.num_train_timesteps, shift=shift)
            pipe.scheduler = sched  # as DDPO swaps in DDIM: the pipeline (and an export of it) samples as genrl
            self.sampling_components = ("scheduler",)
        self._scheduler = sched
        self._boundary = None if ratio is None else ratio * sched.config.num_train_timesteps  # in timestep units
        # 0: the pipeline's own default (its __call__'s: WanPipeline 480 x 832, 81 frames; the moving-digits
        # pipeline 16 x 16, 9 frames), as policy.height / width / num_frames document
        call = inspect.signature(type(pipe).__call__).parameters
        default = {
            k: call[k].default if k in call else v for k, v in (("height", 480), ("width", 832), ("num_frames", 81))
        }
        self._size = (
            cfg.height or default["height"],
            cfg.width or default["width"],
            cfg.num_frames or default["num_frames"],
        )
        h, w, n = self._size
        m = pipe.vae_scale_factor_spatial * self.denoiser.config.patch_size[1]
        if any(v % 16 or v % m for v in (h, w)):
            raise ValueError(
                f"policy.height/width={h}/{w}: this {type(pipe).__name__} takes multiples of {max(16, m)} pixels"
            )
        self.check_num_frames(n, default["num_frames"])
        self._check_positions()

    def _check_positions(self) -> None:
        """``ValueError`` naming ``policy.num_frames`` / ``height`` / ``width`` when the latent has more patches
        along that axis than the transformer's rotary embedding holds (``rope_max_seq_len``: 1024 in Wan2.x,
        32 in the embedded moving-digits model, where 40 frames or 144 pixels failed inside diffusers' rope
        with a traceback at the first evaluation)."""
        most = self.denoiser.config.get("rope_max_seq_len")
        if not most:
            return
        s, t = self.pipe.vae_scale_factor_spatial, self.pipe.vae_scale_factor_temporal
        _, frames, h, w = self.noise_shape  # latent
        p_t, p_h, p_w = self.denoiser.config.patch_size
        name = type(self.pipe).__name__
        for key, value, patches, limit in (
            ("num_frames", self._size[2], frames // p_t, ((most + 1) * p_t - 2) * t + 1),
            ("height", self._size[0], h // p_h, most * p_h * s),
            ("width", self._size[1], w // p_w, most * p_w * s),
        ):
            if patches > most:
                value = getattr(self.cfg, key) or f"0 (the pipeline's default, {value})"
                raise ValueError(
                    f"policy.{key}={value}: this {name}'s transformer places at most {most} patches along it "
                    f"(rope_max_seq_len): at most {limit}"
                )

    @property
    def scheduler(self):
        """The Euler flow-matching scheduler the family samples with (see the module docstring)."""
        return self._scheduler

    def frozen_modules(self):
        """Wan2.2's low-noise expert ``transformer_2``: placed on the device in the run dtype and
        frozen by the policy; never trained."""
        t2 = self.pipe.transformer_2 if self._boundary is not None else None
        return [t2] if t2 is not None else []

    def encode(self, prompts):
        embeds, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=self.cfg.max_sequence_length or self.default_max_sequence_length,
            device=self.pipe.text_encoder.device,
        )
        return {"embeds": embeds}  # [B, L, 4096] at full size, zero past each prompt's tokens

    @property
    def noise_shape(self):
        h, w, n = self._size
        s, t = self.pipe.vae_scale_factor_spatial, self.pipe.vae_scale_factor_temporal
        # the latent's channels are the transformer's output's: in_channels can add conditioning channels
        # (Wan I2V's mask and image latents, the moving-digits frame index)
        return (self.denoiser.config.out_channels, (n - 1) // t + 1, h // s, w // s)  # [C, F', H', W']

    def forward(self, model, x, sigma, cond):
        """Velocity ``[B, C, F', H', W']``; rows below Wan2.2's boundary go to ``transformer_2``."""
        t, e = self.timestep(sigma), cond["embeds"]  # [B], [B, L, D]
        if self._boundary is None:
            return self._run(model, x, t, e)
        low = t < self._boundary  # [B]
        if not low.any():
            return self._run(model, x, t, e)
        if low.all():
            return self._run(self.pipe.transformer_2, x, t, e)
        v = x.new_empty(x.shape, dtype=torch.float32)
        v[~low] = self._run(model, x[~low], t[~low], e[~low])
        v[low] = self._run(self.pipe.transformer_2, x[low], t[low], e[low])
        return v

    def _run(self, net, x, t, e):
        dtype = self.dtype
        if self.pipe.config.get("expand_timesteps", False):  # Wan2.2 TI2V: one timestep per 2x2 patch
            f, h, w = x.shape[2:]
            t = t[:, None].expand(-1, f * ((h + 1) // 2) * ((w + 1) // 2))  # [B, seq]
        return net(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=e.to(dtype), return_dict=False)[
            0
        ].float()

    def encode_images(self, samples):
        """Videos ``[B, F, 3, H, W]`` -> ``(z - latents_mean) / latents_std`` ``[B, C, F', H', W']``."""
        c = self.pipe.vae.config
        z = self.vae_mode(samples.permute(0, 2, 1, 3, 4) * 2 - 1)  # [B, C, F', H', W']
        mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1).to(z)
        return (z - mean) / torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1).to(z)

    def decode(self, x):
        vae, c = self.pipe.vae, self.pipe.vae.config
        z = x.to(vae.dtype)  # [B, C, F', H', W']
        mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1).to(z.device, z.dtype)
        video = vae.decode(z / inv_std + mean, return_dict=False)[0]  # [B, 3, F, H, W] in [-1, 1]
        return (video.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [B, F, 3, H, W]
