"""What every trainer does the same way around its loop: open the run directory once start-up has
succeeded, the step progress bar, and the final metrics file."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import warnings
from typing import Callable, Optional

from tqdm.auto import tqdm

from genrl.config import (
    TRAINER_CONFIGS,
    config_differences,
    config_from_dict,
    config_to_yaml,
    load_config,
    parse_value,
    read_yaml,
    save_config,
)
from genrl.evaluation import read_summary
from genrl.io import atomic_file, eval_dir, json_safe
from genrl.metrics_log import MetricsLogger
from genrl.preemption import RunFailed

# Settings a resume may change: how long to train, what is logged, evaluated and kept, and how the
# same computation is executed (sharding: a single process resumes an FSDP run; compilation, kernels,
# caches, threads). Any other change would make one run out of two configurations while config.yaml
# names only the last; max_steps too, while a schedule follows it (schedules_on_max_steps).
RESUMABLE = (
    "max_steps",
    "resume",
    "output_dir",
    "log.",
    "eval.",
    "data.max_eval_prompts:",  # evaluation-only data settings, as eval.*
    "data.test_files:",
    "data.val_files:",
    "checkpoint.",
    "train.fsdp:",
    "train.adaptive_threads:",
    "rollout.async_rewards:",
    "policy.compile:",
    "policy.attention_backend:",
    "policy.gradient_checkpointing:",
    "policy.prompt_cache_mb:",
    "policy.prompt_cache_device:",
    # where the preference pool keeps its snapshots (auto resolves by size): the pool's own load refuses a
    # checkpoint kept the other way, naming the setting, so auto -> memory for a pool kept in memory resumes
    "reference.storage:",
)
# Of those, the ones that change what an evaluation measures (its prompts, samples, sampler, decoding):
# a resume with other values makes the evaluations before and after it (base vs final) not alike.
MEASURED_BY_EVAL = ("eval.", "data.max_eval_prompts:", "data.test_files:", "data.val_files:")
NOT_MEASURED_BY_EVAL = ("eval.every:", "eval.batch_size:", "eval.save_images:")
# What a run writes into output_dir: a run that starts over sets the earlier run's aside (a later resume
# would read its checkpoints, its rows would mix with the new run's), to be removed after its first step.
RUN_OUTPUTS = ("checkpoints", "eval", "pool", "final_metrics.json", "config.yaml", "metrics.jsonl", "tb")
# ... and what one trainer writes besides: SFT's model folder (a later RL run names it with sft:)
TRAINER_OUTPUTS = {"sft": ("model",)}
EARLIER_RUN = ".genrl-earlier-run"  # the folder inside output_dir that holds them until then
PARTIAL = EARLIER_RUN + ".partial"  # the same while being filled: renamed to EARLIER_RUN once complete
DROPPED = EARLIER_RUN + ".removing"  # the same while being removed


# The first lines of the config.yaml a run saves: how a run's folder is told from one holding a recipe.
RUN_CONFIG_HEADER = "# genrl run: the resolved config of the run in this folder; rerun it to resume\n"


def run_outputs(trainer: str) -> tuple[str, ...]:
    """The names a run of ``trainer`` writes into its ``output_dir``."""
    return RUN_OUTPUTS + TRAINER_OUTPUTS.get(trainer, ())


def remove_output(path: str) -> None:
    """Removes a file, a link or a folder (nothing when there is none)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _move_back(output_dir: str, folder: str) -> list[str]:
    """Moves everything in ``output_dir/folder`` back into ``output_dir`` (replacing the same names there),
    removes the folder and returns the names."""
    names = sorted(os.listdir(os.path.join(output_dir, folder)))
    for name in names:
        remove_output(os.path.join(output_dir, name))
        os.replace(os.path.join(output_dir, folder, name), os.path.join(output_dir, name))
    os.rmdir(os.path.join(output_dir, folder))
    return names


def is_run_folder(output_dir: str) -> bool:
    """Whether ``output_dir/config.yaml`` is one a genrl run saved: a YAML mapping whose ``trainer`` names
    one of ``genrl.config.TRAINER_CONFIGS``, opening with ``RUN_CONFIG_HEADER`` (a recipe copied there
    has the same keys) or, as older versions wrote it without, beside a run that completed a step."""
    if saved_trainer(output_dir) not in TRAINER_CONFIGS:
        return False
    with open(os.path.join(output_dir, "config.yaml"), encoding="utf-8") as f:
        if f.readline() == RUN_CONFIG_HEADER.splitlines(keepends=True)[0]:
            return True
    return completed_a_step(output_dir)


