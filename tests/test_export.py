"""``genrl export``: a tiny SD3 pipeline, the digits model and the moving-digits video model, trained
2 steps, exported merged (and as an adapter), loaded in a fresh Python process with stock diffusers
only, give exactly genrl's own ODE samples of the trained run for the same seeds."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY_ONLINE
from families import dummy_sd3

from genrl.config import OnlineConfig, load_config
from genrl.export import ExportError, export
from genrl.run_dir import load_run_policy
from genrl.tasks.digits import pretrain
from genrl.trainers.online import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    *TINY_ONLINE,
    "eval.seeds_per_prompt=1",
    "eval.every=0",
    "log.report_to=[]",
    "train.lr=2e-2",
]

# Runs in a fresh interpreter: stock diffusers only, genrl never imported.
LOADER = r"""
import json, sys, torch
from diffusers import DiffusionPipeline
folder, base, prompts, seeds, steps, guidance, extra, out = sys.argv[1:]
kw = {"trust_remote_code": True} if base == "custom" else {}
if base in ("", "custom"):
    pipe = DiffusionPipeline.from_pretrained(folder, **kw)
else:
    pipe = DiffusionPipeline.from_pretrained(base)
if base == "custom" or base not in ("",):
    if __import__("os").path.isfile(folder + "/pytorch_lora_weights.safetensors"):
        pipe.load_lora_weights(folder)
gens = [torch.Generator().manual_seed(int(s)) for s in seeds.split(",")]
result = pipe(prompts.split("|"), num_inference_steps=int(steps), guidance_scale=float(guidance), generator=gens,
              output_type="pt", **json.loads(extra))
