"""Issue 18's correctness side: no reference forward at ``beta = 0`` unless ``log.kl_every`` asks,
the OpenMP defaults the CLI sets before torch loads, and ``genrl bench --overhead`` on a tiny run.
(Speed itself is measured in ``benchmarks/overhead.py``, never timed here.)"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import get_dummy_pipeline

from genrl.cli import OPENMP_DEFAULTS, configure_openmp
from genrl.config import ObjectiveConfig, OnlineConfig, PolicyConfig, TrainConfig, load_config
from genrl.policies.flow import FlowPolicy
from genrl.registry import OBJECTIVES
from genrl.tasks.digits import prompt_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _update(measure_kl: bool, beta: float):
    """One ``update`` of a tiny FlowPolicy; returns its metrics and how often the reference ran."""
    from accelerate import Accelerator

    from genrl.trainers.online import update

    policy = FlowPolicy(PolicyConfig(num_steps=4), get_dummy_pipeline())
    g = torch.Generator().manual_seed(0)
    prompts = [prompt_for(i) for i in range(4)]
    traj = policy.rollout(prompts, [{}] * 4, [0, 0, 1, 1], g, policy.window(g))
    calls = []
    reference = policy.reference
    policy.reference = lambda: calls.append(1) or reference()  # counts, then the real context manager
    cfg = SimpleNamespace(
        train=TrainConfig(batch_size=2, lr=1e-3, timestep_chunk=0),
        objective=ObjectiveConfig(clip_range=0.2, beta=beta),
    )
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    m = update(
        policy, traj, adv, opt, OBJECTIVES.get("grpo"), cfg, Accelerator(cpu=True), None, g, measure_kl=measure_kl
    )
    return m, len(calls)


@pytest.mark.parametrize(
    "measure_kl,beta,ref_forwards",
    [(False, 0.0, 0), (True, 0.0, 1), (False, 0.1, 2), (True, 0.1, 2)],  # 2 minibatches of 2 samples
)
def test_reference_runs_only_when_the_loss_needs_it_or_kl_is_asked(measure_kl, beta, ref_forwards):
    m, calls = _update(measure_kl, beta)
    assert calls == ref_forwards
    assert ("loss/kl" in m) == (ref_forwards > 0)
    if ref_forwards:
        assert m["loss/kl"] >= 0


def test_kl_every_is_validated():
    with pytest.raises(ValueError, match="kl_every"):
        load_config(OnlineConfig, "configs/digits/flowgrpo.yaml", ["log.kl_every=-1"])


def test_kl_every_logs_the_kl_on_steps_n_2n_as_eval_every_counts(tmp_path, base_model):
    """``log.kl_every=N`` measured the KL on logged steps 1, N+1, 2N+1 (a 0-based count), so that
    ``max_steps = kl_every = 10`` logged it once, before any update, where it is 0."""
    from genrl.trainers.online import train

    cfg = load_config(
        OnlineConfig,
        "configs/digits/flowgrpo.yaml",
        [
            f"policy.model={base_model}",
            "policy.num_steps=2",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.batch_size=4",
            "train.batch_size=4",
            "eval.every=0",
            "eval.seeds_per_prompt=1",
            "checkpoint.every=0",
            "log.report_to=[]",
            "log.progress_bar=false",
            "log.kl_every=2",
            "max_steps=5",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss/kl" in r] == [2, 4]
    assert all(r["loss/kl"] > 0 for r in rows if "loss/kl" in r)  # after an update: the policy has moved


def test_openmp_defaults_respect_the_users_choice():
    env = {}
    assert configure_openmp(env) == OPENMP_DEFAULTS and env == OPENMP_DEFAULTS
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}, {"GENRL_OPENMP_DEFAULTS": "0"}):
        env = dict(mine)
        assert configure_openmp(env) == {} and env == mine
    # the CLI sets them before torch loads: importing it must not import torch
    code = "import sys, genrl.cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_thread_governor_moves_to_the_faster_count_and_keeps_probing():
    """``train.adaptive_threads``: with made-up iteration times (a machine that turns busy, then idle
    again), the governor starts at the launch's count, probes 1 thread, moves to it when 2 threads turn
    slower, and moves back when they are faster again; the first iteration (a warm-up) is not timed."""
    from genrl.threads import ThreadGovernor

    before = torch.get_num_threads()
    try:
        gov = ThreadGovernor(2, probe_every=3, margin=1.05, window=1)
        cost = {1: 1.0, 2: 0.6}  # idle: 2 threads faster
        used = []
        for it in range(24):
            if it == 8:
                cost = {1: 1.0, 2: 2.6}  # busy: 2 threads 2.6x slower (benchmarks/overhead.md, tiny SD3)
            if it == 16:
                cost = {1: 1.0, 2: 0.6}
            n = gov.before_iteration()
            assert torch.get_num_threads() == n
            used.append(n)
            gov.after_iteration(cost[n] if it else 100.0, warmup=it == 0)
        assert used[:3] == [2, 2, 1]  # warm-up, the launch's count timed, then the first probe
        assert used[6] == 2 and used[12] == 1 and used[23] == 2  # idle: 2; busy: 1; idle again: 2
        assert used.count(1) < 12  # probes, not a coin flip
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        ThreadGovernor(2, probe_every=1)
    with pytest.raises(ValueError):
        ThreadGovernor(2, window=0)
    one = ThreadGovernor(1)  # one candidate: nothing to probe
    assert [one.before_iteration() for _ in range(3)] == [1, 1, 1]


def test_one_slow_iteration_does_not_move_the_governor_off_the_faster_count():
    """With a running mean (weight 0.5 on the newest timing), one slow iteration of the faster count on an
    idle machine (here 3x) switched to 1 thread for the next 10 iterations; the median of the last three
    does not move, while two slow iterations in a row (the machine turned busy) still switch."""
    from genrl.threads import ThreadGovernor

    before = torch.get_num_threads()
    try:
        gov = ThreadGovernor(2, probe_every=10, margin=1.05)
        used = []
        for it in range(40):
            n = gov.before_iteration()
            used.append(n)
            seconds = {1: 1.0, 2: 0.8}[n]
            if n == 2 and it == 15:
                seconds = 2.4  # one spike
            if n == 2 and it >= 30:
                seconds = 2.4  # busy from here
            gov.after_iteration(seconds, warmup=it == 0)
        assert used[16:30].count(1) <= 1  # at most the scheduled probe
        assert used[33:40] == [1] * 7  # busy: 1 thread after two slow iterations
    finally:
        torch.set_num_threads(before)


def test_bench_overhead_reports_every_phase_and_the_ratio(tmp_path, base_model):
    out, js = tmp_path / "overhead.md", tmp_path / "overhead.json"
    tiny = [
        f"policy.model={base_model}",
        "policy.num_steps=4",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.batch_size=8",
        "train.batch_size=4",
        "eval.seeds_per_prompt=1",
        "log.report_to=[]",
    ]
    cmd = [sys.executable, "-m", "genrl.cli", "bench", "configs/digits/flowgrpo.yaml", "--overhead"]
    args = ["--steps", "2", "--warmup", "1", "--threads", "1", "--out", str(out), "--json", str(js), "--set", *tiny]
    proc = subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = json.loads(js.read_text())
    loop, bare = r["loop"], r["bare"]
    assert r["threads"] == 1 and loop["eval_every"] == 25
    for phase in ("rollout", "reward", "advantages", "update", "eval_amortised"):
        assert loop[phase] >= 0, phase
    # the phases and the rest add up to the iteration's wall time
    parts = sum(loop[p] for p in ("rollout", "reward", "advantages", "update", "other"))
    assert parts == pytest.approx(loop["iteration"])
    assert bare["rollout"] > 0 and bare["update"] > 0 and bare["eval"] > 0
    assert bare["eval_amortised"] == pytest.approx(bare["eval"] / 25)
    # each timed iteration against the bare compute timed right after it; the ratio is their median
    assert len(loop["iterations"]) == len(bare["totals"]) == len(r["ratios"]) == 2
    assert sum(loop["iterations"]) / 2 == pytest.approx(loop["iteration"])
    assert sum(bare["totals"]) / 2 == pytest.approx(bare["rollout"] + bare["update"])
    for it, b, ratio in zip(loop["iterations"], bare["totals"], r["ratios"]):
        assert ratio == pytest.approx((it + loop["eval_amortised"]) / (b + bare["eval_amortised"]))
    assert r["overhead_ratio"] == pytest.approx(sum(r["ratios"]) / 2)  # the median of two
    whole = [(it + loop["eval_amortised"]) / b for it, b in zip(loop["iterations"], bare["totals"])]
    assert r["overhead_ratio_eval_whole"] == pytest.approx(sum(whole) / 2)  # the evaluation all overhead
    assert loop["other"] < min(bare["totals"]) / 2  # the bare compute between iterations is not in them
    text = out.read_text()
    assert (
        "overhead ratio" in text and f"**{r['overhead_ratio']:.2f}** | {r['overhead_ratio_eval_whole']:.2f} |" in text
    )
    from genrl.overhead import beyond_network

    shares = beyond_network(r)  # the shares add up to the ratio of the means, less 1
    assert shares["total"] == pytest.approx(
        (loop["iteration"] + loop["eval_amortised"]) / (bare["rollout"] + bare["update"] + bare["eval_amortised"]) - 1
    )
    assert f"| 1 | {shares['rollout']:+.1%} |" in out.read_text()
    # bad input: one line, exit 2, nothing written
    for extra, word in ((["--steps", "1", "--warmup", "0"], "--warmup"), (["--set", "policy.name=vlm"], "denoising")):
        bad = subprocess.run(
            cmd + [*extra, "--json", str(tmp_path / "bad.json")], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert bad.returncode == 2 and word in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_bare_evaluation_makes_the_evaluations_network_calls(tmp_path, base_model, monkeypatch, guidance):
    """The evaluation's bare compute (counted as compute, not overhead, in the overhead ratio) calls the
    network on the same batches, as often, with the same CFG, as the run's own evaluation does."""
    from genrl.models import prepare_models
    from genrl.overhead import bare_calls, load
    from genrl.registry import POLICIES, TASKS

    cfg = load(
        "configs/digits/flowgrpo.yaml",
        [
            f"policy.model={base_model}",
            "policy.num_steps=4",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.batch_size=4",
            "train.batch_size=4",
            "eval.seeds_per_prompt=3",
            "eval.batch_size=7",  # 10 prompts x 3 seeds: batches of 7, 7, 7, 7, 2
            "eval.num_steps=3",
            f"eval.guidance_scale={guidance}",
            "log.report_to=[]",
        ],
    )
    calls, policy_cls = [], POLICIES.get(cfg.policy.name)
    predict, decode = policy_cls.predict, policy_cls.decode

    def counted_predict(self, model, x, idx, cond, scale, num_steps, *args):
        calls.append(("predict", x.shape[0], scale, num_steps))
        return predict(self, model, x, idx, cond, scale, num_steps, *args)

    monkeypatch.setattr(policy_cls, "predict", counted_predict)
    monkeypatch.setattr(policy_cls, "decode", lambda self, x: calls.append(("decode", x.shape[0])) or decode(self, x))
    _, evaluation = bare_calls(cfg)
    calls.clear()
    evaluation()
    bare = list(calls)
    prepare_models(cfg)
    calls.clear()
    TASKS.get(cfg.task).from_config(cfg).evaluate(
        policy_cls.from_pretrained(cfg.policy), {}, cfg.eval, str(tmp_path), 0
    )
    sizes = [7, 7, 7, 7, 2]
    assert bare == calls == [c for b in sizes for c in [("predict", b, guidance, 3)] * 3 + [("decode", b)]]


