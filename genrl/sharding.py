"""FSDP2: the policy's module sharded across processes with torch's ``fully_shard``
(``torch.distributed.fsdp``), on CPU (gloo) and GPU (nccl) alike.

One FSDP unit per block the model names in ``_no_split_modules`` (diffusers' ``ModelMixin`` and
transformers' ``PreTrainedModel`` both declare it: SD3 ``JointTransformerBlock``, FLUX
``FluxTransformerBlock`` / ``FluxSingleTransformerBlock``, Wan ``WanTransformerBlock``, Qwen2-VL's
decoder layer, ...), then the root; each parameter becomes a ``DTensor`` sharded along dim 0 and
every forward all-gathers what it needs, so rollouts, log-probs and the LoRA reference (adapters
disabled) run through the sharded module unchanged.

Why we call ``fully_shard`` rather than hand the model to accelerate's FSDP plugin: accelerate 1.15
turns FSDP on only for GPU-like distributed types (``accelerate/state.py``: ``MULTI_CPU`` is not in
the list), so on CPU ``--use_fsdp`` silently trains plain DDP; calling torch's API ourselves runs
the same code on CPU and GPU, which is what lets the CPU tests check it.

Collectives: every forward of a sharded module is collective, so each process must make the same
forwards. Rollouts do (equal shares per process); evaluation, which only the main process runs,
goes through :func:`gathered` (all processes gather the full weights first, then the main process
samples alone).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch


def fsdp_requested(flag: bool) -> bool:
    """``train.fsdp``, or an FSDP launch (``accelerate launch --use_fsdp`` or a config file with
    ``distributed_type: FSDP`` sets ``ACCELERATE_USE_FSDP=true``)."""
    return bool(flag) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_supported(world_size: int, deepspeed: bool, dynamic_sampling: bool, denoising: bool) -> None:
    """``ValueError`` naming what FSDP (``train.fsdp`` or an FSDP launch) cannot run with: one process,
    a DeepSpeed launch (two engines), DAPO dynamic sampling (processes would make different
    forwards), or a policy that is not a denoising one (generation lengths differ per process)."""
    what = "train.fsdp (or an FSDP accelerate launch)"
    if world_size == 1:
        raise ValueError(f"{what} needs several processes: launch with accelerate launch --num_processes N")
    if deepspeed:
        raise ValueError(f"{what} under a DeepSpeed launch: use one engine (drop train.fsdp, or the DeepSpeed config)")
    if dynamic_sampling:
        raise ValueError(f"{what} with rollout.dynamic_sampling: processes would make different forwards")
    if not denoising:
        raise ValueError(f"{what} supports the denoising policies (flow, diffusion) for now")


def block_classes(module: torch.nn.Module) -> set[str]:
    """The class names of the blocks ``module`` (or the model peft wraps) declares unsplittable."""
    inner = module.get_base_model() if hasattr(module, "get_base_model") else module
    return set(getattr(inner, "_no_split_modules", None) or ())


def shard(module: torch.nn.Module, mesh=None, mp_policy=None) -> torch.nn.Module:
    """Shard ``module`` in place (one FSDP unit per :func:`block_classes` block, then the root) and
    return it. Raises ``ValueError`` when torch.distributed is not initialised."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not torch.distributed.is_initialized():
        raise ValueError("sharding needs torch.distributed initialised (several processes)")
    # reshard_after_forward=True on the root too: FSDP2's default keeps the root's weights gathered after
    # forward, and then the root-level weights (embeddings, final norm and projection) received no
    # gradient from genrl's several forwards per backward (measured against DDP: tests/test_fsdp.py)
    kwargs = {"mesh": mesh, "mp_policy": mp_policy or MixedPrecisionPolicy(), "reshard_after_forward": True}
    blocks = block_classes(module)
    for sub in list(module.modules()):
        if sub is not module and type(sub).__name__ in blocks:
            fully_shard(sub, **kwargs)
    fully_shard(module, **kwargs)
    return module


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` was sharded by :func:`shard` (an FSDP2 module)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Every process calls this together: inside, ``module``'s full weights are gathered on each
    process and its forwards make no collectives, so one process may run it alone (evaluation);
    on exit the weights are sharded again. A no-op for a module that is not sharded."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)  # as shard() sets it


def to_local(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples) with each ``DTensor`` replaced by this process's shard: what a
    sharded checkpoint stores per process (plain tensors, loadable with ``weights_only=True``)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tree, DTensor):
        return tree.to_local().detach().clone()
    if isinstance(tree, dict):
        return {k: to_local(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_local(v) for v in tree)
    return tree


def from_local(tree: Any, like: Any) -> Any:
    """The inverse of :func:`to_local`: each tensor of ``tree`` that sits where ``like`` (the live
    state, e.g. ``optimizer.state_dict()``) holds a ``DTensor`` becomes a ``DTensor`` with the same
    mesh, placements and global shape. Raises ``ValueError`` when a shard's shape differs (a resume
    with another number of processes)."""
    from torch.distributed.tensor import DTensor

    if isinstance(like, DTensor) and isinstance(tree, torch.Tensor):
        local = like.to_local()
        if tree.shape != local.shape:
            raise ValueError(
                f"a sharded checkpoint's shard has shape {tuple(tree.shape)}, this process's {tuple(local.shape)}: "
                f"resume with the number of processes it was written with"
            )
        return DTensor.from_local(tree, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())
    if isinstance(tree, dict) and isinstance(like, dict):
        return {k: from_local(v, like.get(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and isinstance(like, (list, tuple)) and len(tree) == len(like):
        return type(tree)(from_local(v, w) for v, w in zip(tree, like))
    return tree


def optimizer_like(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A template for :func:`from_local` of a saved ``optimizer.state_dict()``: each per-parameter
    tensor of ``state["state"][i]`` (``exp_avg``, ...; not the scalar ``step``) is shaped like parameter
    ``i`` (the optimizer's parameters in order), which may be a ``DTensor``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    like = {
        i: {k: params[int(i)] for k, v in entry.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        for i, entry in state.get("state", {}).items()
    }
    return {"state": like}