def check_run_config_location(config_path: str, cfg, overrides) -> None:
    """``genrl train RUN/config.yaml`` resumes the run in RUN: ``ValueError`` when that file is a run's
    saved config (``RUN_CONFIG_HEADER``) but its ``output_dir`` is another folder (the run was moved or
    copied: the launch would silently train in the old folder) and no ``output_dir=`` override says
    which one is meant (a copy where no run is, a recipe made of a run's config, is told apart)."""
    folder = os.path.dirname(os.path.abspath(config_path))
    if any(o.partition("=")[0].strip() == "output_dir" for o in overrides):
        return
    try:
        with open(config_path, encoding="utf-8") as f:
            if f.readline() != RUN_CONFIG_HEADER.splitlines(keepends=True)[0]:
                return
    except OSError:
        return
    if os.path.realpath(folder) == os.path.realpath(cfg.output_dir):
        return
    if completed_a_step(folder):
        raise ValueError(
            f"{config_path} is the saved config of the run in {cfg.output_dir} (its output_dir), but it sits in "
            f"{folder}: was the run moved or copied? Add output_dir={folder} to resume the run there, or "
            f"output_dir={cfg.output_dir} to resume the original"
        )
    raise ValueError(  # a run's config copied as a recipe: it would resume (or extend) that run
        f"{config_path} is the saved config of the run in {cfg.output_dir} (its output_dir), copied where no run is: "
        f"it would train in that run. Add output_dir=NEW_FOLDER to start a new run with its settings, or "
        f"output_dir={cfg.output_dir} to resume the original"
    )


def saved_trainer(output_dir: str) -> Optional[str]:
    """The ``trainer`` of ``output_dir/config.yaml`` as written (None: no readable YAML mapping there)."""
    try:
        data = read_yaml(os.path.join(output_dir, "config.yaml"))
    except ValueError:  # missing, a directory, unreadable, not YAML
        return None
    return data.get("trainer") if isinstance(data, dict) else None


def completed_a_step(output_dir: str) -> bool:
    """Whether the run in ``output_dir`` completed a training step: a checkpoint, or a ``metrics.jsonl``
    row of step >= 1."""
    from genrl.checkpoint import list_checkpoints

    if list_checkpoints(os.path.join(output_dir, "checkpoints")):
        return True
    try:
        with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
            return any(json.loads(line).get("step", 0) >= 1 for line in f if line.strip())
    except (OSError, ValueError, AttributeError):
        return False


def earlier_run_outputs(output_dir: str, trainer: str) -> list[str]:
    """The names in ``output_dir`` that a run starting there (of ``trainer``) sets aside: the earlier run's
    outputs (:func:`run_outputs` of the trainer its ``config.yaml`` names: an SFT run's ``model/`` too).
    ``ValueError`` naming them when the folder holds names this run writes that are not the earlier run's:
    no run's config (:func:`is_run_folder`), or ``model/`` beside an online run; they are the user's own."""
    present = [n for n in run_outputs(trainer) if os.path.lexists(os.path.join(output_dir, n))]
    earlier = saved_trainer(output_dir) if present else None
    own = run_outputs(earlier) if present and is_run_folder(output_dir) else ()  # is_run_folder: a known trainer
    if foreign := [n for n in present if n not in own]:
        whose = (
            f"which a trainer: {earlier} run does not write"
            if own
            else "not a genrl run's (no config.yaml that a run saved)"
        )
        raise ValueError(
            f"output_dir {output_dir!r} holds {', '.join(foreign)}, {whose}: a run there would replace them; "
            "choose another output_dir, or move them away"
        )
    return [n for n in own if os.path.lexists(os.path.join(output_dir, n))]


def set_aside_earlier_run(output_dir: str, trainer: str = "online") -> list[str]:
    """Moves the earlier run's outputs in ``output_dir`` (:func:`earlier_run_outputs`, which raises
    ``ValueError`` before anything moves for the user's own files) into ``output_dir/.genrl-earlier-run``
    (renames, nothing copied; filled under another name and renamed once complete, so a launch stopped
    midway leaves a state :func:`restore_earlier_run` reads) and returns their names. They stay there until
    this run completes its first training step (:func:`drop_earlier_run`, called by the metrics logger and
    when the launch ends) or stops before it (:func:`restore_earlier_run`, called by
    ``genrl.trainers.discarded_on_bad_input``, or by the next launch: :func:`recover_earlier_run`), so a
    ``resume=false`` launch that fails its start loses nothing."""
    recover_earlier_run(output_dir, trainer)  # a killed launch's leftovers first (run_trainer did it already)
    names = earlier_run_outputs(output_dir, trainer)
    if not names:
        return []
    os.makedirs(os.path.join(output_dir, PARTIAL))
    for name in names:
        os.replace(os.path.join(output_dir, name), os.path.join(output_dir, PARTIAL, name))
    os.replace(os.path.join(output_dir, PARTIAL), os.path.join(output_dir, EARLIER_RUN))
    return names


def drop_earlier_run(output_dir: str) -> None:
    """Removes what :func:`set_aside_earlier_run` kept (nothing when there is none): renamed first, so a
    launch killed while removing it leaves ``.genrl-earlier-run.removing``, which the next launch removes."""
    aside, dropped = os.path.join(output_dir, EARLIER_RUN), os.path.join(output_dir, DROPPED)
    if os.path.isdir(aside):
        shutil.rmtree(dropped, ignore_errors=True)
        os.replace(aside, dropped)
    shutil.rmtree(dropped, ignore_errors=True)


