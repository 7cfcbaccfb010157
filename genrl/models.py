"""One resolver for model names, and the explicit step that prepares the models a config names.

Model fields (``policy.model``, the SFT config's ``model``, the clip reward's ``model``, the videoalign
reward's ``checkpoint``) take:

* ``task:<name>``: a model the embedded task ``<name>`` owns, built or trained here and cached
  (``genrl.protocols.EmbeddedTask``). ``kind`` says which of its models: ``policy`` (the base
  model the policy loads) or a reward model (the reward's name: the digits task's ``clip``, the
  moving_digits task's ``videoalign``);
* ``sft:<config.yaml>``: the final model (``<output_dir>/model``) of that SFT run;
* anything else: a local folder or a hub id, passed on unchanged (the loaders check it).

Resolving never trains. Building a missing model is ``prepare_models(cfg)`` (and
``prepare_model``), a logged step that ``genrl prepare CONFIG`` runs, and that ``genrl train``,
``gallery`` and ``bench`` run first; a loader that meets an unprepared model raises a
``ValueError`` naming the command that builds it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from typing import Any, Optional

from genrl.io import cache_root, check_cache_dir, read_json
from genrl.registry import TASKS

TASK, SFT = "task:", "sft:"
MODEL_OPTIONS = ("model", "checkpoint")  # the reward_args options that name a model (clip's, videoalign's)
SFT_POLICY = "vlm"  # the policy that loads an SFT run's model: genrl.trainers.sft trains vision-language models
TASK_INFO = "genrl_task.json"  # how a model built here was made; written last, so its presence means ready


def write_task_info(folder: str | os.PathLike, info: dict) -> None:
    """Write ``info`` (JSON-able: steps, seed, measured accuracies) to ``folder``/``TASK_INFO``, indented.
    Call it last, inside the ``genrl.io.atomic_dir`` that writes the model, so a reader that finds it finds
    the whole folder."""
    with open(os.path.join(folder, TASK_INFO), "w", encoding="utf-8") as f:
        f.write(json.dumps(info, indent=2) + "\n")


def read_task_info(folder: str | os.PathLike) -> Optional[dict]:
    """``folder``'s ``TASK_INFO`` as a dict; None when it is missing, unreadable, not JSON or not an object
    (a model whose record is damaged counts as not built, and is built again)."""
    try:
        info = read_json(os.path.join(folder, TASK_INFO))
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def absolute_model(model: str) -> str:
    """``model`` as a run's saved ``config.yaml`` should name it, the same from any folder: a local folder
    made absolute when it exists here (``~`` expanded in any path). ``task:`` names and hub ids are kept as
    written; so is an ``sft:`` name: its config's own ``output_dir`` may be relative to the launch folder,
    and resolved from another folder it would name (and train) another model, where a relative ``sft:``
    path fails there naming the folder."""
    from genrl.config.checks import local_path

    if model.startswith((TASK, SFT)):
        return model
    return local_path(model, existing_only=True)


def model_owners() -> list[str]:
    """The registered tasks that own models (have ``prepare``): those ``task:<name>`` may name."""
    return [n for n in TASKS.names() if callable(getattr(TASKS.get(n), "prepare", None))]


def model_task(name: str) -> type:
    """The embedded task class ``task:<name>`` names: one that owns models (has ``prepare``).
    ``ValueError`` for an unknown task or one that owns none (``prompts``: it reads prompt files), naming
    the tasks that do."""
    owners = model_owners()
    try:
        cls = TASKS.get(name)
    except ValueError:
        raise ValueError(f"no task {name!r}; tasks that own a model: {', '.join(owners)}") from None
    if not callable(getattr(cls, "prepare", None)):
        raise ValueError(f"task {name!r} owns no model; tasks that do: {', '.join(owners)}")
    return cls


def model_policy(model: str) -> Optional[str]:
    """The policy (``policy.name``) that loads the model ``model`` names: a ``task:<name>`` model's task's
    ``policy_name``, ``SFT_POLICY`` for an ``sft:`` run's model, None for a folder or hub id (only loading
    tells). ``ValueError`` for a task that is unknown or owns no model (``model_task``)."""
    if model.startswith(TASK):
        return model_task(model[len(TASK) :]).policy_name
    return SFT_POLICY if model.startswith(SFT) else None


def check_model_kind(task, kind: str) -> None:
    """A ``ValueError`` unless ``kind`` is one of ``task.MODELS`` (the models an embedded task owns)."""
    if kind not in task.MODELS:
        raise ValueError(f"task {task.name!r} has no {kind!r} model; its models: {', '.join(task.MODELS)}")


class EmbeddedModelTask:
    """Base of a task that owns models built here (``policy.model: task:<name>``): each kind in
    ``MODELS`` is a folder, ready once its ``TASK_INFO`` (``genrl_task.json``) exists (written last, atomically).

    A subclass sets ``name``, ``MODELS`` and ``model_dir`` (the ``policy`` folder) and implements
    ``build(path, progress)``, which writes that folder; a task with further kinds overrides
    ``model_path`` / ``is_prepared`` / ``prepare`` for them. Embedded tasks take no options, so
    ``from_config`` ignores the config."""

    name: str
    MODELS: tuple[str, ...] = ("policy",)
    # reward models the task trains here, besides its policy: kind -> the module defining
    # reward_model_path(cache_dir), reward_model_ready(cache_dir) and prepare_reward_model(cache_dir,
    # progress=...); imported only when asked for (genrl never imports the rewards package eagerly)
    REWARD_MODELS: dict[str, str] = {}
    cache_dir: Optional[str] = None
    # the class name of the policy pipeline ``build`` writes: config validation finds its model family by it,
    # before the model is built (``genrl.families.base.family_before_loading``)
    pipeline_class: Optional[str] = None
    # the policy (``policy.name``) that loads the ``policy`` model: config validation refuses another one
    # before anything is built (``model_policy``)
    policy_name: str = "flow"

    @classmethod
    def from_config(cls, cfg):
        """The task a trainer config asks for (an embedded task takes no options)."""
        return cls()

    def _reward_model(self, kind: str):
        """The module that builds the reward model ``kind`` (``REWARD_MODELS``), or None for the policy."""
        check_model_kind(self, kind)
        return importlib.import_module(self.REWARD_MODELS[kind]) if kind in self.REWARD_MODELS else None

    def model_path(self, kind: str = "policy") -> str:
        """Where the model ``kind`` lives, built or not."""
        module = self._reward_model(kind)
        return str(module.reward_model_path(self.cache_dir) if module else self.model_dir)

    def is_prepared(self, kind: str = "policy") -> bool:
        module = self._reward_model(kind)
        return module.reward_model_ready(self.cache_dir) if module else read_task_info(self.model_dir) is not None

    def prepare(self, progress: bool = True, kind: str = "policy") -> str:
        """Path of the model ``kind``, built first (by ``build``, or the reward model's module; logged)
        if missing. In multi-process runs call this on the main process first: the write is atomic,
        so a concurrent reader sees either no folder or a complete one."""
        module = self._reward_model(kind)
        ready = self.is_prepared(kind)
        if not ready:
            check_cache_dir(cache_root(self.cache_dir))  # before the build, not after it
        if module:
            return module.prepare_reward_model(self.cache_dir, progress=progress)
        if not ready:
            self.build(self.model_dir, progress)
        return str(self.model_dir)


def _sft_model_dir(config_path: str) -> tuple[Any, str]:
    from genrl.config import SFTConfig, load_config

    if not os.path.isabs(config_path) and not os.path.exists(config_path):  # the shipped recipes name repo paths
        raise ValueError(
            f"sft:{config_path}: no such config file in the current directory ({os.getcwd()}): a relative sft: "
            f"path is read from where you run genrl (the shipped recipes: the repository's root); or give it absolute"
        )
    cfg = load_config(SFTConfig, config_path)
    return cfg, os.path.join(cfg.output_dir, "model")


def resolve_model(model: str, kind: str = "policy") -> str:
    """The folder (or hub id) ``model`` names (see the module docstring). A ``task:`` or ``sft:``
    model that is not built yet is a ``ValueError`` naming ``genrl prepare``; nothing is trained."""
    if model.startswith(TASK):
        task = model_task(model[len(TASK) :])()
        path = task.model_path(kind)
        if not task.is_prepared(kind):
            raise ValueError(
                f"model {model!r} ({kind}) is not built yet: run `genrl prepare {model[len(TASK) :]}` "
                f"(genrl train, gallery, bench and export do it first)"
            )
        return str(path)
    if model.startswith(SFT):
        _, path = _sft_model_dir(model[len(SFT) :])
        if not os.path.isdir(path):
            raise ValueError(
                f"model {model!r}: no SFT model at {path}: run `genrl prepare {model[len(SFT) :]}` or "
                f"`genrl train {model[len(SFT) :]}` first"
            )
        return path
    return model


def prepare_model(model: str, kind: str = "policy", progress: bool = True) -> str:
    """Build ``model`` if it is a ``task:`` or ``sft:`` model that is missing (logged), then resolve it."""
    if model.startswith(TASK):
        model_task(model[len(TASK) :])().prepare(progress=progress, kind=kind)
    elif model.startswith(SFT):
        sft_cfg, path = _sft_model_dir(model[len(SFT) :])
        if not os.path.isdir(path):
            print(f"genrl: preparing {model}: running the SFT config {model[len(SFT) :]} into {path}", flush=True)
            from genrl.trainers.sft import train

            train(sft_cfg)  # prepares its own task: model first
    return resolve_model(model, kind)


# ----------------------------------------------------------------------------- fingerprints of a base model

WHOLE_HASH_UP_TO = 64 << 20  # bytes: a larger file (weights) is identified by genrl.io.sampled_sha256
BUILD_STAMPS = ("_diffusers_version", "transformers_version", "_name_or_path", "_commit_hash")  # not settings


def model_fingerprint(model: str, kind: str = "policy") -> dict[str, str]:
    """``{file: fingerprint}`` of the files of the model ``model`` names (:func:`resolve_model`; a hub id:
    its snapshot in the local hub cache, as the loaders find it), by path relative to the model's folder,
    hidden files and folders left out, and anything but regular files (a dangling link, a FIFO), each folder
    walked once (a link to a folder above it); ``{}`` when there is no such folder here (a hub id not
    downloaded); a file that cannot be read is ``UNREADABLE``.
    A file up to ``WHOLE_HASH_UP_TO`` bytes: the sha256 of its bytes, or for a JSON config of its settings
    without the library-version stamps ``BUILD_STAMPS`` (the same model saved by another diffusers
    version); a larger one: ``genrl.io.sampled_sha256``, its size and 16 evenly spaced 1 MiB blocks
    (reading SD3.5's 10 GB of text encoders whole would delay every start and export by a minute). Every
    checkpoint keeps the policy's (``base_model``), so that a resume, an export or a gallery that would put
    the trained weights onto another base model is refused (:func:`changed_model_files`)."""
    folder = resolve_model(model, kind)
    if not os.path.isdir(folder):
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder, local_files_only=True)
        except (OSError, ValueError):  # not in the hub cache, or no hub id: nothing to compare
            return {}
    out, seen = {}, set()
    for root, dirs, files in os.walk(folder, followlinks=True):  # the hub cache's snapshots are links
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in files if not n.startswith(".")):
            path = os.path.join(root, name)
            if os.path.isfile(path):  # regular files: not a dangling link, a FIFO (reading one blocks) or a socket
                out[os.path.relpath(path, folder).replace(os.sep, "/")] = _file_fingerprint(path)
    return out


UNREADABLE = "unreadable"  # model_fingerprint's entry for a file it may not read


def _file_fingerprint(path: str) -> str:
    from genrl.io import file_sha256, sampled_sha256

    try:
        if os.path.getsize(path) > WHOLE_HASH_UP_TO:
            return f"sampled sha256 {sampled_sha256(path)}"
        if path.endswith(".json") and isinstance(settings := _json_or_none(path), dict):
            kept = {k: v for k, v in settings.items() if k not in BUILD_STAMPS}
            return f"settings sha256 {hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()}"
        return f"sha256 {file_sha256(path)}"
    except OSError:  # a file the loaders need fails them, naming it; one they never read (notes) is no refusal
        return UNREADABLE


def _json_or_none(path: str) -> Any:
    try:
        return read_json(path)
    except ValueError:
        return None


def changed_model_files(recorded: Optional[dict], now: dict) -> str:
    """The files of ``recorded`` (a checkpoint's :func:`model_fingerprint`) that ``now`` lacks or fingerprints
    otherwise, as one text (the first three, then how many more); ``""`` when none, or when either side is
    empty (a checkpoint written before they were kept, or a hub model not in this machine's cache). Files
    added since do not count: a hub snapshot gains the files later loads download."""
    if not recorded or not now:
        return ""
    changed = [
        f"{f} {'is missing' if f not in now else 'cannot be read' if now[f] == UNREADABLE else 'differs'}"
        for f in recorded
        if now.get(f) != recorded[f]
    ]
    more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
    return f"{', '.join(changed[:3])}{more}"


def policy_model(cfg) -> Optional[str]:
    """The model a trainer config's policy starts from: ``policy.model``, or the SFT config's ``model``."""
    model = getattr(getattr(cfg, "policy", None), "model", None) or getattr(cfg, "model", None)
    return model if isinstance(model, str) else None


def config_models(cfg) -> list[tuple[str, str]]:
    """``[(model, kind)]`` a trainer config names: the policy's (or the SFT config's) model and
    each reward's ``model`` (or ``checkpoint``) option that is a ``task:`` / ``sft:`` name (kind = the
    reward's name)."""
    policy = policy_model(cfg)
    out = [(policy, "policy")] if policy is not None else []
    for name, args in (getattr(cfg, "reward_args", None) or {}).items():
        m = next((args[k] for k in MODEL_OPTIONS if args.get(k)), None) if isinstance(args, dict) else None
        if isinstance(m, str) and m.startswith((TASK, SFT)):
            out.append((m, name))
    return out


def prepare_models(cfg, progress: bool = True) -> list[str]:
    """Build every missing ``task:`` / ``sft:`` model ``cfg`` names (logged); returns their paths.
    ``ValueError`` for an ``sft:`` model that is ``cfg``'s own run (its config writes to
    ``cfg.output_dir``): it was trained in full, then the run refused to resume with other settings.
    Building shows a progress bar unless ``progress`` is false or ``cfg.log.progress_bar`` is."""
    progress = progress and getattr(getattr(cfg, "log", None), "progress_bar", True)
    models = [(m, kind) for m, kind in config_models(cfg) if m.startswith((TASK, SFT))]
    own = os.path.abspath(cfg.output_dir)
    for m in (m for m, _ in models if m.startswith(SFT)):
        if os.path.abspath(_sft_model_dir(m[len(SFT) :])[0].output_dir) == own:
            raise ValueError(
                f"model {m!r} is this run's own output ({cfg.output_dir}): name the SFT run to start from"
            )
    return [prepare_model(m, kind, progress) for m, kind in models]
