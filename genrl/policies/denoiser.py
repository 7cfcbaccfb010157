"""Setting up a diffusers denoiser (transformer or UNet) for RL, shared by the flow and the
diffusion policies: frozen weights in the run dtype, the attention kernel, gradient
checkpointing, and LoRA adapters trained in fp32 (or a frozen reference copy for full
fine-tuning); and the SDE window both policies draw each iteration."""

from __future__ import annotations

import copy
from typing import Optional

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def set_attention_backend(module: torch.nn.Module, backend: str) -> None:
    """``sdpa`` (PyTorch's default kernels) or ``xformers`` memory-efficient attention, which
    needs CUDA and the ``xformers`` extra; either failure is a clear error before any work."""
    if backend == "sdpa":
        return
    if not torch.cuda.is_available():
        raise ValueError("policy.attention_backend=xformers needs a CUDA GPU; use 'sdpa' on this machine")
    try:
        import xformers  # noqa: F401
    except ImportError as e:
        raise ValueError("policy.attention_backend=xformers needs the xformers extra: pip install 'genrl[xformers]'") from e
    module.enable_xformers_memory_efficient_attention()


def prepare_denoiser(denoiser: torch.nn.Module, frozen: list[torch.nn.Module], cfg, default_targets,
                     device: torch.device) -> Optional[torch.nn.Module]:
    """Cast ``denoiser`` and the ``frozen`` modules (text encoders, VAE, ...) to ``cfg.dtype`` and
    ``device``, freeze the latter, apply ``cfg.attention_backend`` and ``gradient_checkpointing``,
    and add LoRA adapters (``cfg.lora``; targets default to ``default_targets``; B starts at zero,
    so the adapted model starts as the base). Returns the frozen reference copy for full
    fine-tuning (``lora.rank = 0``), else ``None`` (the reference is the model, adapters off)."""
    dtype = DTYPES[cfg.dtype]
    for m in [denoiser, *frozen]:
        if m.dtype != dtype:  # frozen base weights in the run dtype (bf16 on GPUs)
            m.to(dtype=dtype)
        m.to(device)
    for m in frozen:
        m.eval().requires_grad_(False)
    set_attention_backend(denoiser, cfg.attention_backend)
    if cfg.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    if cfg.lora.rank == 0:
        return copy.deepcopy(denoiser).eval().requires_grad_(False)
    from peft import LoraConfig

    denoiser.requires_grad_(False)
    denoiser.add_adapter(LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                    target_modules=list(cfg.lora.target_modules or default_targets),
                                    init_lora_weights="gaussian"))
    for p in denoiser.parameters():  # trained weights stay fp32 under mixed precision
        if p.requires_grad:
            p.data = p.data.float()
    return None


def trainable_steps(stds: torch.Tensor, cfg) -> list[int]:
    """The denoising steps a rollout can train: those whose Gaussian has nonzero std (``cps``'s
    final step and DDIM's last step with ``set_alpha_to_one`` are deterministic) among the first
    ``int(num_steps * timestep_fraction)`` (Flow-GRPO's ``train.timestep_fraction``: later steps
    are still sampled with noise but not trained). ``stds`` [num_steps]: each step's std."""
    n_train = int(cfg.num_steps * cfg.timestep_fraction)  # as Flow-GRPO's train_sd3.py computes it
    return [i for i in range(cfg.num_steps) if float(stds[i]) > 0 and i < n_train]


def window_starts(cfg, trainable: list[int]) -> list[int]:
    """The SDE-window starts that can be drawn: in ``sde_window_range`` and holding at least one
    trainable step (a window of deterministic or untrained steps alone would give an empty
    batch). Raises ``ValueError`` naming the options when there is none, so a config that
    passes this check never fails at a later, random step."""
    n, k = cfg.num_steps, cfg.sde_window_size
    if k == 0:
        starts = [0] if trainable else []
    else:
        lo, hi = cfg.sde_window_range or (0, n)
        starts = [s for s in range(lo, hi - k + 1) if any(s <= i < s + k for i in trainable)]
    if not starts:
        raise ValueError(
            f"no SDE window can hold a trained step: policy.sde={cfg.sde!r}, eta={cfg.eta}, num_steps={n}, "
            f"sde_window_size={k}, sde_window_range={cfg.sde_window_range}, timestep_fraction={cfg.timestep_fraction} "
            f"leave only steps {trainable} trainable (steps with zero noise, or past the timestep fraction, are not); "
            f"widen sde_window_range or raise timestep_fraction")
    return starts


def sde_window(cfg, generator: torch.Generator, starts: list[int]) -> list[int]:
    """Indices of an iteration's stochastic steps: all ``cfg.num_steps`` steps, or with
    ``sde_window_size = K > 0`` K consecutive ones starting at a draw (with ``generator``) from
    ``starts`` (:func:`window_starts`; Flow-GRPO-Fast, MixGRPO)."""
    n, k = cfg.num_steps, cfg.sde_window_size
    if k == 0:
        return list(range(n))
    start = starts[int(torch.randint(0, len(starts), (1,), generator=generator))]
    return list(range(start, start + k))