def restore_earlier_run(output_dir: str) -> list[str]:
    """Puts what :func:`set_aside_earlier_run` kept back in ``output_dir``, replacing the same names there,
    and returns them (``[]`` when nothing was set aside). A set-aside stopped midway
    (``.genrl-earlier-run.partial``) goes back too: the names not moved yet are still in place."""
    for folder in (PARTIAL, EARLIER_RUN):
        if os.path.isdir(os.path.join(output_dir, folder)):
            return _move_back(output_dir, folder)
    return []


def recover_earlier_run(output_dir: str, trainer: str = "online") -> list[str]:
    """What a launch killed (SIGKILL, a power cut) while an earlier run was set aside left behind, settled
    before anything reads the folder; returns the names put back. Set aside midway: the moved part goes
    back. Set aside whole: the killed launch completed no step (else the earlier run would have been
    dropped), so its outputs (:func:`run_outputs` of ``trainer``) are removed and the earlier run goes back,
    to be resumed or set aside again; if it did complete one (killed between its first row and the drop),
    the earlier run is dropped, as is one killed while being dropped."""
    if not os.path.isdir(output_dir):
        return []
    shutil.rmtree(os.path.join(output_dir, DROPPED), ignore_errors=True)
    if os.path.isdir(os.path.join(output_dir, PARTIAL)):
        return restore_earlier_run(output_dir)
    if not os.path.isdir(os.path.join(output_dir, EARLIER_RUN)):
        return []
    if completed_a_step(output_dir):
        drop_earlier_run(output_dir)
        return []
    if not is_run_folder(os.path.join(output_dir, EARLIER_RUN)):  # every earlier run set aside has its config
        raise ValueError(
            f"output_dir {output_dir!r} holds {EARLIER_RUN}/, which is not an earlier run that genrl set aside; "
            "move it away"
        )
    for name in run_outputs(trainer):
        remove_output(os.path.join(output_dir, name))
    return restore_earlier_run(output_dir)


def schedules_on_max_steps(cfg) -> list[str]:
    """The settings of ``cfg`` (as ``key=value``) whose effect follows ``step / max_steps``, so that a
    resume changing ``max_steps`` would switch them to another schedule midway: a decaying learning
    rate (``lr_multiplier``), D3S's kept shares (``advantages.downsample``) and objectives registered
    with ``reads_progress`` (a bool, or a function of the objective's config: mdpo's annealed step
    size), including an objective whose options another reads (``reads_options_of``: capo's base)."""
    from genrl.registry import OBJECTIVES

    out = []
    if getattr(cfg.train, "lr_schedule", "constant") != "constant":
        out.append(f"train.lr_schedule={cfg.train.lr_schedule}")
    if getattr(getattr(cfg, "advantages", None), "downsample", "none") != "none":
        out.append(f"advantages.downsample={cfg.advantages.downsample}")
    objective = getattr(cfg, "objective", None)
    if objective is not None:
        for name in OBJECTIVES.in_use(objective.name, objective):
            reads = OBJECTIVES.meta(name).get("reads_progress", False)
            if reads(objective) if callable(reads) else reads:
                out.append(f"objective.name={name}")
    return out


_UNREADABLE_RECORDS: set[str] = set()  # checkpoints whose recorded settings were warned about


def refuse_lora_dropout(policy_cfg) -> None:
    """``ValueError`` naming ``policy.lora.dropout`` unless it is 0: genrl's policies run every module in eval
    mode, so that re-scoring a rollout reproduces its log-probs (the first update's ratio exactly 1; TRL's
    ``disable_dropout``); peft's ``lora_dropout`` drew a new mask in every forward before 2026-12-05. Checked
    by the trainers, not by the config: a run trained with one then must still export and show in a gallery."""
    if policy_cfg.lora.rank > 0 and policy_cfg.lora.dropout:
        raise ValueError(
            f"policy.lora.dropout={policy_cfg.lora.dropout}: must be 0: genrl's policies run without dropout, so "
            "that re-scoring a rollout reproduces its log-probs"
        )


def trained_config(cfg_type: type, output_dir: str, checkpoint: Optional[str] = None, model: Optional[str] = None):
    """The settings a run was trained with, in the schema ``cfg_type``: those that ``checkpoint`` recorded
    when it was written (``genrl.checkpoint.recorded_config``: an edit of ``config.yaml`` after training does
    not change them), else the run's ``output_dir/config.yaml`` (checkpoints written before 2026-12-05 record
    none; a record that is damaged, empty or of another schema is warned about and passed over the same
    way: read as settings, an empty one would have been every default); ``None`` when this version can
    read neither. ``model``: the model the run's policy names now (``policy.model``, an SFT config's
    ``model``), read in place of the recorded one where the checkpoint also recorded its base model's
    fingerprints (``genrl.checkpoint.recorded_base_model``): those decide whether it is the same model
    (:func:`base_model`, ``genrl.run_dir.load_base_policy``), so a run and its base moved or copied to other
    folders resume and export, and a recorded folder that is gone no longer makes the record unreadable (the
    settings were then compared with the edited file itself: a LoRA alpha edited after a move passed)."""
    import yaml

    from genrl.checkpoint import recorded_base_model, recorded_config

    record = recorded_config(checkpoint) if checkpoint else None
    if record is not None:
        try:
            data = parse_value(record)
            if not isinstance(data, dict) or not data:
                raise ValueError("not a mapping of settings")
            if model is not None and recorded_base_model(checkpoint):
                section = data.get("policy") if isinstance(data.get("policy"), dict) else data
                if "model" in section:
                    section["model"] = model
            return config_from_dict(cfg_type, data)
        except (ValueError, yaml.YAMLError) as e:  # ConfigError is a ValueError
            why = " ".join(str(e).split())  # YAML's errors span lines
            if checkpoint not in _UNREADABLE_RECORDS:  # once per process: a resume and an export read it twice
                _UNREADABLE_RECORDS.add(checkpoint)
                warnings.warn(
                    f"{checkpoint}/meta.json: its recorded settings cannot be read ({why}); comparing with config.yaml"
                )
    try:
        return load_config(cfg_type, os.path.join(output_dir, "config.yaml"))
    except (OSError, ValueError):
        return None


