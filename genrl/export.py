"""``genrl export RUN_DIR --out DIR``: an aligned model as a standard Diffusers folder.

    genrl export runs/sd35m_flowgrpo --out exported/sd35m-pickscore             # LoRA merged in
    genrl export runs/sd35m_flowgrpo --out exported/sd35m-lora --lora adapter   # PEFT adapter only

Options: ``--lora merge`` (default: adapters fused into the denoiser's weights, a plain
pipeline folder) or ``--lora adapter`` (diffusers' ``pytorch_lora_weights.safetensors`` with
its adapter config, for ``pipe.load_lora_weights(DIR)``); ``--weights ema`` (refused for a run
without an EMA) or ``raw`` (default: the EMA weights when the run kept them, as evaluation uses, else
raw); a run stopped before ``max_steps`` exports its newest checkpoint, with a note; ``--dtype`` of the saved
weights. Full fine-tuning runs save the whole trained pipeline (``--lora adapter`` is refused there).

Loading the result needs only stock diffusers:

* real families: ``DiffusionPipeline.from_pretrained(DIR)``; adapter exports name their base
  model in ``genrl_export.json``: ``pipe = DiffusionPipeline.from_pretrained(BASE);
  pipe.load_lora_weights(DIR)``, then the components genrl set in place of the base's own to sample
  (``policy.sampling_components``: SD1.5's DDIM and Wan's Euler scheduler, HunyuanVideo-1.5's guider),
  shipped in ``DIR/<name>/`` and set by the record's ``load`` line;
* genrl's embedded digits models: the pipeline class ships in the folder as ``pipeline.py``
  (``pipelines/digits.py`` or ``pipelines/moving_digits.py``, with ``flow_sampling.py`` that it
  imports) and ``model_index.json`` names it, diffusers' convention for
  custom pipelines: ``DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)``. Its
  adapter export also holds the base pipeline (it exists nowhere else), so
  ``from_pretrained(DIR, trust_remote_code=True).load_lora_weights(DIR)`` works.
* a ``--dtype float16`` / ``bfloat16`` export: add ``dtype=torch.float16`` (or ``bfloat16``) to
  ``from_pretrained``, as the printed load line and ``genrl_export.json`` do (diffusers before 0.40:
  ``torch_dtype=``).

The folder is written next to ``DIR`` and renamed into place, so a killed export leaves no
half-written model; an existing ``DIR`` is an error unless ``--overwrite``.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
from typing import Optional

from genrl.io import atomic_dir, check_output_dir, run_in_progress
from genrl.policies.base import DTYPES
from pipelines import PIPELINE_MODULES

RECORD = "genrl_export.json"  # what the export wrote (base model, weights, step); marks the folder as an export


class ExportError(ValueError):
    pass


def _save_custom_pipeline_code(pipe, folder: str) -> None:
    """Our own pipeline classes (``pipelines/``): copy the module into the folder as
    ``pipeline.py``, with the sibling modules it imports relatively (found by diffusers' own
    ``get_relative_import_files``, the rule its loader copies them by), and point
    ``model_index.json`` at it, so stock diffusers can load it."""
    from diffusers.utils.dynamic_modules_utils import get_relative_import_files

    module_file = sys.modules[type(pipe).__module__].__file__
    shutil.copyfile(module_file, os.path.join(folder, "pipeline.py"))
    for sibling in get_relative_import_files(module_file):  # at the same place relative to pipeline.py
        target = os.path.join(folder, os.path.relpath(sibling, os.path.dirname(module_file)))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(sibling, target)
    index = os.path.join(folder, "model_index.json")
    with open(index) as f:
        data = json.load(f)
    data["_class_name"] = ["pipeline", type(pipe).__name__]
    with open(index, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def sampling_settings(cfg, policy) -> tuple[dict, dict]:
    """``(sampling, not_in_sampling)``: the keyword arguments of the policy's pipeline's ``__call__`` with which
    the exported pipeline samples what the run ``cfg`` evaluated with: its ODE steps and guidance scale in the
    pipeline's terms (``policy.prepare_export``, which also sets up what the pipeline holds instead, such as
    HunyuanVideo-1.5's guider), and the policy's nonzero ``num_frames`` / ``height`` / ``width`` /
    ``max_sequence_length`` (UMT5 pads prompts to the last, so it changes the samples); and those of the
    policy's settings the ``__call__`` does not take (HunyuanVideo-1.5's text length), which the exported
    pipeline cannot follow."""
    takes = inspect.signature(type(policy.pipe).__call__).parameters
    sized = {
        k: v for k in ("num_frames", "height", "width", "max_sequence_length") if (v := getattr(cfg.policy, k, 0))
    }
    sampling = policy.prepare_export(cfg.eval.num_steps or cfg.policy.num_steps, cfg.eval.guidance_scale)
    return {**sampling, **{k: v for k, v in sized.items() if k in takes}}, {
        k: v for k, v in sized.items() if k not in takes
    }


def _adapter_metadata(denoiser) -> dict:
    cfg = denoiser.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}


def _deepspeed_logs_to_stderr() -> None:
    """transformers' ``save_pretrained`` imports DeepSpeed when it is installed (accelerate's unwrap
    checks for its engine); DeepSpeed binds its log handler to ``sys.stdout`` on import and, without
    CUDA, warns there at once that it could not detect an accelerator. Without CUDA, ``DS_ACCELERATOR=cpu``
    (DeepSpeed's own setting; unless the user set it) says so first, so it has nothing to warn about,
    and importing it with stdout pointing at stderr keeps export's stdout to its one result line."""
    import contextlib
    import importlib.util

    import torch

    if "deepspeed" not in sys.modules and importlib.util.find_spec("deepspeed") is not None:
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401


def cast_components(pipe, dtype):
    """Casts the floating-point parameters and buffers of ``pipe``'s model components to ``dtype``,
    except those inside a module its class keeps in float32 (``_keep_in_fp32_modules``, e.g. Wan's
    norms and time embedder, T5's ``wo``): the rule ``from_pretrained(torch_dtype=...)`` of diffusers
    and transformers applies, a module name matching one dotted part of the parameter's name.
    ``pipe.to(dtype)`` would cast those too (diffusers warns about it). Returns ``pipe``."""
    import torch

    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        keep = set(getattr(component, "_keep_in_fp32_modules", None) or ())
        for name, tensor in [*component.named_parameters(), *component.named_buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return pipe


def export(
    run_dir: str,
    out: str,
    lora: str = "merge",
    weights: Optional[str] = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict:
    """Write the run's final model (its newest checkpoint) to ``out``; returns what ``genrl_export.json``
    records. ``weights``: ``"ema"``, ``"raw"`` or None (the EMA weights when the run kept them, else
    raw); an explicit ``"ema"`` for a run without an EMA is an ``ExportError``, not raw weights."""
    from genrl.run_dir import check_run, load_run_config, load_run_policy

    if lora not in ("merge", "adapter"):
        raise ExportError(f"--lora must be 'merge' or 'adapter', not {lora!r}")
    if weights not in ("ema", "raw", None):
        raise ExportError(f"--weights must be 'ema' or 'raw', not {weights!r}")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    run_cfg = load_run_config(*check_run(run_dir))  # a bad RUN_DIR: its one line, before any heavy import
    if weights == "ema" and not getattr(run_cfg.train, "ema_decay", 0):
        why = (
            "train.ema_decay is 0" if hasattr(run_cfg.train, "ema_decay") else f"trainer {run_cfg.trainer} keeps none"
        )
        raise ExportError(f"--weights ema: {run_dir} kept no EMA ({why}); leave --weights out, or give raw")
    if lora == "adapter" and run_cfg.policy.lora.rank == 0:
        raise ExportError(
            f"--lora adapter: {run_dir} fine-tunes the whole denoiser (policy.lora.rank=0), so it has no adapter; "
            "export it without --lora (the whole pipeline)"
        )
    try:  # every path error before the model loads; --overwrite never replaces the run itself, nor the user's files
        check_output_dir(out, "--out", overwrite=overwrite, protect=(run_dir,), written_by=("genrl export", (RECORD,)))
    except ValueError as e:
        raise ExportError(str(e)) from None
    from peft.utils import get_peft_model_state_dict

    _deepspeed_logs_to_stderr()
    cfg, policy, info = load_run_policy(run_dir, ema=weights != "raw")
    pipe = getattr(policy, "pipe", None)
    if pipe is None:
        raise ExportError(f"policy {cfg.policy.name!r} does not wrap a diffusers pipeline; nothing to export")
    denoiser = policy.module
    custom = PIPELINE_MODULES.get(type(pipe).__name__) == type(pipe).__module__  # genrl's own pipeline class
    uses_lora = cfg.policy.lora.rank > 0
    mode = lora if uses_lora else "full"
    # stock from_pretrained loads diffusers' parts in float32 and transformers' text encoders as saved: a half
    # export loaded without dtype ran fp16 prompt embeddings into a float32 transformer ("Input type (Half) and
    # bias type (float) should be the same"), so the load line names the dtype
    remote, as_saved = (
        (", trust_remote_code=True" if custom else ""),
        ("" if dtype == "float32" else f", dtype=torch.{dtype}"),
    )
    sampling, not_in_sampling = sampling_settings(cfg, policy)
    record = {
        "run_dir": os.path.abspath(run_dir),
        "step": info["step"],
        "max_steps": cfg.max_steps,  # a run stopped early exports its newest checkpoint's step
        "skipped_steps": info["skipped"],  # newer checkpoints that could not be read (damaged)
        "weights": "ema" if info["ema"] else "raw",
        "mode": mode,
        "dtype": dtype,
        "base_model": cfg.policy.model,
        "pipeline_class": type(pipe).__name__,
        "sampling": sampling,  # what the run evaluated with: pipe(prompt, **sampling) reproduces its ODE samples
        "not_in_sampling": not_in_sampling,
        "load": f"DiffusionPipeline.from_pretrained(DIR{remote}{as_saved})",
    }
    with atomic_dir(out) as tmp:  # a crash leaves no half export; an --overwrite swaps the old one out
        if mode == "adapter":
            saver = getattr(type(pipe), "save_lora_weights", None)
            if saver is None:
                raise ExportError(f"{type(pipe).__name__} has no LoRA loader in diffusers; export with --lora merge")
            layers = {k: v.to(DTYPES[dtype]) for k, v in get_peft_model_state_dict(denoiser).items()}  # --dtype
            params = inspect.signature(saver).parameters  # SD1.5's loader names the UNet, the DiTs' the transformer
            part = next((n for n in ("transformer", "unet") if f"{n}_lora_layers" in params), None)
            if part is None:
                raise ExportError(
                    f"{type(pipe).__name__}.save_lora_weights takes no denoiser layers; use --lora merge"
                )
            kwargs = {f"{part}_lora_layers": layers}
            if f"{part}_lora_adapter_metadata" in params:
                kwargs[f"{part}_lora_adapter_metadata"] = _adapter_metadata(denoiser)  # keeps alpha / rank
            saver(tmp, **kwargs)
            record["load"] = (
                f"pipe = DiffusionPipeline.from_pretrained({'DIR' if custom else 'BASE'}{remote}{as_saved}); "
                "pipe.load_lora_weights(DIR)"
            )
            if custom:  # the embedded base exists nowhere else: ship it beside the adapter
                denoiser.unload_lora()
                cast_components(pipe, DTYPES[dtype]).save_pretrained(tmp)
                _save_custom_pipeline_code(pipe, tmp)
            else:  # what the policy set in place of the base's own (a DDIM or Euler scheduler, a guider)
                for name in policy.sampling_components:
                    component = getattr(pipe, name)
                    component.save_pretrained(os.path.join(tmp, name))
                    record["load"] += (
                        f"; pipe.{name} = diffusers.{type(component).__name__}.from_pretrained(DIR, subfolder={name!r})"
                    )
        else:
            if mode == "merge":
                denoiser.fuse_lora()
                denoiser.unload_lora()
            cast_components(pipe, DTYPES[dtype]).save_pretrained(tmp)
            if custom:
                _save_custom_pipeline_code(pipe, tmp)
        with open(os.path.join(tmp, RECORD), "w") as f:
            json.dump(record, f, indent=1)
    return record


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's final model as a standard Diffusers pipeline folder")
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="a finished (or checkpointed) run of trainer online or preference"
    )
    p.add_argument("--out", required=True, help="the new folder")
    p.add_argument(
        "--lora",
        choices=["merge", "adapter"],
        default="merge",
        help="merge: adapters fused into the weights (default); adapter: pytorch_lora_weights.safetensors",
    )
    p.add_argument(
        "--weights",
        choices=["ema", "raw"],
        default=None,
        help="ema: the EMA weights (refused for a run without one); raw: the trained weights; default: the EMA "
        "weights when the run kept them (what evaluation uses), else raw",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=_main)


def _main(args) -> int:
    """``genrl export``; its errors (``ExportError``, ``RunDirError``: ``ValueError``) reach ``genrl.cli``,
    which prints them as one line and exits 2."""
    record = export(args.run_dir, args.out, args.lora, args.weights, args.dtype, args.overwrite)
    step, skipped = record["step"], record["skipped_steps"]
    if skipped:  # a finished run whose newest checkpoint is damaged is no stopped run
        print(
            f"genrl export: note: {args.run_dir}'s newer checkpoint(s) of step {', '.join(map(str, skipped))} cannot "
            f"be read (warned above): exported step {step}, the newest readable one",
            file=sys.stderr,
        )
    reached = max([step, *skipped])
    if reached < record["max_steps"]:
        at = f"step {reached} of max_steps {record['max_steps']}"
        print(
            f"genrl export: note: {args.run_dir} is still training (on this machine), at {at}; exported step "
            f"{step} (export again when it has finished)"
            if run_in_progress(args.run_dir)
            else f"genrl export: note: {args.run_dir} stopped at {at}: exported step {step}'s weights (rerun the "
            "training command to finish it)",
            file=sys.stderr,
        )
    if missing := record["not_in_sampling"]:
        print(
            f"genrl export: note: {record['pipeline_class']}.__call__ takes no {', '.join(missing)}: sampling with "
            f"the export uses its default, not the run's ({', '.join(f'{k}={v}' for k, v in missing.items())})",
            file=sys.stderr,
        )
    print(
        f"genrl export: wrote {args.out} ({record['mode']}, {record['weights']} weights, step {record['step']}); "
        f"load with {record['load']}"
    )
    return 0
