"""DeepSpeed ZeRO (stages 1 and 2) optimizer state as plain data, for genrl's per-process checkpoints.

Under ZeRO-1/2 every process holds the whole model but only its own partition of the optimizer:
the fp32 master weights and Adam moments of 1/N of the parameters (``DeepSpeedZeroOptimizer``,
``deepspeed/runtime/zero/stage_1_and_2.py``). An exact resume therefore needs every process's
partition, so a DeepSpeed run with several processes writes one file per process, as ``train.fsdp``
does (``genrl.checkpoint.save_sharded_checkpoint``), and each process reads its own back.

Why not DeepSpeed's own ``engine.save_checkpoint``: its files are loaded with pickle
(``torch.load(..., weights_only=False)`` in ``deepspeed/runtime/checkpoint_engine``), and genrl loads
no data file in a way that can run code. The optimizer's ``state_dict()`` holds three kinds of
Python objects besides tensors and numbers (DeepSpeed 0.19): the ``LossScaler``, the
``ZeroStageEnum`` and ``fragment_address`` tuples in ``param_slice_mappings``. :func:`state_dict`
turns them into numbers and lists so the file loads with ``weights_only=True``; :func:`load_state_dict`
checks them against the live optimizer (same ZeRO stage, same partition layout) and restores the loss
scaler's fields into the live one, then hands DeepSpeed the list it expects (indexed by data-parallel
rank: ``_load_legacy_checkpoint``).

ZeRO-3 (parameters partitioned too) is not supported: ``check_stage`` refuses it with one line.
"""

from __future__ import annotations

import os
from typing import Any

from genrl.checkpoint import CheckpointLayoutError

_OBJECTS = ("loss_scaler", "zero_stage", "param_slice_mappings")


def zero_optimizer(optimizer) -> Any:
    """The ``DeepSpeedZeroOptimizer`` under ``optimizer`` (accelerate's ``DeepSpeedOptimizerWrapper``
    or the engine's own), or None when ``optimizer`` is not a ZeRO-1/2 one."""
    for candidate in (optimizer, getattr(optimizer, "optimizer", None)):  # the engine's, or accelerate's wrapper
        if type(candidate).__name__ == "DeepSpeedZeroOptimizer":
            return candidate
    return None


def check_stage(stage: int) -> None:
    """``ValueError`` (one line, exit 2 through the CLI) for a ZeRO stage genrl cannot checkpoint."""
    if int(stage) >= 3:
        raise ValueError(
            "DeepSpeed ZeRO-3 is not supported (its parameters are partitioned, and genrl's rollouts and "
            "checkpoints read whole parameters): use zero_stage 1 or 2, or train.fsdp=true to shard parameters"
        )


def check_launch(accelerator) -> None:
    """``ValueError`` (one line, exit 2 through the CLI) when the launch asked for DeepSpeed (an accelerate
    config with ``distributed_type: DEEPSPEED`` sets ``ACCELERATE_USE_DEEPSPEED``) but accelerate did not
    start it: accelerate 1.15 runs DeepSpeed on GPUs only, and genrl's ``Accelerator(cpu=True)`` on a
    machine without one would otherwise train without DeepSpeed and say nothing."""
    asked = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if asked and accelerator.state.deepspeed_plugin is None:
        raise ValueError(
            "this launch asks for DeepSpeed, but accelerate runs DeepSpeed on GPUs only and none is visible: "
            "on CPU launch without the DeepSpeed config (DDP), or shard with train.fsdp=true"
        )


def _slices(mappings) -> list[list[list[Any]]]:
    return [[[name, int(f.numel), int(f.start)] for name, f in group.items()] for group in mappings]


def state_dict(optimizer) -> dict[str, Any]:
    """This process's optimizer state as tensors, numbers, strings and lists only (module docstring);
    a plain optimizer's ``state_dict()`` unchanged."""
    sd = optimizer.state_dict()
    if zero_optimizer(optimizer) is None:
        return sd
    plain = {k: v for k, v in sd.items() if k not in _OBJECTS}
    plain["loss_scaler"] = {k: v for k, v in vars(sd["loss_scaler"]).items() if isinstance(v, (int, float, bool))}
    plain["zero_stage"] = int(sd["zero_stage"])
    plain["param_slice_mappings"] = _slices(sd["param_slice_mappings"])
    return plain


def load_state_dict(optimizer, state: dict[str, Any], rank: int, world_size: int) -> None:
    """Restore ``state`` (this process's, from :func:`state_dict`) into ``optimizer``. Raises
    ``CheckpointLayoutError`` when the checkpoint was written under another ZeRO stage or partition
    layout (another process count or parameter set), which DeepSpeed would otherwise misread."""
    if zero_optimizer(optimizer) is None:
        if "zero_stage" in state:
            raise CheckpointLayoutError(
                f"the checkpoint's optimizer state is DeepSpeed ZeRO-{state['zero_stage']}'s: resume under the "
                f"DeepSpeed launch it was written with"
            )
        optimizer.load_state_dict(state)
        return
    live = optimizer.state_dict()
    if "zero_stage" not in state:
        raise CheckpointLayoutError(
            "the checkpoint's optimizer state is not a DeepSpeed ZeRO one: resume without DeepSpeed"
        )
    if state["zero_stage"] != int(live["zero_stage"]) or state["param_slice_mappings"] != _slices(
        live["param_slice_mappings"]
    ):
        raise CheckpointLayoutError(
            f"the checkpoint's ZeRO partitions (stage {state['zero_stage']}) do not match this run's (stage "
            f"{int(live['zero_stage'])}, {world_size} processes): resume with the launch it was written with"
        )
    scaler = live["loss_scaler"]
    for key, value in state["loss_scaler"].items():
        setattr(scaler, key, value)
    # DeepSpeed's own objects back in place of their plain forms (checked equal above)
    restored = dict(
        state, loss_scaler=scaler, zero_stage=live["zero_stage"], param_slice_mappings=live["param_slice_mappings"]
    )
    partitions: list[Any] = [None] * world_size
    partitions[rank] = restored
    optimizer.load_state_dict(partitions)