def unresumable_changes(differences: list[str], within: tuple[str, ...] = ("",)) -> str:
    """Of ``differences`` (``config_differences(trained, now)``: ``key: trained -> now`` each), those outside
    ``RESUMABLE`` (changes that would make one run out of two configurations) and under one of the prefixes
    ``within``, as one text: the first four, then how many more; ``""`` for none."""
    changed = [d for d in differences if not d.startswith(RESUMABLE) and d.startswith(within)]
    more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
    return f"{'; '.join(changed[:4])}{more}" if changed else ""


def check_resume(cfg, start: int, checkpoint: Optional[str] = None) -> list[str]:
    """A resume at step ``start`` from ``checkpoint`` continues the run it was trained in
    (:func:`trained_config`: the settings the checkpoint recorded, else ``output_dir/config.yaml``; each
    trainer asks before any checkpointed state loads: state the run never kept, such as an EMA when
    ``train.ema_decay`` is set at resume, was a traceback, and :func:`open_run` asks again):
    ``ValueError`` naming the changed settings (outside ``RESUMABLE``), a changed ``max_steps`` while
    a schedule follows it (:func:`schedules_on_max_steps`), or a ``max_steps`` below the step reached.
    Settings this version cannot read are not compared. Returns the allowed changes that make
    later evaluations measure otherwise than earlier ones (``MEASURED_BY_EVAL``), as ``key: was -> now``."""
    from genrl.models import policy_model

    saved = trained_config(type(cfg), cfg.output_dir, checkpoint, model=policy_model(cfg))
    if saved is not None and saved.max_steps != cfg.max_steps and (scheduled := schedules_on_max_steps(saved)):
        raise ValueError(
            f"resuming {cfg.output_dir} at step {start} with max_steps={cfg.max_steps}, trained with "
            f"max_steps={saved.max_steps}: {', '.join(scheduled)} follow step / max_steps, so the steps left "
            f"would take another schedule than the first {start}; restore max_steps={saved.max_steps}, or start "
            "over (resume=false, or a new output_dir)"
        )
    if start > cfg.max_steps:
        raise ValueError(
            f"{cfg.output_dir} is at step {start}, past max_steps={cfg.max_steps}: raise max_steps, "
            "or start over with resume=false"
        )
    if saved is None:
        return []
    differences = config_differences(saved, cfg)
    if changed := unresumable_changes(differences):
        raise ValueError(
            f"resuming {cfg.output_dir} at step {start} with settings it was not trained with: "
            f"{changed}; restore them, or start over (resume=false, or a new output_dir)"
        )
    return [d for d in differences if d.startswith(MEASURED_BY_EVAL) and not d.startswith(NOT_MEASURED_BY_EVAL)]