@pytest.mark.parametrize("mode", ["regional", pytest.param("full", marks=pytest.mark.slow)])  # CI: regional
def test_compiled_denoiser_keeps_the_log_prob_contract(mode):
    """``policy.compile``: the rollout's log-probs re-scored by the compiled network give a ratio of 1
    (compiled kernels for both, as in training), equal to the eager network's up to float32 rounding,
    and parameter names (so checkpoints) are unchanged."""
    torch.manual_seed(0)
    eager = FlowPolicy(PolicyConfig(num_steps=4), get_dummy_pipeline())
    torch.manual_seed(0)
    compiled = FlowPolicy(PolicyConfig(num_steps=4, compile=mode), get_dummy_pipeline())
    assert compiled.trainable_state_dict().keys() == eager.trainable_state_dict().keys()
    prompts = [prompt_for(i) for i in range(4)]
    trajs = []
    for policy in (eager, compiled):
        g = torch.Generator().manual_seed(0)
        trajs.append(policy.rollout(prompts, [{}] * 4, [0, 0, 1, 1], g, policy.window(g)))
    torch.testing.assert_close(trajs[1].log_probs_old, trajs[0].log_probs_old, rtol=0, atol=1e-4)
    for policy, traj in zip((eager, compiled), trajs):
        lp, _ = policy.log_prob(traj, slice(0, None))  # all steps in one forward, with gradient
        torch.testing.assert_close(torch.exp(lp - traj.log_probs_old), torch.ones_like(lp), rtol=0, atol=1e-5)


