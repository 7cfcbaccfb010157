"""SIGTERM / Ctrl-C finish the step, checkpoint it and stop in one line; the rerun resumes bit for bit."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_ONLINE, TINY_PREFERENCE, assert_same_state, metrics_rows, two_process_launch

from genrl.checkpoint import latest_checkpoint, load_checkpoint
from genrl.preemption import Preempted, StopRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_signal_is_recorded_and_the_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread before kill returns
        assert stop.requested() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_repeat_within_a_second_is_the_same_request_and_a_later_one_interrupts(monkeypatch):
    """A launcher forwards the signal its workers already got (a scheduler signals every process): that
    repeat is one request; a second signal after ``REPEAT_S`` is an impatient one (KeyboardInterrupt),
    except in a launcher's worker, whose handler may run the forwarded copy late (after a long forward)."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # at once: the same request
        assert stop.requested() == signal.SIGTERM
        stop._at -= StopRequest.REPEAT_S  # as if the first came a while ago
        monkeypatch.setenv("LOCAL_RANK", "1")
        os.kill(os.getpid(), signal.SIGTERM)  # a worker: still the same request
        monkeypatch.delenv("LOCAL_RANK")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize(
    "config,overrides",
    [
        pytest.param("configs/digits/flowgrpo.yaml", [*TINY_ONLINE, "max_steps=5", "eval.every=0"], id="online"),
        pytest.param(
            "configs/digits/seppo.yaml",
            [*TINY_PREFERENCE, "max_steps=5", "eval.every=0"],
            id="preference",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_sigterm_to_every_process_of_a_two_process_run_stops_it_in_one_line(tmp_path, base_model, config, overrides):
    """SIGTERM to the launcher and both workers (a scheduler's cancel): each worker gets it twice (the
    launcher forwards it), which is one request; both finish the step, the main one prints the one line,
    none waits at a barrier for the other (rank 1 had died in one with a gloo traceback) and the rerun
    finishes the run."""
    from test_kill_resume import _process_tree

    run = tmp_path / "run"
    cmd = [*two_process_launch(29851), "-m", "genrl.cli", "train", config, *overrides]
    cmd += [f"policy.model={base_model}", "checkpoint.every=1", "log.progress_bar=false", f"output_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-000001").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    for pid in _process_tree(proc.pid):
        os.kill(pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.startswith("genrl train:")]
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and "stopped by signal 15 after step" in lines[0], err[-3000:]
    stopped = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"]
    assert 1 <= stopped < 5 and f"after step {stopped};" in lines[0]
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"] == 5


def test_sigterm_checkpoints_the_step_and_the_rerun_matches_an_uninterrupted_run(tmp_path, base_model):
    """The digits flow policy under SIGTERM mid-run: exit 143 with one line, a checkpoint at the
    step it stopped after, and the rerun's final weights and metrics equal a straight run's."""
    overrides = [*TINY_ONLINE, f"policy.model={base_model}", "max_steps=6", "checkpoint.every=0", "eval.every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(run):
        return [
            sys.executable,
            "-m",
            "genrl.cli",
            "train",
            "configs/digits/flowgrpo.yaml",
            *overrides,
            f"output_dir={run}",
        ]

    straight, part = tmp_path / "straight", tmp_path / "part"
    assert subprocess.run(cmd(straight), cwd=ROOT, env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen(cmd(part), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = part / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and '"step": 1,' in metrics.read_text()):  # step 1 finished
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.startswith("genrl train:")]
    assert proc.returncode == 128 + signal.SIGTERM and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    stopped = load_checkpoint(latest_checkpoint(str(part / "checkpoints")))["step"]
    assert 1 <= stopped < 6 and f"after step {stopped}" in lines[0]
    assert not (part / "final_metrics.json").exists()
    assert subprocess.run(cmd(part), cwd=ROOT, env=env, capture_output=True).returncode == 0  # resumes
    a, b = (load_checkpoint(latest_checkpoint(str(d / "checkpoints"))) for d in (straight, part))
    assert a["step"] == b["step"] == 6
    assert_same_state(a, b)  # every tensor: weights, optimizer, EMA, sampler
    assert metrics_rows(straight) == metrics_rows(part)


def test_a_stop_of_a_run_launched_with_resume_false_does_not_say_that_a_rerun_resumes():
    """Rerunning a ``resume=false`` command starts over (and removes the checkpoint just written)."""
    assert Preempted(3, "ck", 15).args[0].endswith("; rerun to resume")
    assert "rerun without resume=false to resume" in Preempted(3, "ck", 15, resume=False).args[0]