def open_run(cfg, start: int, main: bool = True, checkpoint: Optional[str] = None) -> Optional[MetricsLogger]:
    """Call once start-up has succeeded (models loaded, checkpoint read): only then is anything
    written into ``cfg.output_dir`` (the resolved ``config.yaml``) and the trackers of ``log.report_to``
    open. A resume (``start`` > 0, from the folder ``checkpoint``) is checked first (:func:`check_resume`)
    and only then announced, so a refused resume prints its one error line alone; a run that starts over
    (``start`` 0, e.g. ``resume=false`` in a used folder) sets the earlier run's ``RUN_OUTPUTS`` aside
    (:func:`set_aside_earlier_run`) until its first step. A finished run that is rerun, its final evaluation
    on disk, keeps its ``config.yaml``: nothing trains or evaluates with the rerun's settings.
    Returns the metrics logger (appending after step ``start``) on the main process, else ``None``."""
    if not main:
        return None
    saved_config = os.path.join(cfg.output_dir, "config.yaml")
    # a finished run with its final evaluation, rerun: nothing trains or evaluates, so its config stays as it is
    nothing_runs = (
        start == cfg.max_steps and os.path.isfile(_summary_file(cfg, start)) and os.path.isfile(saved_config)
    )
    if start > 0:
        unlike = check_resume(cfg, start, checkpoint)
        print(f"resuming from {checkpoint} (step {start})")
        if unlike and not nothing_runs:  # allowed, but base (step 0) vs final would compare two kinds of evaluation
            print(
                f"note: evaluation settings changed since the last launch ({'; '.join(unlike)}): evaluations from "
                "here on are not measured as the earlier ones (the base at step 0 included)"
            )
    else:
        earlier = set_aside_earlier_run(cfg.output_dir, cfg.trainer) if os.path.isdir(cfg.output_dir) else []
        if earlier:  # resume=false, or an earlier run without a checkpoint: say what goes, and when
            why = "resume=false" if not cfg.resume else "no checkpoint to resume from"
            print(
                f"starting over ({why}): the earlier run's {', '.join(earlier)} in {cfg.output_dir} "
                f"{'is' if len(earlier) == 1 else 'are'} set aside in {EARLIER_RUN}/ and removed once this run "
                "completes its first step"
            )
    try:
        os.makedirs(cfg.output_dir, exist_ok=True)
    except OSError as e:  # /proc/x, a read-only mount: name the setting, not only errno
        raise ValueError(f"output_dir {cfg.output_dir!r} cannot be created: {e.strerror}") from None
    logger = MetricsLogger(
        cfg.output_dir,
        start,
        cfg.log.report_to,
        cfg.log.project,
        cfg.log.run_name,
        config=cfg,
        media_samples=cfg.log.media_samples,
        after_first_step=lambda: drop_earlier_run(cfg.output_dir),
    )  # the trackers start first: one that cannot start fails before the config is written
    # resume is how this launch treats the folder, not a setting of the run: a rerun of the saved config
    # resumes (written as false, `genrl train RUN/config.yaml` would start over and remove the checkpoints)
    if not nothing_runs:
        saved = copy.copy(cfg)  # shallow: only the top-level flag differs
        saved.resume = True
        save_config(saved, saved_config, header=RUN_CONFIG_HEADER)
    return logger


def step_bar(cfg, start: int, desc: str, main: bool = True) -> tqdm:
    """The progress bar over steps ``start .. cfg.max_steps`` (off with ``log.progress_bar=false``)."""
    return tqdm(
        range(start, cfg.max_steps),
        initial=start,
        total=cfg.max_steps,
        desc=desc,
        disable=not (main and cfg.log.progress_bar),
        dynamic_ncols=True,
    )


def resume_point(
    cfg,
    task,
    ckpt_dir: str,
    clean: bool = True,
    rank: Optional[int] = None,
    world_size: int = 1,
    processes: Optional[int] = None,
) -> tuple[Optional[tuple[str, dict]], dict[str, str], dict[str, str]]:
    """Where a launch starts, checked before any checkpointed state loads: ``(found, data_files, base)``, the
    ``(checkpoint, state)`` of the newest readable checkpoint in ``ckpt_dir`` (``genrl.checkpoint.resume_state``
    with ``clean`` / ``rank`` / ``world_size``; None with ``resume=false`` or none written), and the
    fingerprints of the training data (:func:`training_data`; every checkpoint's state keeps them) and of the
    base model (:func:`base_model`; every checkpoint's ``meta.json`` keeps them). A resume's settings are
    compared with the run's first (:func:`check_resume`), then its process count where the trainer's batch is
    per process (``processes``, against the checkpoint's ``num_processes``: the preference trainer's update
    doubled under two processes, silently), then its data files, then its base model. Every trainer starts
    here, once its model has loaded (a hub model is in the local cache by then)."""
    from genrl.checkpoint import resume_state

    found = resume_state(ckpt_dir, clean=clean, rank=rank, world_size=world_size) if cfg.resume else None
    if found:  # the settings first: nothing of the checkpoint loads into another configuration
        check_resume(cfg, found[1]["step"], found[0])
        was = found[1].get("num_processes")
        if processes is not None and was is not None and was != processes:
            raise ValueError(
                f"resuming from {found[0]}, written by {was} process(es), with {processes}: each process takes "
                f"train.batch_size samples, so the steps left would update on another batch than the first; "
                f"relaunch with {was} process(es), or start over (resume=false, or a new output_dir)"
            )
    return found, training_data(cfg, task, found), base_model(cfg, found[0] if found else None)


def checkpoint_record(cfg, base: dict[str, str]) -> dict:
    """What each checkpoint's ``meta.json`` records of the run (``genrl.checkpoint.save_checkpoint``'s
    ``record``): its settings as YAML text (compared by :func:`check_resume`, ``genrl export`` and
    ``genrl gallery``) and ``base``, its base model's fingerprints (:func:`base_model`)."""
    return {"config": config_to_yaml(cfg), "base_model": base}


