"""What a finished (or checkpointed) image / video run directory holds, read back: its config and
its newest checkpoint's trained weights. Shared by ``genrl gallery`` and ``genrl export``; the runs
are those of the trainers in ``IMAGE_TRAINERS`` (their configs share the ``policy`` section)."""

from __future__ import annotations

import os

import torch

IMAGE_TRAINERS = ("online", "preference")  # trainers of flow / diffusion policies
MODEL_SETTINGS = ("policy.", "train.ema_decay:")  # what decides the model an export or gallery rebuilds


class RunDirError(ValueError):
    """A run directory that cannot be read back (missing, not online, nothing checkpointed)."""


def check_run(run_dir: str) -> tuple[str, str]:
    """A run directory's ``config.yaml`` and newest checkpoint, or a clear error."""
    from genrl.checkpoint import latest_checkpoint
    from genrl.config import ConfigError, read_yaml

    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir!r} is not a directory")
    from genrl.trainers.common import EARLIER_RUN, PARTIAL

    if any(os.path.isdir(os.path.join(run_dir, name)) for name in (EARLIER_RUN, PARTIAL)):
        raise RunDirError(
            f"{run_dir!r}: a training launch stopped before its first step left the earlier run set aside in "
            f"{EARLIER_RUN}/; rerun genrl train on this folder (it puts the run back first)"
        )
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise RunDirError(f"{run_dir!r} has no config.yaml: not a genrl run directory (genrl train writes one)")
    try:  # as genrl train reads configs (genrl.config.base.read_yaml)
        data = read_yaml(cfg_path)
    except ConfigError as e:  # names the file: "PATH: invalid YAML: ..."
        raise RunDirError(str(e)) from None
    kind = data.get("trainer", "online") if isinstance(data, dict) else None
    if kind not in IMAGE_TRAINERS:
        raise RunDirError(
            f"{run_dir!r} is a {kind!r} run; expected an image/video run (trainer {' or '.join(IMAGE_TRAINERS)})"
        )
    ckpt = latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if ckpt is None:
        raise RunDirError(
            f"{run_dir!r} has no checkpoints/step-*: nothing trained to show yet "
            f"(a run saves one every checkpoint.every steps and at max_steps)"
        )
    return cfg_path, ckpt


def load_run_config(cfg_path: str, checkpoint: str | None = None):
    """The run's config, read with the schema of its ``trainer`` (``online`` or ``preference``).
    ``RunDirError`` naming ``cfg_path`` for a setting it refuses (a command reading several runs, or a
    run written by an older genrl: the user must know which file to edit), or, given the run's
    ``checkpoint``, for a model setting (``policy.*``, and ``train.ema_decay``, which says whether the run
    kept an EMA) that differs from those the checkpoint recorded when it was written
    (``genrl.trainers.common.trained_config``) outside what a resume may change: the model is rebuilt from
    ``config.yaml``, so an edit there (a LoRA alpha) exported the trained adapter into another model,
    silently. ``policy.model`` itself is judged by its files where the checkpoint recorded their fingerprints
    (:func:`load_base_policy`): the same base in another folder passes, another is refused. Other sections
    may be edited (moved prompt files, another reward to score a gallery with, ``eval.*``: the sampling
    settings an export records): they do not change which weights are loaded into which model."""
    from genrl.config import TRAINER_CONFIGS, ConfigError, config_differences, load_config, trainer_kind
    from genrl.trainers.common import trained_config, unresumable_changes

    try:
        cfg = load_config(TRAINER_CONFIGS[trainer_kind(cfg_path)], cfg_path)
    except ConfigError as e:  # invalid YAML names the file already
        raise RunDirError(str(e) if str(e).startswith(cfg_path) else f"{cfg_path}: {e}") from None
    trained = (
        trained_config(type(cfg), os.path.dirname(cfg_path), checkpoint, model=cfg.policy.model)
        if checkpoint
        else None
    )
    changed = unresumable_changes(config_differences(trained, cfg), MODEL_SETTINGS) if trained else ""
    if changed:
        raise RunDirError(
            f"{cfg_path}: settings differ from those {checkpoint} was trained with (trained -> file): {changed}; "
            "restore them"
        )
    return cfg