def test_regional_compile_without_blocks_is_a_clear_error():
    from genrl.policies.denoiser import compile_denoiser

    with pytest.raises(ValueError, match="policy.compile=full"):
        compile_denoiser(torch.nn.Linear(2, 2), "regional")


def test_fused_adamw_takes_the_same_steps():
    from genrl.trainers.common import make_optimizer

    torch.manual_seed(0)
    weights = [torch.randn(16, 8), torch.randn(8)]
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = make_optimizer(params, TrainConfig(lr=1e-2, weight_decay=1e-2, fused_adamw=fused))
        assert opt.defaults["fused"] is (True if fused else None)
        for step in range(3):
            loss = sum((p * (step + 1)).square().sum() for p in params)
            loss.backward()
            opt.step()
            opt.zero_grad()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, weights[0] if a.dim() == 2 else weights[1])  # the weights moved


def test_rollout_in_the_updates_autocast_gives_ratio_one_under_bf16():
    """``train.mixed_precision=bf16``: the trainer rolls out under the update's autocast, so re-scoring
    the rollout reproduces its log-probs exactly (fp32 log-probs); rolled out in fp32 instead, the
    trained LoRA weights would make the first update's ratio drift from 1."""
    torch.manual_seed(0)
    policy = FlowPolicy(PolicyConfig(num_steps=4), get_dummy_pipeline())
    for p in policy.trainable_parameters():  # trained adapters: LoRA's B is no longer zero
        p.data += 0.05 * torch.randn_like(p)
    prompts = [prompt_for(i) for i in range(4)]
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731  what accelerator.autocast() enters
    drift = {}
    for rollout_autocast in (True, False):
        g = torch.Generator().manual_seed(0)
        with bf16() if rollout_autocast else torch.autocast("cpu", enabled=False):
            traj = policy.rollout(prompts, [{}] * 4, [0, 0, 1, 1], g, policy.window(g))
        with bf16():
            lp, _ = policy.log_prob(traj, slice(0, 1))  # the rollout's own batch layout
        assert lp.dtype == torch.float32 and traj.log_probs_old.dtype == torch.float32
        drift[rollout_autocast] = (lp - traj.log_probs_old[:, :1]).abs().max().item()
    assert drift[True] == 0.0
    # what the trainer did before rolling out under autocast: a drift beyond Flow-GRPO's clip range (1e-4)
    assert drift[False] > 1e-4