def base_model(cfg, checkpoint: Optional[str] = None) -> dict[str, str]:
    """Fingerprints of the files of the model the policy starts from (``genrl.models.model_fingerprint`` of
    ``policy.model``, an SFT config's ``model``); with ``checkpoint``, the one a resume starts from, compared
    first with those it recorded (``genrl.checkpoint.recorded_base_model``): ``ValueError`` naming the files
    that changed or went since (the trained weights, an adapter or a whole denoiser beside a frozen text
    encoder, would go on from another base: a rebuilt cache, a folder overwritten by another download). A
    checkpoint from before they were kept (2026-12-05) has none."""
    from genrl.checkpoint import recorded_base_model
    from genrl.models import changed_model_files, model_fingerprint, policy_model

    model = policy_model(cfg)
    now = model_fingerprint(model)
    if checkpoint is not None and (changed := changed_model_files(recorded_base_model(checkpoint), now)):
        raise ValueError(
            f"resuming from {checkpoint}: the base model {model!r} is not the one it was trained on ({changed}); "
            "restore that model, or start over (resume=false, or a new output_dir)"
        )
    return now


def training_data(cfg, task=None, resumed: Optional[tuple[str, dict]] = None) -> dict[str, str]:
    """Fingerprints of the files ``cfg.data.train_files`` names (``genrl.tasks.rows.data_fingerprints``;
    a folder's files of the types ``task`` reads, its ``data_suffixes``), ``{}`` for a task without data
    files; saved in every checkpoint as ``data_files``. With ``resumed``, the ``(checkpoint, state)`` a
    resume read, they are compared first with those it saved (a checkpoint from before they were kept
    has none, and a finished run has no step left: not compared): ``ValueError`` naming the first data
    file that changed, appeared or went since (the same contents in the same order under other paths
    pass here; a changed ``data.train_files`` is the settings check's to name, :func:`check_resume`, which
    the trainers run first). Every process calls it before any of that state loads (a sampler's state would
    fail first, naming neither the file nor the checkpoint). Eval-only files may change."""
    from genrl.tasks.rows import DATA_SUFFIXES, data_fingerprints

    files = getattr(getattr(cfg, "data", None), "train_files", None)
    now = data_fingerprints(files, getattr(task, "data_suffixes", DATA_SUFFIXES)) if files else {}
    saved = resumed[1].get("data_files") if resumed is not None else None
    # the same contents in the same order: the rows are the same (a moved or renamed path is check_resume's to
    # name when data.train_files changed); reordered or swapped files are not
    if saved is None or list(saved.values()) == list(now.values()):
        return now
    if resumed[1].get("step", 0) >= cfg.max_steps:  # a finished run: no step left to train on other data
        return now
    for path in sorted(set(saved) | set(now)):
        was, new = saved.get(path), now.get(path)
        if was != new:
            what = "is new" if was is None else "is gone" if new is None else f"changed (was {was}; now {new})"
            hint = " (a large file is compared by size and modification time)" if "modified" in f"{was}{new}" else ""
            raise ValueError(
                f"resuming from {resumed[0]}: data file {path} {what} since that checkpoint{hint}, so the steps "
                "left would train on other data than the first; restore the data, or start over (resume=false, "
                "or a new output_dir)"
            )
    return now


def _summary_file(cfg, step: int) -> str:
    return os.path.join(eval_dir(cfg.output_dir, step), "summary.json")


def evaluations_due(cfg, start: int, accelerator=None) -> list[int]:
    """The evaluations a run starting (or resuming) at step ``start`` runs before its first step:
    ``[0]`` (the base) for a fresh run; ``[max_steps]`` for a resume of a finished run whose final
    evaluation is missing (its ``eval/`` folder moved or removed): the loaded weights are the final
    ones, so it is run again, announced (by the main process), instead of writing an empty ``final``;
    else ``[]``. Under ``accelerator`` with several processes, every one gets the main process's list
    (broadcast: the main one may write the summary file another would look for, and each evaluation
    has collectives every process must reach)."""
    main = accelerator is None or accelerator.is_main_process
    due = []
    if start == 0:
        due = [0]
    elif start == cfg.max_steps and not os.path.isfile(_summary_file(cfg, start)):
        if main:
            print(f"{_summary_file(cfg, start)} is missing: evaluating the final weights again")
        due = [start]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        due = broadcast_object_list([due])[0]
    return due


def build_task(task_cls, cfg):
    """``task_cls.from_config(cfg)`` through ``genrl.registry.plugin_call``: a plug-in task's constructor
    that fails (one needing arguments) is one line naming ``task``."""
    from genrl.registry import plugin_call

    return plugin_call(task_cls.from_config, cfg, option="task", name=cfg.task, name_refusals=False)


