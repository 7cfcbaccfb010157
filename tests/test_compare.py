"""``genrl compare``: two tiny digits configs x one seed -> runs, report.md and its plots."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_ONLINE

from genrl.tasks.digits import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_runs_every_config_and_writes_the_report(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    base = pretrain(tmp_path / "base", steps=5, progress=False)
    tiny = [
        f"policy.model={base}",
        *TINY_ONLINE,
    ]
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "genrl.cli",
        "compare",
        "configs/digits/flowgrpo_ink.yaml",
        "configs/digits/guard.yaml",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--set",
        *tiny,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "| flowgrpo_ink | 0 |" in report and "| guard | 0 |" in report
    for png in ("curves.png", "ratios_per_step.png", "grad_spread.png"):
        assert (out / png).stat().st_size > 1000
    # a finished run is reused, not retrained
    stamp = (out / "guard-seed0" / "final_metrics.json").stat().st_mtime_ns
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and (out / "guard-seed0" / "final_metrics.json").stat().st_mtime_ns == stamp
    # ... but only with the same settings: other ones are an error naming the difference, nothing retrained
    proc = subprocess.run([*cmd, "train.lr=0.5"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "holds a finished run made with other settings" in err[-1], proc.stderr[-2000:]
    assert (
        "train.lr: 0.001 -> 0.5" in err[-1]
        and err[-1].startswith("genrl compare: ")
        and "compare: genrl" not in err[-1]
    )
    assert (out / "guard-seed0" / "final_metrics.json").stat().st_mtime_ns == stamp
    # how a run was launched (resume=false, which compare's own advice names) and where --out lies are no
    # settings of what it trained: a moved comparison, or one rerun with resume=false, refused every run
    moved = tmp_path / "moved"
    os.rename(out, moved)
    again = [*cmd[: cmd.index("--out") + 1], str(moved), *cmd[cmd.index("--out") + 2 :], "resume=false"]
    proc = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (moved / "guard-seed0" / "final_metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0", "0"], "--seeds must differ"),
        (["--seeds", "-1"], "--seeds must be >= 0 (got -1)"),  # was "seed=-1", a key nobody typed
        (["--set", "train.lrr=1"], "arm 'flowgrpo' (--set): unknown config key 'train.lrr'"),  # was "(config)"
        (["--arm", "../escape", "configs/digits/flowgrpo.yaml"], "arm name '../escape'"),
        (["--arm", "", "configs/digits/flowgrpo.yaml"], "arm name ''"),
        (
            ["--wall-budget", "nan"],
            "--wall-budget must be a number of seconds > 0 and at most 31536000 (a year), got nan",
        ),
        (["--wall-budget", "0"], "--wall-budget must be a number of seconds > 0"),
        (["--wall-budget", "1e30"], "at most 31536000 (a year), got 1e+30"),  # was found after a calibration run
        (["--wall-budget", "10", "--evals", "0"], "--evals must be >= 1"),
        (["--wall-budget", "10", "--calibration-steps", "0"], "--calibration-steps must be >= 1"),
        (["--out", ""], "--out is empty"),
        (["--arm", "a"], "--arm takes NAME CONFIG"),
        (["--set", "seed=5"], "'seed=5': compare sets seed itself (use --seeds)"),
        (["--arm", "a", "configs/digits/flowgrpo.yaml", "output_dir=x"], "compare sets output_dir itself (use --out)"),
        (["--evals", "3"], "--evals applies only with --wall-budget"),  # was ignored: the runs trained max_steps
        (["--calibration-steps", "5"], "--calibration-steps applies only with --wall-budget"),
        # a task without a gold judge: refused before training (the report failed after every run had trained)
        (["--arm", "pick", "configs/flux/guard_pickscore.yaml"], "arm pick: task 'prompts' has no gold judge"),
        # two tasks' gold metrics were tabled in one column under the first arm's name
        (
            ["--arm", "img", "configs/digits/flowgrpo.yaml", "--arm", "vlm", "configs/digit_sum/grpo.yaml"],
            "arm vlm: task 'digit_sum' is judged by eval/accuracy, arm img's task 'digits' by eval/gold_accuracy",
        ),
    ],
)
def test_compare_refuses_unusable_arguments_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    from genrl.cli import main

    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    argv = ["compare", *[os.path.join(ROOT, a) if a.startswith("configs/") else a for a in args]]
    if "--arm" not in args:
        argv.insert(1, config)
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].count("genrl compare:") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_compare_refuses_an_out_folder_holding_the_users_files(tmp_path, capsys):
    """Its report.md and plots were written over whatever the folder held."""
    from genrl.cli import main

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "todo.txt").write_text("mine")
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    assert main(["compare", config, "--out", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"genrl compare: --out='{tmp_path / 'mine'}' holds files that no genrl compare wrote: choose a new (or empty) "
        "folder"
    )
    assert os.listdir(tmp_path / "mine") == ["todo.txt"]


def test_matched_proxy_reads_gold_where_each_curve_crosses_the_common_level():
    from genrl.compare import crossing, matched_proxy

    fast = {"step": [0, 10, 20], "proxy": [0.5, 0.9, 1.0], "gold": [0.5, 0.7, 0.6], "div": [2.0, 1.0, 0.5]}
    slow = {"step": [0, 10, 20], "proxy": [0.5, 0.6, 0.8], "gold": [0.5, 0.8, 0.9], "div": [2.0, 1.8, 1.6]}
    out = matched_proxy({"fast": {0: fast}, "slow": {0: slow}})
    level, at = out[0]
    assert level == 0.8  # the slow config's best
    assert at["slow"] == {"step": 20, "gold": 0.9, "div": 1.6}
    # fast crosses 0.8 three quarters of the way from step 0 (0.5) to step 10 (0.9)
    assert at["fast"]["step"] == pytest.approx(7.5) and at["fast"]["gold"] == pytest.approx(0.65)
    assert at["fast"]["div"] == pytest.approx(1.25)
    with pytest.raises(ValueError, match="never reaches"):
        crossing(slow, 0.95)


def test_compare_arms_of_different_trainers_at_equal_wall_time(tmp_path, base_model):
    """Named arms (a preference run and an online run, each with its own overrides) under
    ``--wall-budget``: each arm's steps come from its calibration run's seconds per step."""
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    import json

    from conftest import tiny_preference

    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "genrl.cli", "compare", "--seeds", "0", "--out", str(out)]
    cmd += ["--arm", "seppo_fixed", "configs/digits/seppo.yaml", *tiny_preference("seppo", "fixed")]
    cmd += ["--arm", "flowgrpo", "configs/digits/flowgrpo.yaml", *TINY_ONLINE]
    cmd += ["--wall-budget", "2", "--evals", "2", "--calibration-steps", "3", "--set", f"policy.model={base_model}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "report.md").read_text()
    for arm in ("seppo_fixed", "flowgrpo"):
        per_step = json.loads((out / "_calibration" / arm / "calibration.json").read_text())["seconds_per_step"]
        steps = max(1, round(2 / per_step))
        assert f"| {arm} | 0 | {steps} |" in report
        rows = [json.loads(line) for line in open(out / f"{arm}-seed0" / "metrics.jsonl")]
        assert max(r["step"] for r in rows) == steps
        assert [r["step"] for r in rows if "eval/gold_accuracy" in r][-1] == steps
    # the preference arm's proxy curve is the task's own reward (no reward in its config)
    assert "eval/digits" in (out / "seppo_fixed-seed0" / "metrics.jsonl").read_text()
    # a bad arm is refused before anything runs
    bad = [*cmd[:8], "--arm", "x", "configs/digits/seppo.yaml", "reference.mode=nope", "--out", str(tmp_path / "bad")]
    proc = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "reference.mode" in proc.stderr and not (tmp_path / "bad").exists()


def test_report_reads_the_tasks_gold_metric_and_extra_metrics(tmp_path):
    """A video task's arms: gold is the task's ``gold_metric`` (moving_digits: the judge's TA accuracy),
    its ``report_metrics`` get final and matched-proxy columns, and the per-step table holds the
    rollout noise std and output-gradient norms."""
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    import json

    from genrl.compare import write_report
    from genrl.tasks.moving_digits import MovingDigitsTask

    gold, extras = MovingDigitsTask.gold_metric, MovingDigitsTask.report_metrics
    runs = []
    for name, proxy, ta in (("fast", [0.0, 1.0, 2.0], [0.1, 0.3, 0.2]), ("slow", [0.0, 0.5, 1.0], [0.1, 0.2, 0.4])):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": 1, "grad/norm": 1.0, "noise/std_step_00": 0.5, "noise/std_step_03": 0.25}]
        rows[0]["grad/output_norm_step_00"] = 2.0
        for i, step in enumerate((0, 10, 20)):
            rows.append({"step": step, "eval/videoalign": proxy[i], f"eval/{gold}": ta[i], "eval/diversity": 1.0})
            rows[-1].update({f"eval/{k}": float(i) for k in extras})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append({"name": name, "seed": 0, "dir": str(run), "reward": "videoalign", "gold": gold})
        runs[-1].update({"extras": extras, "steps": 20, "wall": 1.0, "train_s": 1.0})
    report = open(write_report(runs, str(tmp_path / "out"))).read()
    assert f"`eval/{gold}`" in report and "| fast | 0 | 20 | 0.000 -> 2.000 | 0.100 -> 0.300 (10) -> 0.200 |" in report
    assert "videoalign_TA base -> final" in report and "| 0.000 -> 2.000 |" in report
    # matched proxy 1.0 (slow's best): fast crosses it at step 10, where its extras are 1.0
    line = next(x for x in report.splitlines() if x.startswith("| fast | 10 |"))
    assert line.split("|")[3:5] == [" 0.300 ", " 1.000 "] and line.count("1.000") == 1 + len(extras)
    noise = next(x for x in report.splitlines() if x.startswith("| slow | noise std (rollout) |"))
    assert "5.00e-01" in noise and "2.50e-01" in noise
    assert not [x for x in report.splitlines() if x.endswith(" ")]  # table rows ended "| " (with or without extras)


def test_report_of_runs_with_one_seed_per_prompt_and_no_videoalign(tmp_path):
    """With ``eval.seeds_per_prompt=1`` the diversity is NaN, logged as JSON null: the report raised a
    TypeError after every arm had trained, and a rerun reusing the runs raised it again; with two seeds, an
    AttributeError (``statistics.stdev`` of NaNs). The task's videoalign columns, which no arm logged, were
    ``nan -> nan``."""
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    from genrl.compare import write_report
    from genrl.tasks.moving_digits import MovingDigitsTask

    gold, extras = MovingDigitsTask.gold_metric, MovingDigitsTask.report_metrics
    runs = []
    for name, ta in (("flowgrpo", [0.1, 0.3]), ("sage", [0.1, 0.2])):
        for seed in (0, 1):
            run = tmp_path / f"{name}_{seed}"
            run.mkdir()
            rows = [
                {"step": s, "eval/moving_digits_gold": a + seed, f"eval/{gold}": a + seed, "eval/diversity": None}
                for s, a in zip((0, 2), ta)
            ]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs.append({"name": name, "seed": seed, "dir": str(run), "reward": "moving_digits_gold", "gold": gold})
            runs[-1].update({"extras": extras, "steps": 2, "wall": 1.0, "train_s": 1.0})
    report = open(write_report(runs, str(tmp_path / "out"))).read()
    assert "| flowgrpo | 1 | 2 | 1.100 -> 1.300 | 1.100 -> 1.300 (2) -> 1.300 | nan -> nan |" in report, report
    assert "| flowgrpo | 2 | 0.800 ± 0.707 | 0.800 ± 0.707 | 0.800 ± 0.707 | nan |" in report  # over the seeds
    assert "videoalign" not in report


def test_report_of_answer_tasks_reads_held_out_accuracy_without_a_proxy(tmp_path):
    """digit_sum / vlm_data: gold is the held-out ``eval/accuracy`` and their evaluations log no
    proxy reward, so the report says there is no matched-proxy table instead of failing (it had
    raised "the proxy never reaches nan" after every arm had trained)."""
    pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra")
    import json

    from genrl.compare import write_report
    from genrl.tasks.digit_sum import DigitSumTask
    from genrl.tasks.vlm_data import VLMDataTask

    assert DigitSumTask.gold_metric == VLMDataTask.gold_metric == "accuracy"
    runs = []
    for name, acc in (("grpo", [0.2, 0.5]), ("sapo", [0.2, 0.6])):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": s, "eval/accuracy": a, "eval/format": 1.0} for s, a in zip((0, 10), acc)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append({"name": name, "seed": 0, "dir": str(run), "reward": "verifiable", "gold": "accuracy"})
        runs[-1].update({"steps": 10, "wall": 1.0, "train_s": 1.0})
    report = open(write_report(runs, str(tmp_path / "out"))).read()
    assert (
        "Gold: `eval/accuracy`" in report and "| sapo | 0 | 10 | nan -> nan | 0.200 -> 0.600 (10) -> 0.600 |" in report
    )
    assert "No table at matched proxy reward: the evaluations of grpo, sapo log no proxy reward." in report


def test_per_step_statistics_average_over_training_rows_then_seeds(tmp_path):
    import json

    from genrl.compare import per_step_table, step_means

    rows = [
        {"step": 1, "grad/norm": 1.0, "ratio/mean_step_00": 1.25, "noise/std_step_00": 0.5, "noise/std_step_01": 0.1},
        {"step": 2, "grad/norm": 1.0, "ratio/mean_step_00": 0.75, "noise/std_step_00": 0.7},
        {"step": 2, "eval/gold_accuracy": 0.5, "noise/std_step_00": 99.0},  # an evaluation row: not a training step
    ]
    train_rows = [r for r in rows if "grad/norm" in r]
    assert step_means(train_rows, "noise/std_step_") == {0: pytest.approx(0.6), 1: pytest.approx(0.1)}
    assert step_means(train_rows, "ratio/mean_step_", -1.0) == {0: pytest.approx(0.0)}
    runs = []
    for seed, scale in ((0, 1.0), (1, 3.0)):
        d = tmp_path / f"a-seed{seed}"
        d.mkdir()
        scaled = [{k: v * scale if k.startswith("noise/") else v for k, v in r.items()} for r in rows]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scaled))
        runs.append({"name": "a", "seed": seed, "dir": str(d)})
    table = per_step_table(runs)
    noise = next(line for line in table if "noise std" in line)
    assert noise == "| a | noise std (rollout) | 1.20e+00 | 2.00e-01 |"  # (0.6 + 1.8) / 2, (0.1 + 0.3) / 2


def test_an_arm_that_fails_once_its_model_loads_is_named(tmp_path, capsys):
    """A refusal found only when a run loads its model (here a folder naming SD3 whose transformer weights
    are not a safetensors file) was one line that did not say which arm or seed failed; a refusal of an
    arm's config (the same folder without its transformer/) did not name the arm either."""
    from genrl.cli import main

    model = tmp_path / "broken"
    model.mkdir()
    index = {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}
    (model / "model_index.json").write_text(json.dumps(index))
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    argv = ["compare", "--seeds", "3", "--out", str(tmp_path / "out"), "--arm", "broken", config]
    assert main([*argv, f"policy.model={model}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"genrl compare: arm 'broken' (config): policy.model='{model}': model_index.json names component "
        "'transformer' (SD3Transformer2DModel), but the folder has no transformer/"
    ], err
    (model / "transformer").mkdir()
    (model / "transformer" / "config.json").write_text("{}")
    (model / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    assert main([*argv, f"policy.model={model}"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "it/s]" not in line]  # diffusers' bar
    assert len(err) == 1 and err[0].startswith(f"genrl compare: arm 'broken', seed 3: policy.model='{model}'"), err


VIDEOALIGN_FOLDER = "{tmp}/videoalign"  # a VideoReward folder whose base model is a hub id


@pytest.mark.parametrize(
    "config,overrides,key,repo_id",
    [
        ("digits", ["policy.model=genrl-test/no-such-model"], "policy.model", "genrl-test/no-such-model"),
        (
            "digits",
            ["rewards={digits: 1.0, pickscore: 0.5}"],
            "reward_args.pickscore.model",
            "yuvalkirstain/PickScore_v1",
        ),
        (  # an open_clip tag: its weights' repository in open_clip's list
            "digits",
            ["rewards={digits: 1.0, clip: 0.5}"],
            "reward_args.clip.pretrained",
            "laion2b_s32b_b79k",
        ),
        (
            "digits",
            ["rewards={digits: 1.0, clip: 0.5}", "reward_args.clip.model=hf-hub:genrl-test/no-such-clip"],
            "reward_args.clip.model",
            "hf-hub:genrl-test/no-such-clip",
        ),
        (
            "moving_digits",
            [f"reward_args.videoalign.checkpoint={VIDEOALIGN_FOLDER}"],
            f"{VIDEOALIGN_FOLDER}/model_config.json: model_config.model_name_or_path",
            "genrl-test/no-such-qwen2-vl",
        ),
    ],
)
def test_a_later_arms_hub_model_that_cannot_load_is_refused_before_any_arm_trains(
    tmp_path, capsys, monkeypatch, config, overrides, key, repo_id
):
    """Offline, a hub id missing from the cache (a policy's, or a reward's: PickScore's, an open_clip
    model's or tag's weights, a VideoReward folder's base model) failed only when its arm loaded it, after
    the arms before it had trained."""
    import json

    from huggingface_hub import constants

    from genrl import hub
    from genrl.cli import main

    folder = tmp_path / "videoalign"
    folder.mkdir()
    (folder / "model_config.json").write_text(json.dumps({"model_config": {"model_name_or_path": repo_id}}))
    fixes = {  # each says where to put the downloaded copy: the option as written
        "reward_args.clip.pretrained": "then give the checkpoint file in it",
        "reward_args.clip.model": "then give local-dir:<the folder>",
    }
    overrides, key = [o.replace("{tmp}", str(tmp_path)) for o in overrides], key.replace("{tmp}", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.local_only.cache_clear()
    first = os.path.join(ROOT, "configs", config, "flowgrpo.yaml")  # one task: one gold metric
    out = tmp_path / "out"
    argv = ["compare", "--seeds", "0", "--out", str(out), "--arm", "first", first, "max_steps=1"]
    argv += ["--arm", "hub", os.path.join(ROOT, "configs", config, "flowgrpo.yaml"), *overrides]
    try:
        assert main(argv) == 2
    finally:
        hub.local_only.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"genrl compare: arm 'hub' (before training): {key}='{repo_id}': not in the local"
    ), err
    assert fixes.get(key, f"then point {key} at the folder" if "videoalign" not in key else "then set it to") in err[0]
    assert not out.exists() or not any(out.iterdir())  # the first arm did not train


@pytest.mark.parametrize(
    "config, overrides, content, says",
    [
        (  # open_clip's list knows no such tag: found without loading, before the first arm trains
            "digits",
            ["rewards={digits: 1.0, clip: 0.5}", "reward_args.clip.pretrained=laion2b_typo"],
            None,
            "clip reward: pretrained='laion2b_typo' is not a tag of ViT-H-14; its tags: ",
        ),
        ("moving_digits", [], "[1, 2]", "model_config.json: expected an object whose model_config.model_name_or_path"),
        ("moving_digits", [], '{"model_config": {"model_name_or_path": 5}}', "model_config.json: expected an object"),
        ("moving_digits", [], "not json", "model_config.json is not a readable JSON file (JSONDecodeError: "),
    ],
)
def test_a_later_arms_broken_reward_option_is_one_line_naming_the_arm(
    tmp_path, capsys, config, overrides, content, says
):
    """An unknown open_clip tag failed only when its arm loaded it, after the arms before it had trained; a
    VideoAlign folder's broken model_config.json was a traceback (exit 1), or a line naming neither the arm
    nor the file."""
    from genrl.cli import main

    folder = tmp_path / "videoalign"
    folder.mkdir()
    if content is not None:
        (folder / "model_config.json").write_text(content)
        overrides = [f"reward_args.videoalign.checkpoint={folder}"]
    first = os.path.join(ROOT, "configs", config, "flowgrpo.yaml")  # one task: one gold metric
    out = tmp_path / "out"
    argv = ["compare", "--seeds", "0", "--out", str(out), "--arm", "first", first, "max_steps=1"]
    argv += ["--arm", "broken", os.path.join(ROOT, "configs", config, "flowgrpo.yaml"), *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrl compare: arm 'broken' (before training): ") and says in err[0], (
        err
    )
    assert not out.exists() or not any(out.iterdir())  # the first arm did not train


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast runs where a GPU is visible")
def test_a_later_arms_fp16_without_a_gpu_is_refused_before_any_arm_trains(tmp_path, capsys):
    """``train.mixed_precision=fp16`` on a CPU was refused when its arm started, after the arms before it
    had trained (``genrl train`` and ``genrl bench`` refuse it before any work)."""
    from genrl.cli import main

    first = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    out = tmp_path / "out"
    argv = ["compare", "--seeds", "0", "--out", str(out), "--arm", "first", first, "max_steps=1"]
    argv += ["--arm", "fp16", first, "max_steps=1", "train.mixed_precision=fp16"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "genrl compare: arm 'fp16' (before training): train.mixed_precision="
    ), err
    assert not out.exists() or not any(out.iterdir())  # the first arm did not train


def test_a_calibration_record_is_reused_and_a_damaged_one_measured_again(tmp_path, monkeypatch):
    """``calibration.json`` made with the same settings is reused; one cut short, not an object, or holding no
    positive seconds per step was a traceback (``JSONDecodeError``, ``KeyError``, a division by zero): it is
    measured again."""
    import genrl.trainers
    from genrl.compare import Arm, calibrate

    arm = Arm("a", os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"))
    record = tmp_path / "_calibration" / "a" / "calibration.json"
    record.parent.mkdir(parents=True)
    run = [
        "seed=0",
        f"output_dir={record.parent}",
        "max_steps=3",
        "eval.every=0",
        "checkpoint.every=0",
        "resume=false",
    ]
    made_with = {"config": arm.config, "overrides": run}  # what calibrate records for this arm

    class Measured(Exception):
        pass

    def measure(*args):
        raise Measured

    monkeypatch.setattr(genrl.trainers, "run_trainer", measure)
    record.write_text(json.dumps({"seconds_per_step": 0.5, "steps": 3, **made_with}))
    assert calibrate(arm, str(tmp_path), [], wall_budget=10.0, steps=3) == 20  # reused: 10 s / 0.5 s
    for damaged in ('{"seconds_per_step": ', "[0.5]", json.dumps({"seconds_per_step": 0, **made_with}), "\xff"):
        record.write_text(damaged, encoding="latin-1")
        with pytest.raises(Measured):
            calibrate(arm, str(tmp_path), [], wall_budget=10.0, steps=3)


def test_a_calibration_stopped_by_a_signal_says_to_rerun_the_same_command(tmp_path, monkeypatch):
    """Its line said "rerun without resume=false", a setting compare adds to calibrations itself."""
    import genrl.trainers
    from genrl.compare import Arm, calibrate
    from genrl.preemption import Preempted

    def stopped(*args):
        raise Preempted(3, "ckpt", 2, resume=False)

    monkeypatch.setattr(genrl.trainers, "run_trainer", stopped)
    with pytest.raises(Preempted) as e:
        calibrate(Arm("a", os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")), str(tmp_path), [], 10.0, 3)
    assert str(e.value) == (
        "stopped by signal 2 while calibrating arm 'a'; rerun the same command (the calibration starts over, "
        "finished runs are reused)"
    )