def load_final_weights(policy, run_dir: str, ema: bool = True) -> dict:
    """Load the trained weights of the run's newest *readable* checkpoint (an unreadable newest one
    is skipped with a warning, as a resume does: ``genrl.checkpoint.newest_readable``), with the EMA
    swapped in if it kept one and ``ema`` (what evaluation uses); returns ``{step, ema, skipped}``, ``skipped``
    the steps of newer checkpoints that could not be read (damaged or incomplete, each warned about).
    ``RunDirError`` when no checkpoint can be read."""
    from genrl.checkpoint import checkpoint_step, incomplete_checkpoints, list_checkpoints, newest_readable
    from genrl.ema import EMA

    root = os.path.join(run_dir, "checkpoints")
    ckpts = list_checkpoints(root)
    try:
        found = newest_readable(ckpts, root, keys=("step", "model", "ema"))
    except ValueError as e:
        raise RunDirError(str(e)) from None
    if found is None:
        raise RunDirError(f"{run_dir!r} has no checkpoints/step-*")
    state = found[1]
    policy.load_trainable_state_dict(state["model"])
    shadow_state = state.get("ema") if ema else None
    if shadow_state is not None:
        params = policy.trainable_parameters()
        shadow = EMA(params, shadow_state["decay"])
        shadow.load_state_dict(shadow_state)
        with torch.no_grad():
            for p, s in zip(params, shadow.shadow):
                p.copy_(s)
    step = checkpoint_step(found[0])
    skipped = sorted(
        checkpoint_step(p) for p in ckpts + incomplete_checkpoints(root, ckpts) if checkpoint_step(p) > step
    )
    return {"step": int(state["step"]), "ema": shadow_state is not None, "skipped": skipped}


def load_base_policy(cfg, checkpoint: str, device: str = "cpu"):
    """The policy of a run's config ``cfg`` as its base model loads it (ODE sampling only: no rollouts),
    once that model is found to be the one ``checkpoint`` was trained from: ``RunDirError`` naming the
    files of ``policy.model`` that changed or went since (``genrl.models.changed_model_files`` of the
    fingerprints the checkpoint recorded, ``genrl.checkpoint.recorded_base_model``). A LoRA checkpoint holds
    the adapter alone: merged into another base (a ``task:`` cache rebuilt by another genrl version or
    machine, a folder overwritten, a hub model updated) it made a model nobody trained, silently. Checked
    before the model loads, and again after where its files were not here before (a hub model the load
    downloads); a checkpoint that recorded none (before 2026-12-05) is not checked."""
    from genrl.checkpoint import recorded_base_model
    from genrl.models import changed_model_files, model_fingerprint, resolve_model
    from genrl.registry import POLICIES

    recorded, model = recorded_base_model(checkpoint), cfg.policy.model

    def compared() -> bool:
        now = model_fingerprint(model)
        if changed := changed_model_files(recorded, now):
            raise RunDirError(
                f"{checkpoint} was trained from another base model than policy.model {model!r} is now "
                f"({resolve_model(model)}: {changed}); restore that model (a task: model rebuilt by another "
                "machine or genrl version can differ: copy the training machine's folder over)"
            )
        return bool(now)

    before = not recorded or compared()
    policy = POLICIES.get(cfg.policy.name).from_pretrained(cfg.policy, device=device, rollouts=False)
    if not before:
        compared()
    return policy


def load_run_policy(run_dir: str, ema: bool = True, device: str = "cpu"):
    """``(config, policy with the run's final weights, checkpoint info)`` for a run directory
    (:func:`load_base_policy`, then :func:`load_final_weights`)."""
    from genrl.models import prepare_model

    cfg_path, checkpoint = check_run(run_dir)
    cfg = load_run_config(cfg_path, checkpoint)
    prepare_model(cfg.policy.model)  # the policy's task: model only (rebuilt, logged, if the cache was cleared)
    policy = load_base_policy(cfg, checkpoint, device)
    return cfg, policy, load_final_weights(policy, run_dir, ema=ema)