def task_prompts(task, name: str) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """``(training, evaluated)`` prompts of ``task`` (config key ``task`` = ``name``), each ``[(prompt text,
    metadata dict)]``: ``train_prompts()`` (``[]`` for a task without one: a preference task may have winners
    only) and, for a task with ``prompts()``, the evaluated prompts with ``metadata(prompt)`` (``{}`` without
    one). The start-up checks of the trainers use both. Checked against ``genrl.protocols.Task`` /
    ``PromptTask``: a plug-in task that breaks the contract is a ``ValueError`` naming ``task`` (plain strings
    were indexed into single characters, silently; an int prompt was a traceback in a reward's check), and
    an error its methods raise goes through ``genrl.registry.plugin_call``."""
    from genrl.registry import plugin_call

    def call(method: str, *args):
        return plugin_call(getattr(task, method), *args, option="task", name=name, name_refusals=False)

    has_train = callable(getattr(task, "train_prompts", None))
    train = call("train_prompts") if has_train else []
    if not isinstance(train, (list, tuple)) or (has_train and not train):
        raise ValueError(f"task={name!r}: train_prompts() must return a non-empty list of (prompt, metadata)")
    for i, item in enumerate(train):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(
                f"task={name!r}: train_prompts()[{i}] is {item!r:.80}; expected (prompt text, metadata dict)"
            )
        if not isinstance(item[1], dict):
            raise ValueError(
                f"task={name!r}: train_prompts()[{i}]'s metadata is a {type(item[1]).__name__}, not a dict"
            )
    texts = call("prompts") if callable(getattr(task, "prompts", None)) else []
    if not isinstance(texts, (list, tuple)):
        raise ValueError(f"task={name!r}: prompts() must return a list of prompt texts, got a {type(texts).__name__}")
    evaluated = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"task={name!r}: prompts()[{i}] is {text!r:.80}; expected a prompt text (str)")
        meta = call("metadata", text) if callable(getattr(task, "metadata", None)) else {}
        if not isinstance(meta, dict):
            raise ValueError(f"task={name!r}: metadata({text!r:.80}) is a {type(meta).__name__}, not a dict")
        evaluated.append((text, meta))
    return [tuple(item) for item in train], evaluated


def write_final_metrics(cfg) -> dict[str, dict]:
    """``{"base": eval metrics at step 0, "final": at max_steps}``, also written (atomically) to
    ``output_dir/final_metrics.json``. An evaluation that is missing (a resumed run whose ``eval/``
    was moved) is an empty dict there, and said in one line."""
    result = {"base": read_summary(cfg.output_dir, 0), "final": read_summary(cfg.output_dir, cfg.max_steps)}
    for key, step in (("base", 0), ("final", cfg.max_steps)):
        if not os.path.isfile(_summary_file(cfg, step)):  # not `not result[key]`: a task without a judge has {}
            print(f"{_summary_file(cfg, step)} is missing: final_metrics.json has no {key!r} metrics")
    with atomic_file(os.path.join(cfg.output_dir, "final_metrics.json")) as f:
        json.dump(json_safe(result), f, indent=1, allow_nan=False)  # a NaN metric as null
    return result


def evaluate_task(task, cfg, *args, hook: str = "evaluate", **kwargs) -> dict[str, float]:
    """``task.<hook>(*args, **kwargs)`` (``evaluate``; the SFT trainer's ``evaluate_model``) through
    ``genrl.registry.plugin_call``: a plug-in task's (``task`` an import path) refusal or error is one line
    naming the setting (a plug-in's "eval dataset missing" named nothing). Its result is checked
    (``genrl.registry.checked_metrics``): a ``None`` was a traceback after the base evaluation, text was
    written into the logs and failed once the run had trained."""
    import functools

    from genrl.registry import checked_metrics, plugin_call

    evaluate = functools.partial(getattr(task, hook), **kwargs)
    out = plugin_call(evaluate, *args, option="task", name=cfg.task, name_refusals=False)
    return checked_metrics(out, f"task={cfg.task!r}: {hook}()", "evaluation metrics")


def on_main_process(accelerator, fn: Callable[[], dict]) -> dict:
    """``fn()`` on the main process (its result; ``{}`` on the others), then every process learns whether it
    succeeded (one gather, a barrier too): the main process raises its own error, the others a
    :class:`RunFailed` that the command line does not print. Before, an error in the main process's
    evaluation left the others waiting at the next collective until its socket closed, then dying with a
    gloo traceback below the one-line error."""
    if accelerator.num_processes == 1:
        return fn()
    import torch

    out, error = {}, None
    if accelerator.is_main_process:
        try:
            out = fn()
        except BaseException as e:  # shared below, raised after
            error = e
    ok = accelerator.gather(torch.tensor([error is None], device=accelerator.device)).all()
    if error is not None:
        raise error
    if not bool(ok):
        import time

        # the main process exits first: the launcher then names it as the root cause, and its clean-up (a run
        # that completed no step is removed) is not cut short by the SIGTERM the launcher sends the rest
        time.sleep(MAIN_FIRST_S)
        raise RunFailed("the main process stopped (its error is above)")
    return out


MAIN_FIRST_S = 5.0  # seconds the other processes wait before stopping after the main one failed


def check_mixed_precision(tc) -> None:
    """``ConfigError`` (one line, exit 2) for ``train.mixed_precision=fp16`` (``tc``: a ``train`` section)
    without a GPU: accelerate 1.16 enables fp16 autocast off the CPU only (``native_amp`` stays off), so
    the run would train in fp32 and say nothing. Checked by the trainers and benches as they start, and by
    ``genrl compare`` for every arm before any trains; not when the config is read, because a config
    written for a GPU must still load on a CPU machine (``genrl export``, ``genrl gallery``)."""
    import torch

    from genrl.config.base import ConfigError

    if getattr(tc, "mixed_precision", "no") == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            "train.mixed_precision",
            "fp16 autocast runs on a GPU only (accelerate leaves it off on CPU, so this run would be fp32): "
            "use bf16 or 'no' on CPU",
            tc.mixed_precision,
        )