images = result.frames if hasattr(result, "frames") else result.images  # video pipelines: frames
assert not any(m.split(".")[0] in ("genrl", "pipelines") for m in sys.modules), "genrl was imported"
torch.save(images, out)
"""


def _load_in_fresh_process(tmp_path, folder, base, prompts, seeds, steps, guidance, extra=None):
    out = tmp_path / f"stock-{os.path.basename(folder)}.pt"
    args = [str(folder), base, "|".join(prompts), ",".join(map(str, seeds)), str(steps), str(guidance)]
    _run_stock(tmp_path, LOADER, *args, json.dumps(extra or {}), str(out))
    return torch.load(out)


def _run_stock(tmp_path, script: str, *args: str) -> None:
    """``script`` in a fresh interpreter in ``tmp_path``: genrl off the path, the hub offline."""
    (tmp_path / "stock_script.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "stock_script.py", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _genrl_samples(run_dir, prompts, seeds, steps, guidance):
    _, policy, info = load_run_policy(str(run_dir))
    assert info["step"] == 2
    return policy.sample(prompts, seeds, steps, guidance).float(), policy


@pytest.fixture(scope="module")
def sd3_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-sd3")
    dummy_sd3.build().save_pretrained(root / "base")
    (root / "prompts.txt").write_text("\n".join(dummy_sd3.PROMPTS) + "\n")
    cfg = load_config(
        OnlineConfig,
        os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"),
        [
            *TINY,
            f"output_dir={root / 'run'}",
            f"policy.model={root / 'base'}",
            "task=prompts",
            f"data.train_files=[{root / 'prompts.txt'}]",
            "rewards={jpeg_incompressibility: 1.0}",
            "policy.height=32",
            "policy.width=32",
            "policy.max_sequence_length=8",
            "policy.lora.target_modules=null",
            "policy.lora.alpha=16",
        ],
    )
    train(cfg)
    return root


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_sd3_merged_export_loads_in_stock_diffusers_and_matches(sd3_run, tmp_path, guidance):
    prompts, seeds = dummy_sd3.PROMPTS[:2], [5, 6]
    ours, policy = _genrl_samples(sd3_run / "run", prompts, seeds, 4, guidance)
    with torch.no_grad(), policy.reference():  # training moved the model: the base gives other images
        base = policy.sample(prompts, seeds, 4, guidance).float()
    assert (ours - base).abs().max() > 1e-3
    out = tmp_path / "merged"
    record = export(str(sd3_run / "run"), str(out))
    assert record["mode"] == "merge" and not (out / "pytorch_lora_weights.safetensors").exists()
    stock = _load_in_fresh_process(
        tmp_path, out, "", prompts, seeds, 4, guidance, {"height": 32, "width": 32, "max_sequence_length": 8}
    )
    torch.testing.assert_close(stock.float(), ours, rtol=1e-4, atol=1e-5)


def test_sd3_adapter_export_loads_onto_the_base_pipeline(sd3_run, tmp_path):
    prompts, seeds = dummy_sd3.PROMPTS[1:], [0, 1]
    ours, _ = _genrl_samples(sd3_run / "run", prompts, seeds, 4, 1.0)
    out = tmp_path / "adapter"
    record = export(str(sd3_run / "run"), str(out), lora="adapter")
    assert record["mode"] == "adapter" and (out / "pytorch_lora_weights.safetensors").is_file()
    assert not (out / "model_index.json").exists()  # only the adapter: the base is named in genrl_export.json
    assert json.loads((out / "genrl_export.json").read_text())["base_model"] == str(sd3_run / "base")
    stock = _load_in_fresh_process(
        tmp_path,
        out,
        str(sd3_run / "base"),
        prompts,
        seeds,
        4,
        1.0,
        {"height": 32, "width": 32, "max_sequence_length": 8},
    )
    torch.testing.assert_close(stock.float(), ours, rtol=1e-4, atol=1e-5)


# Loads an export the way its genrl_export.json "load" line says (what `genrl export` prints), stock diffusers only.
AS_PRINTED = r"""
import json, sys, torch
import diffusers
from diffusers import DiffusionPipeline
folder, prompts, extra, out = sys.argv[1:]
record = json.load(open(folder + "/genrl_export.json"))
line = record["load"].replace("DIR", repr(folder)).replace("BASE", repr(record["base_model"]))
scope = {"DiffusionPipeline": DiffusionPipeline, "torch": torch, "diffusers": diffusers}
exec(line if line.startswith("pipe = ") else "pipe = " + line, scope)
gens = [torch.Generator().manual_seed(s) for s in range(len(prompts.split("|")))]
result = scope["pipe"](prompts.split("|"), generator=gens, output_type="pt", **record["sampling"], **json.loads(extra))
torch.save(result.images.float(), out)
"""


@pytest.mark.parametrize("lora", ["merge", "adapter"])
def test_a_half_precision_export_loads_as_its_record_says(sd3_run, tmp_path, lora):
    """``--dtype float16`` of a stock-diffusers model loaded as the printed line said (no dtype) ran the text
    encoders in fp16 into a float32 transformer: "Input type (c10::Half) and bias type (float) should be the same"."""
    prompts = dummy_sd3.PROMPTS[:2]
    out = tmp_path / lora
    record = export(str(sd3_run / "run"), str(out), lora=lora, dtype="float16")
    assert "dtype=torch.float16" in record["load"]
    sampling = record["sampling"]
    ours, _ = _genrl_samples(
        sd3_run / "run", prompts, [0, 1], sampling["num_inference_steps"], sampling["guidance_scale"]
    )
    assert sampling["max_sequence_length"] == 8  # the run's text length: it had to be passed beside sampling
    _run_stock(tmp_path, AS_PRINTED, str(out), "|".join(prompts), "{}", "out.pt")
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), ours, rtol=0, atol=5e-2)  # fp16 weights


@pytest.mark.parametrize("lora", ["merge", "adapter"])
def test_an_sd15_export_samples_with_the_ddim_scheduler_the_run_used(tmp_path, lora):
    """The diffusion policy swaps SD1.5's shipped PNDM for DDIM (DDPO); a merged export saves the swapped
    scheduler, but an adapter export is loaded onto the base, which had only PNDM: loaded as printed, it
    sampled with PNDM. It now ships the DDIM scheduler beside the adapter and its load line sets it."""
    from diffusers import PNDMScheduler
    from test_diffusion_policy import PROMPTS as SD15_PROMPTS
    from test_diffusion_policy import build as build_sd15

    build_sd15(scheduler_cls=PNDMScheduler).save_pretrained(tmp_path / "base")
    (tmp_path / "prompts.txt").write_text("\n".join(SD15_PROMPTS) + "\n")
    overrides = [*TINY, f"output_dir={tmp_path / 'run'}", f"policy.model={tmp_path / 'base'}", "task=prompts"]
    overrides += [f"data.train_files=[{tmp_path / 'prompts.txt'}]", "rewards={jpeg_incompressibility: 1.0}"]
    overrides += ["policy.name=diffusion", "policy.sde=ddim", "policy.eta=1.0", "policy.height=32", "policy.width=32"]
    overrides += ["policy.lora.target_modules=null", "policy.lora.alpha=16", "eval.guidance_scale=2.0"]
    train(load_config(OnlineConfig, os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"), overrides))
    prompts = SD15_PROMPTS[:2]
    record = export(str(tmp_path / "run"), str(tmp_path / lora), lora=lora)
    ours, _ = _genrl_samples(tmp_path / "run", prompts, [0, 1], record["sampling"]["num_inference_steps"], 2.0)
    if lora == "adapter":
        assert record["load"].endswith(
            "; pipe.scheduler = diffusers.DDIMScheduler.from_pretrained(DIR, subfolder='scheduler')"
        )
    _run_stock(tmp_path, AS_PRINTED, str(tmp_path / lora), "|".join(prompts), "{}", "out.pt")
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), ours, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-digits")
    base = pretrain(root / "base", steps=5, progress=False)
    train(
        load_config(
            OnlineConfig,
            os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"),
            [*TINY, f"output_dir={root / 'run'}", f"policy.model={base}", "train.ema_decay=0.5"],
        )
    )
    return root / "run"


@pytest.mark.parametrize("lora", ["merge", "adapter"])
def test_digits_export_loads_with_its_own_pipeline_code(digits_run, tmp_path, lora):
    prompts, seeds = ["a handwritten digit three", "a handwritten digit eight"], [0, 9]
    ours, _ = _genrl_samples(digits_run, prompts, seeds, 6, 1.0)
    out = tmp_path / lora
    record = export(str(digits_run), str(out), lora=lora)
    assert record["weights"] == "ema"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == ["pipeline", "DigitsPipeline"]
    assert (out / "pipeline.py").is_file() and (out / "flow_sampling.py").is_file()  # with what it imports
    stock = _load_in_fresh_process(tmp_path, out, "custom", prompts, seeds, 6, 1.0)
    torch.testing.assert_close(stock.float(), ours, rtol=1e-4, atol=1e-5)


def test_export_refuses_to_overwrite_and_names_bad_options(digits_run, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="exists"):
        export(str(digits_run), str(tmp_path / "taken"))
    with pytest.raises(ExportError, match="--lora"):
        export(str(digits_run), str(tmp_path / "x"), lora="fuse")
    assert not (tmp_path / "x").exists()
    export(str(digits_run), str(tmp_path / "e"))
    with pytest.raises(ExportError, match="exists"):
        export(str(digits_run), str(tmp_path / "e"))
    export(str(digits_run), str(tmp_path / "e"), overwrite=True)  # an earlier export: replaced
    assert (tmp_path / "e" / "genrl_export.json").is_file()


def test_export_never_replaces_its_run_and_checks_out_before_loading(digits_run, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "run"
    shutil.copytree(digits_run, run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    monkeypatch.setattr("genrl.run_dir.load_run_policy", lambda *a, **k: pytest.fail("loaded before checking --out"))
    for out in (run, run.parent):  # --overwrite would have deleted the run (and, above it, its neighbours)
        with pytest.raises(ExportError, match=r"is \(or holds\) the input"):
            export(str(run), str(out), overwrite=True)
    for out in (run / "checkpoints", run / "checkpoints" / "step-000002"):  # --overwrite replaced them
        with pytest.raises(ExportError, match=r"lies inside the input .* and exists"):
            export(str(run), str(out), overwrite=True)
    (tmp_path / "afile").write_text("x")
    for out, message in (("", "--out is empty"), (tmp_path / "afile" / "x", "afile is a file, not a folder")):
        with pytest.raises(ExportError, match=message):
            export(str(run), str(out))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    # --overwrite deleted any folder: the user's data (the run's own winners, say); it replaces earlier exports only
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.jsonl").write_text("{}\n")
    with pytest.raises(ExportError, match=r"^--out='.*data' holds files that no genrl export wrote"):
        export(str(run), str(tmp_path / "data"), overwrite=True)
    assert os.listdir(tmp_path / "data") == ["w.jsonl"]


def test_export_prepares_the_policy_model_only(digits_run, tmp_path, monkeypatch):
    """Rewards are not exported, so a cleared cache must not make export train them (minutes)."""
    import genrl.models

    asked, prepare = [], genrl.models.prepare_model
    monkeypatch.setattr(genrl.models, "prepare_model", lambda m, *a, **k: asked.append(m) or prepare(m, *a, **k))
    monkeypatch.setattr(genrl.models, "prepare_models", lambda *a, **k: pytest.fail("prepared every model"))
    export(str(digits_run), str(tmp_path / "out"))
    assert asked == [load_config(OnlineConfig, str(digits_run / "config.yaml")).policy.model]


def test_export_skips_an_unreadable_newest_checkpoint_and_keeps_dtype_and_sampling(digits_run, tmp_path):
    from safetensors import safe_open

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    newest = run / "checkpoints" / "step-000003"
    shutil.copytree(run / "checkpoints" / "step-000002", newest)
    (newest / "state.pt").write_bytes(b"\x80\x02not a checkpoint")  # complete on disk, unreadable
    with pytest.warns(UserWarning, match="skipping an unreadable checkpoint.*step-000003"):
        record = export(str(run), str(tmp_path / "adapter"), lora="adapter", dtype="bfloat16")
    assert record["step"] == 2 and record["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "adapter" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # --dtype reaches the adapter too
    cfg = load_config(OnlineConfig, str(run / "config.yaml"))
    assert record["sampling"] == {
        "num_inference_steps": cfg.eval.num_steps or cfg.policy.num_steps,
        "guidance_scale": cfg.eval.guidance_scale,
    }
    assert json.loads((tmp_path / "adapter" / "genrl_export.json").read_text())["sampling"] == record["sampling"]


def test_a_video_run_exports_and_loads_with_its_own_pipeline_code(moving_run, tmp_path):
    """The moving-digits FlowGRPO run (tests/conftest.py): stock diffusers reproduces its clips."""
    prompts, seeds = ["a handwritten digit three moving left", "a handwritten digit eight moving up"], [0, 9]
    ours, policy = _genrl_samples(moving_run, prompts, seeds, 4, 1.0)  # [B, F, 3, H, W]
    with torch.no_grad(), policy.reference():
        assert (policy.sample(prompts, seeds, 4, 1.0) - ours).abs().max() > 1e-4  # training moved the model
    out = tmp_path / "video"
    record = export(str(moving_run), str(out))
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == ["pipeline", "MovingDigitsPipeline"]
    assert {k: record["sampling"][k] for k in ("num_frames", "height", "width")} == {
        "num_frames": 9,
        "height": 16,
        "width": 16,
    }
    stock = _load_in_fresh_process(tmp_path, out, "custom", prompts, seeds, 4, 1.0)
    assert stock.shape == (2, 9, 3, 16, 16)
    torch.testing.assert_close(stock.float(), ours, rtol=1e-4, atol=1e-5)


def test_a_half_precision_export_keeps_the_float32_modules_in_float32(moving_run, tmp_path, caplog):
    """``--dtype bfloat16`` cast Wan's ``_keep_in_fp32_modules`` (norms, time embedder) too, and diffusers
    warned about it; they stay float32 now, as ``from_pretrained(torch_dtype=...)`` keeps them."""
    import glob

    from diffusers import WanTransformer3DModel
    from safetensors import safe_open

    with caplog.at_level("WARNING"):
        export(str(moving_run), str(tmp_path / "bf16"), dtype="bfloat16")
    assert "should be kept in float32" not in caplog.text
    keep = set(WanTransformer3DModel._keep_in_fp32_modules)
    dtypes = {}
    for path in glob.glob(str(tmp_path / "bf16" / "transformer" / "*.safetensors")):
        with safe_open(path, "pt") as f:
            dtypes.update({k: f.get_tensor(k).dtype for k in f.keys()})
    kept = {k for k in dtypes if keep & set(k.split("."))}
    assert kept and {dtypes[k] for k in kept} == {torch.float32}
    assert {dtypes[k] for k in dtypes.keys() - kept} == {torch.bfloat16}


def test_genrl_export_prints_only_its_result_line_on_stdout(digits_run, tmp_path):
    """DeepSpeed (installed with the dev extra) warned "Setting accelerator to CPU" on stdout when the
    save imported it; a script reading export's stdout got two lines. A fresh process: DeepSpeed is
    imported once per process. On a machine with CUDA there is no such warning to check."""
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "genrl.cli", "export", str(digits_run), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        f"genrl export: wrote {out} (merge, ema weights, step 2); load with "
        "DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)"
    ]
    assert "Setting accelerator" not in proc.stderr  # nor on stderr: a failed export's error stood below it


def test_a_bad_run_dir_is_one_line_before_any_heavy_import(tmp_path):
    """A missing RUN_DIR printed DeepSpeed's import warning before the error line."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "genrl.cli", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert (
        proc.returncode == 2 and proc.stderr.strip() == f"genrl export: {str(tmp_path / 'nope')!r} is not a directory"
    )
    assert not (tmp_path / "x").exists()