def _bf16_rollout_and_rescoring(**policy_options):
    """A tiny flow policy with trained (non-zero) LoRA adapters: a rollout of 4 prompts under bf16 autocast
    and its first step re-scored in the rollout's own batch layout with gradient. ``(traj, log_probs [4, 1])``."""
    torch.manual_seed(0)
    policy = FlowPolicy(PolicyConfig(num_steps=4, **policy_options), get_dummy_pipeline())
    for p in policy.trainable_parameters():  # trained adapters: LoRA's B is no longer zero
        p.data += 0.05 * torch.randn_like(p)
    prompts = [prompt_for(i) for i in range(4)]
    g = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        traj = policy.rollout(prompts, [{}] * 4, [0, 0, 1, 1], g, policy.window(g))
        lp, _ = policy.log_prob(traj, slice(0, 1))
    return traj, lp


def test_compiled_rollout_runs_the_updates_graph_so_bf16_ratios_start_at_one():
    """``policy.compile`` with ``train.mixed_precision=bf16``: a compiled network runs another graph
    without gradient than with it, whose bf16 rounding moved the log-probs by ~1.6e-4 (a first-update
    clip fraction of 0.14 on the digits recipe). The rollout runs its recorded steps through the
    update's graph, so re-scoring them with gradient, as the update does, reproduces them exactly."""
    traj, lp = _bf16_rollout_and_rescoring(compile="regional")
    assert lp.requires_grad and not traj.log_probs_old.requires_grad
    assert (lp - traj.log_probs_old[:, :1]).abs().max().item() == 0.0


@pytest.mark.parametrize("compile_mode", ["none", "regional"])
@pytest.mark.parametrize("cfg_grad", ["both", "cond"])
def test_guided_rollouts_are_rescored_by_the_same_forwards_under_bf16(cfg_grad, compile_mode):
    """With CFG, ``policy.cfg_grad=cond`` runs the unconditional branch as its own forward without a graph
    (``guidance_branches``), in rollouts as in the update, so re-scoring a rollout in its own batch layout
    under bf16 still reproduces its log-probs exactly, eager and compiled. (When the rollout kept the one
    batched forward and only the update split it, the two forwards differed in bf16 rounding.)"""
    traj, lp = _bf16_rollout_and_rescoring(guidance_scale=3.0, cfg_grad=cfg_grad, compile=compile_mode)
    assert lp.requires_grad
    assert (lp - traj.log_probs_old[:, :1]).abs().max().item() == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast runs where a GPU is visible")
@pytest.mark.parametrize("argv", [["train", "configs/digits/flowgrpo.yaml"], ["train", "configs/digits/seppo.yaml"]])
def test_fp16_without_a_gpu_is_refused_before_anything_is_written(tmp_path, capsys, argv):
    """accelerate enables fp16 autocast off the CPU only: on a CPU ``train.mixed_precision=fp16`` trained in
    fp32 and said nothing. It is one line naming the key, exit code 2, and no run directory."""
    from genrl.cli import main

    run = tmp_path / "run"
    rc = main([*argv, f"output_dir={run}", "train.mixed_precision=fp16"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "train.mixed_precision=" in lines[0] and "GPU" in lines[0], err
    assert not run.exists()