def make_accelerator(tc, seed: int = 0):
    """The run's ``accelerate.Accelerator``: ``train.mixed_precision``'s autocast (:func:`check_mixed_precision`),
    on the GPU when one is visible (else ``cpu=True``), checked against the launch (``genrl.zero.check_launch``).
    ``train.full_determinism`` first switches transformers' ``enable_full_determinism(seed)`` on for this
    process (its environment variables act only where CUDA has not started yet: the trainers build the
    accelerator first); the trainers seed torch again after."""
    import torch
    from accelerate import Accelerator

    from genrl import zero

    check_mixed_precision(tc)
    if getattr(tc, "full_determinism", False):
        from transformers.trainer_utils import enable_full_determinism

        enable_full_determinism(seed)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    zero.check_launch(accelerator)
    return accelerator


def make_optimizer(params, tc):
    """``torch.optim.AdamW`` over ``params`` with a ``train`` section's settings (``OptimizerConfig``:
    lr, betas, eps, weight decay, ``fused_adamw``)."""
    import torch

    return torch.optim.AdamW(
        params,
        lr=tc.lr,
        betas=(tc.adam_beta1, tc.adam_beta2),
        eps=tc.adam_eps,
        weight_decay=tc.weight_decay,
        fused=True if tc.fused_adamw else None,
    )


def lr_multiplier(step: int, cfg) -> float:
    """Learning-rate factor for optimizer step ``step`` (0-based) of ``cfg.train``
    (``ScheduledOptimizerConfig``): linear warmup from 1/(w+1) to 1, then cosine or linear decay to
    ``min_lr_ratio`` at ``cfg.max_steps`` (or constant). Ours rather than transformers'
    ``get_scheduler``: its warmup starts at 0 (this one at 1/(w+1), which the digit_sum SFT figures
    were measured with) and its linear decay has no floor."""
    t = cfg.train
    if step < t.warmup_steps:
        return (step + 1) / (t.warmup_steps + 1)
    if t.lr_schedule == "constant":
        return 1.0
    span = max(cfg.max_steps - t.warmup_steps, 1)
    progress = min((step - t.warmup_steps) / span, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1 - progress
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * shape


class NonFiniteGuard:
    """Skips optimizer steps whose gradient norm is not finite (a NaN or inf loss, or an overflow),
    counts them, and stops the run with a clear error after ``limit`` skipped steps in a row, the
    sign that the weights themselves diverged, instead of finishing with NaN weights. The norm is
    taken after the gradients are reduced, so every process skips the same steps."""

    FIX = (
        "lower train.lr or clip harder (a lower train.max_grad_norm; 0 turns clipping off), or check the objective "
        "(checkpoints written so far hold the last finite weights)"
    )

    def __init__(self, limit: int = 5):
        self.limit, self.in_a_row, self.total, self.taken = int(limit), 0, 0, 0

    def ok(self, grad_norm: float) -> bool:
        """True to take the step; False to skip it (the caller zeroes the gradients). Raises
        ``RunFailed`` at the ``limit``-th non-finite norm in a row."""
        if math.isfinite(grad_norm):
            self.in_a_row = 0
            self.taken += 1
            return True
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            raise RunFailed(
                f"the loss or its gradients were not finite for {self.in_a_row} optimizer steps in a row "
                f"(the weights diverged, or objective.name computes a NaN): {self.FIX}"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        """The counts, saved with each checkpoint: a resumed run goes on counting as an uninterrupted one."""
        return {"in_a_row": self.in_a_row, "total": self.total, "taken": self.taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Counts from :meth:`state_dict` (a checkpoint from before they were saved has none: zeros)."""
        self.in_a_row, self.total, self.taken = (int(state.get(k, 0)) for k in ("in_a_row", "total", "taken"))

    def check_last_step(self) -> None:
        """At the last training step: ``RunFailed`` when every optimizer step of the run was skipped as
        non-finite (a run shorter than ``limit`` steps trained nothing and would otherwise end as a success,
        its final evaluation the base's). Steps left out for having no trained action do not count."""
        if self.total and not self.taken:
            raise RunFailed(
                f"the loss or its gradients were not finite for every optimizer step of this run ({self.total}): "
                f"nothing was trained; {self.FIX}"
            )


def check_finite(named_tensors, what: str = "weights") -> None:
    """``RunFailed`` (one line, exit code 1) naming the first non-finite tensor: a checkpoint is never written
    with NaN or infinite weights. Every process calls it (the weights are replicated, or each checks its
    shards), so none waits at the checkpoint's barrier for one that stopped."""
    for name, t in named_tensors:
        if t.is_floating_point() and not bool(t.isfinite().all()):
            raise RunFailed(
                f"{what}: {name} holds NaN or inf (the weights diverged); not writing a checkpoint: "
                f"{NonFiniteGuard.FIX}"
            )
