"""``genrl bench`` and the prepared GPU script, run briefly on the CPU with tiny models."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(report: str) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in report.splitlines()
        if line.startswith("| ") and not line.startswith("| variant")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def test_genrl_bench_measures_each_variant_in_its_own_process(tmp_path):
    from genrl.tasks.digits import pretrain

    base = pretrain(tmp_path / "base", steps=3, progress=False)
    out = tmp_path / "bench.md"
    cmd = [
        sys.executable,
        "-m",
        "genrl.cli",
        "bench",
        "configs/digits/flowgrpo.yaml",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--variants",
        "default",
        "window",
        "--out",
        str(out),
        "--set",
        f"policy.model={base}",
        "policy.num_steps=4",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.batch_size=8",
        "train.batch_size=4",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(out.read_text())
    assert set(rows) == {"default", "window"}
    assert rows["default"][0] == "4" and rows["window"][0] == "2"  # trained steps: all 4, or the window of 2
    assert all(float(v) > 0 for r in rows.values() for v in r[1:4])
    assert rows["default"][4:7] == ["1.00", "1.00", "1.00"]  # ratios to itself
    # the first rollout's log-probs equal the baseline's own; the update re-scores them up to rounding
    assert rows["default"][7] == "0" and rows["window"][7] == "-"  # another number of trained steps
    assert all(float(r[8]) < 1e-4 for r in rows.values())
    assert re.search(r"Device: CPU", out.read_text())
    progress = [line for line in proc.stderr.splitlines() if line.startswith("genrl bench: ")]  # not a terminal:
    assert len(progress) == 2, proc.stderr[-2000:]  # only what finished, no "measuring ..." lines
    assert re.fullmatch(r"genrl bench: 'default' \(1/2\) measured in \d+ s", progress[0])
    assert re.fullmatch(r"genrl bench: 'window' \(2/2\) measured in \d+ s", progress[1])
    bad = subprocess.run(cmd[:5] + ["--variants", "turbo"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "turbo" in bad.stderr


def test_prepared_gpu_script_runs_its_tiny_preset(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu_sd35m
    finally:
        sys.path.pop(0)
    out = tmp_path / "results.md"
    assert (
        gpu_sd35m.main(
            [
                "--preset",
                "tiny",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--variants",
                "default",
                "grad_ckpt",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = _rows(out.read_text())
    assert set(rows) == {"default", "grad_ckpt"} and rows["default"][0] == "10"
    assert all(float(v) > 0 for r in rows.values() for v in r[1:4])
    # the full-size preset is the published SD3.5-Medium architecture (checked without building it)
    t = gpu_sd35m.PRESETS["sd35m"]["transformer"]
    assert (t["num_layers"], t["num_attention_heads"] * t["attention_head_dim"], t["joint_attention_dim"]) == (
        24,
        1536,
        4096,
    )


def test_bench_checks_its_arguments_and_config_before_any_measurement(tmp_path, monkeypatch, capsys):
    """One line, exit 2, nothing written, and no child process started (a measurement can take long)."""
    import pytest

    import genrl.bench
    from genrl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(genrl.bench.subprocess, "run", lambda *a, **k: pytest.fail("measured before checking"))
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    sft, vlm = (os.path.join(ROOT, "configs", "digit_sum", f) for f in ("sft.yaml", "grpo.yaml"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    bad = tmp_path / "adir" / "bad.yaml"
    bad.write_text("max_steps: 3\n  bad: [\n")
    for args, message in [
        (["nosuch.yaml"], "no such config file"),
        # YAML's message has two lines; train folded them, bench did not
        ([str(bad)], "bad.yaml: invalid YAML: mapping values are not allowed here in"),
        ([str(bad), "--overhead"], 'invalid YAML: mapping values are not allowed here in "'),
        ([config, "--set", "nosuch=1"], "unknown config key 'nosuch'"),
        ([config, "--iters", "0"], "--iters must be >= 1"),
        ([config, "--variants", "default", "default"], "--variants must differ"),
        ([config, "--out", "adir"], "--out='adir' is a folder"),
        ([config, "--json", "afile/x.json"], "afile is a file, not a folder"),
        ([config, "--overhead", "--threads", "0"], "--threads must be >= 1"),
        # the other mode's options were accepted and ignored
        ([config, "--steps", "3", "--threads", "2"], "--steps and --threads apply with --overhead only"),
        ([config, "--overhead", "--iters", "2"], "--iters measure the variants, not --overhead"),
        # another trainer's config: said as such (its valid keys had been reported as unknown online keys)
        ([sft, "--overhead"], "trainer 'sft': genrl bench --overhead measures online configs"),
        ([vlm, "--set", "eval.num_questions=4"], "trainer 'online_vlm': genrl bench measures online configs"),
        # settings the variants' measurement never reads: accepted and ignored
        (
            [config, "--set", "rewards={pickscore: 1.0}", "eval.every=5"],
            "--set rewards={pickscore: 1.0} eval.every=5:",
        ),
        ([config, "--set", "max_steps=3", "policy.num_steps=4"], "--set max_steps=3: the variants' measurement"),
        ([config, "--set", "rollout.async_rewards=true"], "--set rollout.async_rewards=true: the variants'"),
        ([config, "--overhead", "--set", "max_steps=500", "eval.every=5"], "--set max_steps=500: --overhead sets "),
        (
            [config, "--overhead", "--set", "checkpoint.every=1"],
            "--set checkpoint.every=1: --overhead sets output_dir",
        ),
        # any checkpoint setting: the measured run writes none
        ([config, "--overhead", "--set", "checkpoint.keep_last=1"], "and writes no checkpoint"),
        # the trainer loop's own settings: the variants' measurement has no loop
        ([config, "--set", "train.adaptive_threads=true"], "--set train.adaptive_threads=true: the variants'"),
        ([config, "--set", "train.ema_decay=0.9"], "--set train.ema_decay=0.9: the variants'"),
        # the same settings as a section's mapping (which sets those keys and keeps the others)
        ([config, "--set", "train={ema_decay: 0.9}"], "--set train={ema_decay: 0.9}: the variants'"),
        # a variant's own setting won over the user's, unsaid
        (
            [config, "--variants", "default", "window", "--set", "policy.sde_window_size=3"],
            "--set policy.sde_window_size=3: variant 'window' sets policy.sde_window_size=2 itself",
        ),
        (
            [config, "--variants", "default", "window", "--set", "policy={sde_window_size: 3}"],
            "--set policy={sde_window_size: 3}: variant 'window' sets policy.sde_window_size=2 itself",
        ),
        ([config, "--json", ""], "--json is empty: give a file path"),
        ([config, "--out", ""], "--out is empty"),
    ]:
        assert main(["bench", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert [p.name for p in (tmp_path / "adir").iterdir()] == ["bad.yaml"]


def test_a_refusal_found_in_the_measuring_process_is_one_line(tmp_path):
    """A model that fails only once loaded (here a folder naming SD3 without its components) printed the
    child process's whole traceback (49 lines); now one line and exit code 2, like a config error."""
    import json

    model = tmp_path / "broken"
    model.mkdir()
    index = {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}
    (model / "model_index.json").write_text(json.dumps(index))
    cmd = [sys.executable, "-m", "genrl.cli", "bench", "configs/digits/flowgrpo.yaml", "--variants", "default"]
    cmd += ["--iters", "1", "--warmup", "0", "--set", f"policy.model={model}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()  # no progress line before it (stderr is not a terminal here)
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert err[0].startswith("genrl bench: ") and str(model) in err[0]


def test_progress_on_a_terminal_is_erased_when_the_measuring_process_fails(monkeypatch):
    """On a terminal the "measuring ..." line shows while the child runs; when the child fails it is
    erased, so the error stands alone (it stood above the error before)."""
    import io

    import pytest

    from genrl.bench import child_result

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    fails = [sys.executable, "-c", "import sys; print('policy.model: bad', file=sys.stderr); sys.exit(2)"]
    with pytest.raises(ValueError, match="policy.model: bad"):
        child_result(fails, "variant 'default'", progress="'default' (1/1)")
    assert term.getvalue() == "genrl bench: measuring 'default' (1/1) ...\r\033[K"
    term.seek(0)
    term.truncate()
    assert child_result([sys.executable, "-c", "print('{\"s\": 1}')"], "x", progress="'default' (1/1)") == {"s": 1}
    done = (
        r"genrl bench: measuring 'default' \(1/1\) \.\.\.\r\033\[Kgenrl bench: 'default' \(1/1\) measured in \d+ s\n"
    )
    assert re.fullmatch(done, term.getvalue())


def test_the_variant_measurement_builds_no_reward_model(tmp_path, monkeypatch, base_model):
    """It prepared every task: model the config named, reward models included, which it never uses (the
    moving_digits recipes' VideoAlign reward: thousands of training steps)."""
    from genrl.bench import measure
    from genrl.config import load_online_config
    from genrl.registry import TASKS

    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    small = ["rollout.prompts_per_step=4", "rollout.group_size=2", "rollout.batch_size=4", "train.batch_size=4"]
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo_clip.yaml")  # reward_args.clip.model: task:digits
    cfg = load_online_config(config, [f"policy.model={base_model}", "policy.num_steps=2", *small], "genrl bench")
    figures = measure(cfg, iters=1, warmup=0)
    # one training iteration: 4 prompts x 2 samples, rolled out 4 at a time, 2 optimizer steps (it measured
    # rollout.batch_size samples, whatever prompts_per_step said)
    assert (figures["batch"], figures["rollout_batch"], figures["optimizer_steps_per_iteration"]) == (8, 4, 2)
    assert not TASKS.get("digits")().is_prepared("clip")


def test_bench_names_what_it_could_not_use_or_write(tmp_path, monkeypatch, capsys):
    """``OMP_NUM_THREADS`` that is not a count was an int() error naming no variable; a report that could
    not be written after the measurement named a temporary file."""
    import genrl.bench
    from genrl.bench import launch_threads
    from genrl.cli import main

    for value, threads in (("", os.cpu_count()), ("3", 3), ("2,1", 2), (" 4 ", 4)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert launch_threads() == threads
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    for value in ("abc", "0", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert main(["bench", config, "--overhead"]) == 2
        (err,) = capsys.readouterr().err.strip().splitlines()
        assert f"OMP_NUM_THREADS={value!r} is not a thread count" in err
    monkeypatch.setattr(genrl.bench, "run", lambda *a: [{"variant": "default"}])
    monkeypatch.setattr(genrl.bench, "report", lambda *a: "the report")

    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(genrl.bench, "atomic_file", full_disk)
    assert main(["bench", config, "--json", str(tmp_path / "x.json")]) == 2
    out, err = capsys.readouterr()
    assert "the report" in out
    assert (
        err.strip()
        == f"genrl bench: --json={str(tmp_path / 'x.json')!r}: not written (No space left on device); the report is above"
    )