def test_an_explicit_ema_export_of_a_run_without_one_is_refused_before_loading(sd3_run, tmp_path, monkeypatch):
    """``--weights ema`` for a run that kept no EMA wrote the raw weights and said "raw weights"; the
    default still falls back to them."""
    monkeypatch.setattr("genrl.run_dir.load_run_policy", lambda *a, **k: pytest.fail("loaded before refusing"))
    with pytest.raises(ExportError, match="--weights ema: .* kept no EMA"):
        export(str(sd3_run / "run"), str(tmp_path / "out"), weights="ema")
    assert not (tmp_path / "out").exists()


def test_exporting_a_run_stopped_early_says_which_step_it_took_and_warnings_are_one_line(digits_run, tmp_path):
    """A run stopped before ``max_steps`` (here its config asks for 5 steps; its newest readable
    checkpoint is step 2) exported its newest checkpoint as if it were the final model, without a word.
    The warning about the unreadable step 3 is one line: Python's form added the warning call's source."""
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    shutil.copytree(run / "checkpoints" / "step-000002", run / "checkpoints" / "step-000003")
    (run / "checkpoints" / "step-000003" / "state.pt").write_bytes(b"\x80\x02not a checkpoint")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(re.sub(r"(?m)^max_steps: \d+$", "max_steps: 5", config))

    def export_cli(out: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "genrl.cli", "export", str(run), "--out", out]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)

    proc = export_cli(str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{run} stopped at step 3 of max_steps 5: exported step 2's weights (rerun" in proc.stderr
    assert f"{run}'s newer checkpoint(s) of step 3 cannot be read (warned above): exported step 2" in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "unreadable checkpoint" in line]
    assert len(warned) == 1 and warned[0].startswith("UserWarning: skipping") and "warnings.warn" not in proc.stderr
    assert json.loads((tmp_path / "out" / "genrl_export.json").read_text())["max_steps"] == 5
    # finished (max_steps 3), its step 3 damaged: "stopped at step 2 ... rerun the training command" was wrong
    (run / "config.yaml").write_text(re.sub(r"(?m)^max_steps: \d+$", "max_steps: 3", config))
    proc = export_cli(str(tmp_path / "out3"))
    assert proc.returncode == 0 and "stopped at" not in proc.stderr and "newer checkpoint(s) of step 3" in proc.stderr
    (run / "config.yaml").write_text(re.sub(r"(?m)^max_steps: \d+$", "max_steps: 5", config))
    # a step folder without its meta.json (damage: checkpoints are renamed into place) was skipped silently
    (run / "checkpoints" / "step-000003" / "meta.json").unlink()
    proc = export_cli(str(tmp_path / "out4"))
    assert (
        proc.returncode == 0
        and "incomplete checkpoint: " in proc.stderr
        and "step-000003 has no meta.json" in proc.stderr
    )
    assert json.loads((tmp_path / "out4" / "genrl_export.json").read_text())["skipped_steps"] == [3]
    # while its run trains (holds the run's lock), "stopped ... rerun the training command" was wrong advice
    from genrl.io import run_lock

    with run_lock(str(run)):
        proc = export_cli(str(tmp_path / "out2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        f"note: {run} is still training (on this machine), at step 3 of max_steps 5; exported step 2 (export again"
        in proc.stderr
    )


def test_a_config_yaml_edited_after_training_is_refused_by_export_and_gallery(digits_run, tmp_path):
    """Export and gallery rebuild the model from the run's config.yaml: an edit there after training (a
    LoRA alpha, which scales the adapter, or another base of the same architecture) exported the trained
    weights into another model, silently. Each checkpoint records the settings it was trained with; a
    config.yaml differing from them outside what a resume may change is refused before any model loads."""
    from genrl.config import config_to_yaml, save_config
    from genrl.gallery import make_gallery

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    cfg = load_config(OnlineConfig, str(run / "config.yaml"))
    meta = json.loads((run / "checkpoints" / "step-000002" / "meta.json").read_text())
    assert meta["config"] == config_to_yaml(cfg)  # the settings as trained
    save_config(load_config(OnlineConfig, str(run / "config.yaml"), ["policy.lora.alpha=64"]), run / "config.yaml")
    needle = rf"{re.escape(str(run / 'config.yaml'))}: settings differ from those .*step-000002 was trained with"
    with pytest.raises(
        ValueError, match=rf"{needle} \(trained -> file\): policy\.lora\.alpha: 8\.0 -> 64\.0; restore"
    ):
        export(str(run), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=needle):
        make_gallery([str(run)], str(tmp_path / "gallery"), progress=False)
    # whether the run kept an EMA decides the weights: an edit made --weights ema refuse a run that has one
    save_config(load_config(OnlineConfig, str(digits_run / "config.yaml"), ["train.ema_decay=0"]), run / "config.yaml")
    with pytest.raises(ValueError, match=r"train\.ema_decay: 0\.5 -> 0\.0; restore"):
        export(str(run), str(tmp_path / "out"), weights="ema")
    assert not (tmp_path / "out").exists() and not (tmp_path / "gallery").exists()
    # what a resume may change (max_steps; the newest checkpoint may predate the change) is no refusal, nor are
    # settings outside the model's (policy.*): they load the same weights into the same model
    edits = ["max_steps=5", "train.lr=0.5", "rewards.digits=2.0", "policy.compile=regional"]
    save_config(load_config(OnlineConfig, str(digits_run / "config.yaml"), edits), run / "config.yaml")
    assert export(str(run), str(tmp_path / "out"))["step"] == 2


def test_the_export_records_the_text_length_the_run_sampled_with():
    """A moving_digits run with ``policy.max_sequence_length=16`` exported ``sampling`` without it, so the
    pipeline padded prompts to 8 tokens and sampled other clips than the run evaluated. HunyuanVideo-1.5's
    ``__call__`` takes no text length: it goes to ``not_in_sampling`` (and its guidance to the guider)."""
    from families import dummy_hunyuanvideo15, dummy_wan

    from genrl.config import PolicyConfig
    from genrl.export import sampling_settings
    from genrl.policies.flow import FlowPolicy

    cfg = OnlineConfig()
    cfg.eval.guidance_scale = 2.0
    for fam, kept in ((dummy_wan, True), (dummy_hunyuanvideo15, False)):
        cfg.policy = PolicyConfig(model="unused", num_steps=6, **{**fam.POLICY_KW, "max_sequence_length": 16})
        policy = FlowPolicy(cfg.policy, fam.build())
        sampling, rest = sampling_settings(cfg, policy)
        sizes = {k: fam.POLICY_KW[k] for k in ("num_frames", "height", "width")}
        guidance = {"guidance_scale": 2.0} if kept else {}
        if not kept:  # its guider holds the scale, saved with the export
            assert policy.pipe.guider.guidance_scale == 2.0
        length = {"max_sequence_length": 16}
        assert (sampling, rest) == (
            ({"num_inference_steps": 6, **guidance, **sizes, **length}, {})
            if kept
            else ({"num_inference_steps": 6, **sizes}, length)
        )
        cfg.policy.max_sequence_length = 0  # the pipeline's own default
        assert sampling_settings(cfg, policy) == ({"num_inference_steps": 6, **guidance, **sizes}, {})


def test_a_base_model_changed_since_training_is_refused_by_export_gallery_and_resume(tmp_path, capsys):
    """A LoRA checkpoint holds the adapter only: export merged it into whatever ``policy.model`` held then
    (a ``task:`` cache rebuilt with another seed or by another machine, a folder overwritten), a model
    nobody trained, silently; a resume trained on from the other base. Each checkpoint keeps the base's
    fingerprints; export, gallery and resume compare them. Restoring the same base passes again."""
    from genrl.cli import main as cli_main
    from genrl.gallery import make_gallery

    base, kept, run = tmp_path / "base", tmp_path / "base-as-trained", tmp_path / "run"
    pretrain(base, steps=5, seed=0, progress=False)
    shutil.copytree(base, kept)
    overrides = [*TINY, f"output_dir={run}", f"policy.model={base}"]
    recipe = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    train(load_config(OnlineConfig, recipe, overrides))
    metrics = (run / "metrics.jsonl").read_text()
    pretrain(base, steps=5, seed=1, progress=False)  # the same architecture, other weights
    changed = r"genrl_task\.json differs, text_encoder/model\.safetensors differs, transformer/.* differs\)"
    b = re.escape(str(base))
    refused = rf"step-000002 was trained from another base model than policy\.model '{b}' is now \({b}: {changed}"
    with pytest.raises(ValueError, match=refused):
        export(str(run), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=refused):
        make_gallery([str(run)], str(tmp_path / "gallery"), progress=False)
    capsys.readouterr()
    assert cli_main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(refused, err), err  # before the model loads: no bar
    with pytest.raises(ValueError, match=rf"resuming from .*step-000002: the base model .* trained on \({changed}"):
        train(load_config(OnlineConfig, recipe, [*overrides, "max_steps=3"]))
    assert not (tmp_path / "out").exists() and not (tmp_path / "gallery").exists()
    assert (run / "metrics.jsonl").read_text() == metrics and not (run / "checkpoints" / "step-000003").exists()
    shutil.rmtree(base)
    shutil.copytree(kept, base)  # the base it was trained on, back: a copy passes
    assert export(str(run), str(tmp_path / "out"))["step"] == 2


def _edit_run_config(run, *overrides):
    """``run/config.yaml`` saved again with ``overrides`` (as a user editing the file)."""
    from genrl.config import save_config

    save_config(load_config(OnlineConfig, str(run / "config.yaml"), list(overrides)), run / "config.yaml")


def test_a_run_and_its_base_moved_elsewhere_export_and_resume_but_an_edit_is_still_refused(digits_run, tmp_path):
    """The base's fingerprints decide whether policy.model names the model a run was trained from: a run and its
    base copied to other folders were refused as a policy.model change; and once the old base folder was gone,
    the recorded settings could not be read, so config.yaml was compared with itself and a LoRA alpha edited
    after the move exported a model nobody trained."""
    base = tmp_path / "moved" / "base"
    run = tmp_path / "moved" / "run"
    shutil.copytree(load_config(OnlineConfig, str(digits_run / "config.yaml")).policy.model, base)
    shutil.copytree(digits_run, run)
    _edit_run_config(run, f"policy.model={base}", f"output_dir={run}")
    assert export(str(run), str(tmp_path / "out"))["step"] == 2  # the same base, elsewhere
    _edit_run_config(run, "policy.lora.alpha=64")
    with pytest.raises(ValueError, match=r"policy\.lora\.alpha: 8\.0 -> 64\.0; restore"):
        export(str(run), str(tmp_path / "out2"))
    _edit_run_config(run, "policy.lora.alpha=8")
    train(load_config(OnlineConfig, str(run / "config.yaml"), ["max_steps=3"]))  # resumes in its new folder
    assert (run / "checkpoints" / "step-000003").is_dir()
    pretrain(base, steps=5, seed=1, progress=False)  # the moved base replaced: its files decide, not its path
    with pytest.raises(ValueError, match=r"another base model than policy\.model .* \(.*transformer/.* differs"):
        export(str(run), str(tmp_path / "out3"))


def test_a_damaged_base_model_record_is_warned_about_and_a_dropout_run_still_exports(digits_run, tmp_path):
    """A base_model record that is not a mapping of fingerprints was passed over silently; runs trained with
    policy.lora.dropout > 0 (before the trainers refused it) could no longer be exported: the config refused it."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    for meta in run.glob("checkpoints/step-*/meta.json"):
        data = json.loads(meta.read_text())
        data["base_model"] = "garbage"
        settings = yaml.safe_load(data["config"])
        settings["policy"]["lora"]["dropout"] = 0.05  # as trained before the refusal
        data["config"] = yaml.safe_dump(settings)
        meta.write_text(json.dumps(data))
    _edit_run_config(run, "policy.lora.dropout=0.05")
    with pytest.warns(UserWarning, match=r"meta\.json: its recorded base model cannot be read \(a str, not a mapping"):
        assert export(str(run), str(tmp_path / "out"))["step"] == 2
    with pytest.raises(
        ValueError, match=r"policy\.lora\.dropout=0\.05: must be 0: genrl's policies run without dropout"
    ):
        train(load_config(OnlineConfig, str(run / "config.yaml"), [f"output_dir={run}", "max_steps=3"]))
    assert not (run / "checkpoints" / "step-000003").exists()
