"""Faults users of the reference implementations hit, and genrl's agreement with the authors' code
where they are right: one test (or more) per kind of fault, each asserting the right value."""

import json
import math
import os

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import get_dummy_pipeline, get_dummy_vlm_components
from PIL import Image

from genrl.advantages import weighted_advantages
from genrl.cli import main as cli_main
from genrl.config import (
    ConfigError,
    OnlineConfig,
    OnlineVLMConfig,
    PolicyConfig,
    VLMDataConfig,
    VLMLoraConfig,
    VLMPolicyConfig,
    config_from_dict,
    load_config,
)
from genrl.ema import EMA
from genrl.kl_control import AdaptiveKL
from genrl.objectives.common import LOSS_AGGS
from genrl.policies.flow import FlowPolicy
from genrl.policies.prompt_cache import PromptCache
from genrl.policies.vlm import VLMPolicy
from genrl.registry import OBJECTIVES
from genrl.rollouts import Rollout, dynamic_sampling
from genrl.samplers import VarianceAwareSampler
from genrl.seeding import derive_seed
from genrl.tasks.digits import prompt_for
from genrl.trainers.online import update
from genrl.trajectory import Trajectory

ACC = None


def _accelerator():
    global ACC
    ACC = ACC or Accelerator(cpu=True)
    return ACC


def _deltas(policy, traj, adv, cfg, objective="grpo"):
    """The parameter change of one ``update`` with SGD(lr=1) and no clipping, i.e. minus the gradient."""
    params = policy.trainable_parameters()
    start = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=1.0)
    update(
        policy, traj, adv, opt, OBJECTIVES.get(objective), cfg, _accelerator(), None, torch.Generator().manual_seed(0)
    )
    out = torch.cat([(p.detach() - s).flatten() for p, s in zip(params, start)])
    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    return out


# ----------------------------------------------------------------------------- 1. gradient accumulation


def _vlm_rollout():
    cfg = VLMPolicyConfig(model="unused", lora=VLMLoraConfig(rank=4, alpha=8.0), max_new_tokens=8)
    policy = VLMPolicy(cfg, **get_dummy_vlm_components("qwen2_vl"))
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (28, 56, 3), dtype=np.uint8))
    traj = policy.rollout(
        ["what is the sum ?"] * 8, [{"image": img}] * 8, torch.arange(8) // 4, torch.Generator().manual_seed(0), []
    )
    mask = torch.zeros_like(traj.mask)
    for i in range(8):  # responses of lengths 1..8
        mask[i, : i + 1] = 1
    traj.mask = mask
    return policy, traj


@pytest.mark.parametrize("loss_agg", LOSS_AGGS)
def test_gradient_accumulation_keeps_the_vlm_gradient(loss_agg):
    """8 responses of lengths 1..8: batch 8 x GA 1, 4 x 2 and 2 x 4 give one gradient (before the fix,
    token-mean's were 15% apart: each micro-batch divided by its own token count)."""
    policy, traj = _vlm_rollout()
    adv = torch.linspace(-1.5, 1.5, 8)
    grads = []
    for bs, ga in [(8, 1), (4, 2), (2, 4)]:
        cfg = load_config(
            OnlineVLMConfig,
            None,
            [
                f"train.batch_size={bs}",
                f"train.gradient_accumulation_steps={ga}",
                "rollout.prompts_per_step=2",
                "rollout.group_size=4",
                "rollout.batch_size=8",
                "train.max_grad_norm=0",
                f"objective.loss_agg={loss_agg}",
                "objective.clip_range=0.2",
            ],
        )
        grads.append(_deltas(policy, traj, adv, cfg))
    assert grads[0].abs().max() > 0
    for g in grads[1:]:
        assert torch.nn.functional.cosine_similarity(g, grads[0], dim=0) > 1 - 1e-6
        torch.testing.assert_close(g, grads[0], rtol=1e-4, atol=1e-7)


def test_masked_samples_do_not_reweight_flow_micro_batches():
    """Flow policy: 3 of 8 samples masked (failed rewards) make micro-batches unequal; GA and timestep
    chunks still give the full batch's gradient, and masking equals dropping the samples."""
    policy = FlowPolicy(PolicyConfig(num_steps=4), get_dummy_pipeline())
    prompts = [prompt_for(i % 4) for i in range(8)]
    g = torch.Generator().manual_seed(0)
    traj = policy.rollout(prompts, [{}] * 8, [i % 4 for i in range(8)], g, policy.window(g))
    traj.mask[[0, 1, 2]] = 0
    adv = torch.linspace(-1, 1, 8)

    def cfg(bs, ga, chunk=0, total=8):
        return load_config(
            OnlineConfig,
            None,
            [
                f"train.batch_size={bs}",
                f"train.gradient_accumulation_steps={ga}",
                f"train.timestep_chunk={chunk}",
                "rollout.prompts_per_step=2",
                f"rollout.group_size={total // 2}",
                f"rollout.batch_size={total}",
                "train.max_grad_norm=0",
                "objective.clip_range=0.2",
            ],
        )

    full = _deltas(policy, traj, adv, cfg(8, 1))
    for c in (cfg(4, 2), cfg(2, 4, chunk=3)):
        torch.testing.assert_close(_deltas(policy, traj, adv, c), full, rtol=1e-4, atol=1e-8)
    keep = torch.arange(3, 8)  # Flow-GRPO drops such samples; masking them is the same loss
    kept = traj.index(keep)
    kept.mask = kept.mask.clone()
    torch.testing.assert_close(_deltas(policy, kept, adv[keep], cfg(5, 1, total=10)), full, rtol=1e-4, atol=1e-8)


def test_ratio_spread_is_the_same_however_the_update_is_split():
    """``ratio/std`` averaged each chunk's own std, so it shrank the finer the update was split (digits:
    0.00102 whole, 0.00065 with ``train.timestep_chunk=1``, which drops the spread between steps) while the
    gradient and every other metric stayed the same. It is now the std over all the step's actions."""
    policy = FlowPolicy(PolicyConfig(num_steps=4), get_dummy_pipeline())
    prompts = [prompt_for(i % 4) for i in range(8)]
    g = torch.Generator().manual_seed(0)
    traj = policy.rollout(prompts, [{}] * 8, [i % 4 for i in range(8)], g, policy.window(g))
    traj.mask[[0, 1]] = 0
    traj.log_probs_old = traj.log_probs_old + 0.01 * torch.randn(traj.log_probs_old.shape, generator=g)  # r != 1
    adv, params = torch.linspace(-1, 1, 8), policy.trainable_parameters()
    start = [p.detach().clone() for p in params]
    metrics = []
    for bs, ga, chunk in [(8, 1, 0), (8, 1, 1), (4, 2, 0), (2, 4, 3)]:
        cfg = load_config(
            OnlineConfig,
            None,
            [f"train.batch_size={bs}", f"train.gradient_accumulation_steps={ga}", f"train.timestep_chunk={chunk}"]
            + ["rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.batch_size=8", "train.max_grad_norm=0"],
        )
        with torch.no_grad():
            for p, s0 in zip(params, start):
                p.copy_(s0)
        opt = torch.optim.SGD(params, lr=1.0)
        metrics.append(update(policy, traj, adv, opt, OBJECTIVES.get("grpo"), cfg, _accelerator(), None, g))
    assert metrics[0]["ratio/std"] > 1e-3
    steps = [k for k in metrics[0] if k.startswith("ratio/std_step_")]
    assert len(steps) >= 2
    for m in metrics[1:]:
        for key in ("ratio/std", "ratio/mean", *steps):
            assert m[key] == pytest.approx(metrics[0][key], rel=1e-5), key


# ----------------------------------------------------------------------------- 2. windows without a trained step


@pytest.mark.parametrize("seed", [0, 1])
def test_cps_window_of_one_never_lands_on_the_deterministic_last_step(seed):
    """configs/digits/flowgrpo.yaml policy.sde=cps policy.sde_window_size=1 died at a random step
    (seed 0 at step 1, seed 1 at step 5): the window is drawn only where a step can be trained."""
    cfg = load_config(OnlineConfig, "configs/digits/flowgrpo.yaml", ["policy.sde=cps", "policy.sde_window_size=1"])
    policy = FlowPolicy(cfg.policy, get_dummy_pipeline())
    assert policy.trained_steps == list(range(9))
    starts = set()
    for step in range(40):  # the trainer's own window draws
        window = policy.window(torch.Generator().manual_seed(derive_seed(seed, step)))
        starts.add(window[0])
        if step < 6:
            traj = policy.rollout([prompt_for(1)] * 2, [{}] * 2, [0, 0], torch.Generator().manual_seed(step), window)
            assert traj.step_info["step_index"][0].tolist() == window
    assert starts == set(range(9))  # every trainable step drawn, never 9


def test_a_window_that_can_train_nothing_fails_at_start():
    with pytest.raises(ConfigError, match="sde_window_range"):
        config_from_dict(PolicyConfig, {"sde": "cps", "sde_window_size": 1, "sde_window_range": [9, 10]})
    # the same kind of fault from timestep_fraction, also at config time
    with pytest.raises(ConfigError, match="only steps below 5 are trained"):
        config_from_dict(PolicyConfig, {"sde_window_size": 1, "sde_window_range": [5, 7], "timestep_fraction": 0.5})


def test_ddim_window_skips_a_deterministic_last_step():
    from diffusers import DDIMScheduler
    from test_diffusion_policy import build

    from genrl.policies.diffusion import DiffusionPolicy

    pipe = build()
    pipe.scheduler = DDIMScheduler.from_config({**pipe.scheduler.config, "set_alpha_to_one": True})
    policy = DiffusionPolicy(PolicyConfig(name="diffusion", sde="ddim", eta=1.0, num_steps=4, sde_window_size=1), pipe)
    assert policy.trained_steps == [0, 1, 2]
    assert {policy.window(torch.Generator().manual_seed(s))[0] for s in range(30)} == {0, 1, 2}
    # a window range holding only that step: an error when the policy is built, before any rollout
    last = PolicyConfig(name="diffusion", sde="ddim", eta=1.0, num_steps=4, sde_window_size=1, sde_window_range=[3, 4])
    with pytest.raises(ValueError, match="no SDE window can hold a trained step"):
        DiffusionPolicy(last, pipe)


# ----------------------------------------------------------------------------- 3. VLM images the processor refuses


@pytest.mark.parametrize("size", [(20, 6000), (3000, 12), (10, 2500)])
def test_images_the_qwen_processor_refuses_fail_at_start_naming_file_and_row(tmp_path, size):
    from genrl.tasks.vlm_data import VLMDataTask

    Image.new("RGB", (56, 28), (1, 2, 3)).save(tmp_path / "ok.png")
    Image.new("RGB", size, (200, 10, 10)).save(tmp_path / "long.png")
    rows = [
        {"problem": "<image> x", "answer": "1", "images": ["ok.png"]},
        {"problem": "<image> y", "answer": "2", "images": ["long.png"]},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        ValueError,
        match=r"d.jsonl:2: image 0 \(.*long.png.*\) cannot be fed to the Qwen-VL "
        r"processor: absolute aspect ratio",
    ):
        VLMDataTask(VLMDataConfig(train_files=[str(tmp_path / "d.jsonl")]))


# ----------------------------------------------------------------------------- 5. MixGRPO advantages


def test_masked_sample_leaves_every_rewards_group_statistics():
    rewards = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([0.0, float("nan"), 1.0, 0.0])}
    adv = weighted_advantages(rewards, {"a": 1.0, "b": 1.0}, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(adv, torch.tensor([-2.043, 0.0, 1.681, 0.362]), atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- 6. prompt-embedding cache


def test_prompt_cache_is_bounded_and_least_recently_used_goes_first():
    calls = []

    def encode(prompts):
        calls.extend(prompts)
        return [{"e": torch.full((256,), float(len(p)))} for p in prompts]  # 1 KiB each

    cache = PromptCache(max_mb=3 / 1024, where="cpu", device=torch.device("cpu"))  # 3 entries
    out = cache.get(["a", "bb", "ccc", "a"], encode)
    assert [float(o["e"][0]) for o in out] == [1, 2, 3, 1] and calls == ["a", "bb", "ccc"]
    cache.get(["a"], encode)  # a is now the most recent
    cache.get(["dddd"], encode)  # evicts bb, the least recently used
    assert len(cache) == 3 and cache.nbytes == 3 * 1024
    calls.clear()
    cache.get(["a", "ccc", "bb"], encode)
    assert calls == ["bb"]
    big = cache.get(["x" * 5], lambda ps: [{"e": torch.zeros(4096)} for _ in ps])  # over the bound: used, not kept
    assert big[0]["e"].numel() == 4096 and cache.nbytes <= 3 * 1024


def test_flow_policy_cache_stays_under_its_bound_with_identical_conditioning():
    prompts = [prompt_for(i) for i in range(10)]
    unbounded = FlowPolicy(PolicyConfig(), get_dummy_pipeline())
    ref = unbounded.encode_prompts(prompts)
    entry = sum(v[0].numel() * v[0].element_size() for v in ref.values())
    small = FlowPolicy(
        PolicyConfig(prompt_cache_mb=3 * entry / 2**20, prompt_cache_device="cpu"), get_dummy_pipeline()
    )
    got = small.encode_prompts(prompts)
    assert len(small._prompt_cache) == 3 and small._prompt_cache.nbytes <= 3 * entry
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])
    assert len(FlowPolicy(PolicyConfig(prompt_cache_mb=0), get_dummy_pipeline())._prompt_cache) == 0


def test_a_prompts_conditioning_does_not_depend_on_the_prompts_encoded_with_it():
    """Bit for bit: the digits encoder's output for a prompt differs in the last bits with the batch
    it is encoded in, so the cache encodes each new prompt alone (else resume is not exact)."""
    prompts = [prompt_for(i) for i in range(10)]
    together = FlowPolicy(PolicyConfig(), get_dummy_pipeline()).encode_prompts(prompts)
    for i in (0, 7):
        alone = FlowPolicy(PolicyConfig(), get_dummy_pipeline()).encode_prompts([prompts[i]])
        assert all(torch.equal(alone[k][0], together[k][i]) for k in alone), prompts[i]


# ----------------------------------------------------------------------------- 7. one-line user errors


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["policy.model=/no/such/model"], "/no/such/model"),
        (["task=prompts", "data.train_files=[/no/such/prompts.txt]"], "/no/such/prompts.txt"),
        (["policy.name=nope"], "policy.name='nope': unknown policy"),
        (["policy.family=nope"], "policy.family='nope': unknown family"),
        (["rewards.nope=1.0"], "rewards.nope=1.0: unknown reward"),
        (["objective.name=nope"], "objective.name='nope': unknown objective"),
        (["objective.name=my_pkg.losses.fn"], "a plug-in is named package.module:attribute (my_pkg.losses:fn?)"),
        (["reward_args.digits.nope=1"], "reward_args.digits"),
        (["policy.lora.target_modules=[nope]"], "policy.lora.target_modules=['nope']"),
    ],
)
def test_user_mistakes_are_one_line_with_exit_code_2(tmp_path, capsys, base_model, overrides, needle):
    # the 5-step base (a later policy.model wins): the recipe's own would be pretrained first where it must load
    cmd = ["train", "configs/digits/flowgrpo.yaml", f"output_dir={tmp_path / 'run'}", f"policy.model={base_model}"]
    rc = cli_main([*cmd, *overrides])
    err = capsys.readouterr().err  # model loading may draw a progress bar first
    lines = [line for line in err.splitlines() if line.startswith("genrl train: ")]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert err.endswith(lines[0] + "\n")  # the error is the last line
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_reward_option_typo_fails_before_any_model_is_prepared(tmp_path, capsys, monkeypatch):
    """The recipe's own base model (task:digits) is pretrained on first use: a typo in reward_args must
    fail before that, in a second, not after minutes of pretraining (the cache stays empty)."""
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    rc = cli_main(
        ["train", "configs/digits/flowgrpo.yaml", f"output_dir={tmp_path / 'run'}", "reward_args.digits.nope=1"]
    )
    line = _one_line_error(capsys, rc)
    assert "reward_args.digits" in line and "nope" in line
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "run").exists()


def _one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("genrl train: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err and err.endswith(lines[0] + "\n"), err
    return lines[0]


@pytest.mark.parametrize("kind", ["directory", "binary", "missing", "empty", "comments only"])
def test_a_config_that_is_no_yaml_file_is_one_line_naming_it(tmp_path, capsys, kind):
    """An empty file (a failed `>` redirect) trained the default job (and `genrl prepare FILE` prepared it)."""
    path = tmp_path / "config.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(128, 256)) * 4)
    elif kind != "missing":
        path.write_text("" if kind == "empty" else "# trainer: online\n\n")
    says = {"directory": "is a directory", "binary": "not a text file", "missing": "no such"}.get(kind, "empty")
    for command in ("train", "prepare") if kind in ("binary", "empty", "comments only") else ("train",):
        rc = cli_main(
            [command, str(path), f"output_dir={tmp_path / 'run'}"] if command == "train" else [command, str(path)]
        )
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"genrl {command}: ") and str(path) in err and says in err, err
    assert not (tmp_path / "run").exists()


def test_an_output_dir_that_is_a_file_is_refused_before_anything_loads(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a run\n")
    line = _one_line_error(capsys, cli_main(["train", "configs/digits/flowgrpo.yaml", f"output_dir={taken}"]))
    assert f"output_dir='{taken}' is a file" in line and taken.read_text() == "not a run\n"
    line = _one_line_error(capsys, cli_main(["train", "configs/digits/flowgrpo.yaml", f"output_dir={taken}/run"]))
    assert f"{taken} is a file" in line


def test_a_read_only_output_dir_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    """A folder on a read-only mount: the kernel's access() says not writable, even to root (chmod
    cannot make a folder read-only for root, so the mount's answer is injected here)."""
    import genrl.io

    frozen = tmp_path / "frozen"
    frozen.mkdir()
    (frozen / "old.txt").write_text("kept\n")
    real_access = os.access
    monkeypatch.setattr(
        genrl.io.os, "access", lambda p, mode: False if str(p).startswith(str(frozen)) else real_access(p, mode)
    )
    for out in (frozen, frozen / "run"):
        line = _one_line_error(capsys, cli_main(["train", "configs/digits/flowgrpo.yaml", f"output_dir={out}"]))
        assert f"{frozen} is not writable" in line and f"output_dir='{out}'" in line
    assert sorted(p.name for p in frozen.iterdir()) == ["old.txt"]  # nothing written


def test_a_missing_sft_config_names_its_path(tmp_path, capsys):
    overrides = [f"output_dir={tmp_path / 'run'}", "policy.model=sft:/no/such/sft.yaml"]
    line = _one_line_error(capsys, cli_main(["train", "configs/digit_sum/grpo.yaml", *overrides]))
    assert "/no/such/sft.yaml" in line and "no such config file" in line
    assert not (tmp_path / "run").exists()


def test_a_relative_sft_config_outside_the_repository_root_says_where_it_was_looked_for(tmp_path, capsys, monkeypatch):
    """The shipped VLM recipes name ``sft:configs/digit_sum/sft.yaml``, a path from the repository's
    root: run elsewhere, the error says that relative sft: paths are read from the current directory."""
    monkeypatch.chdir(tmp_path)
    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/digit_sum/grpo.yaml")
    line = _one_line_error(capsys, cli_main(["train", recipe, f"output_dir={tmp_path / 'run'}"]))
    assert f"sft:configs/digit_sum/sft.yaml: no such config file in the current directory ({tmp_path})" in line
    assert "repository's root" in line and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 8. overflowing ratios


POLICY_GRADIENT = [n for n in OBJECTIVES.names() if OBJECTIVES.meta(n).get("kind") != "preference"]


@pytest.mark.parametrize("name", POLICY_GRADIENT)
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_every_objective_is_finite_at_extreme_log_ratios(name, beta):
    log_old = torch.zeros(5, 3)
    log_new = torch.tensor(
        [[95.0, -95.0, 0.0], [1e4, -1e4, 1.0], [30.0, 0.0, -30.0], [0.0, 0.0, 0.0], [88.7, 0.5, -88.7]]
    ).requires_grad_(True)
    kl_type = "gaussian" if name in ("grpo_guard", "sage_grpo") else "k3"
    token_only = name == "capo"  # a model of the language-model head: a VLM policy's config
    cfg = config_from_dict(
        OnlineVLMConfig if token_only or kl_type == "k3" else OnlineConfig,  # k3: a token policy's KL
        {
            "objective": {"name": name, "beta": beta, "clip_range": 0.2, "kl_type": kl_type},
            "advantages": {"std": "none"},
            "policy": {"sde": "sage", "eta": 0.5}
            if name == "sage_grpo"
            else {"lora": {"rank": 0}}
            if token_only
            else {},
        },
    ).objective
    info = {
        "std": torch.full((5, 3), 0.1),
        "mean_sq_diff": torch.full((5, 3), 1e-3),
        "output_scale": torch.full((5, 3), 0.1),
        "grad_scale": torch.ones(5, 3),
        "step_index": torch.arange(3).expand(5, 3),
        "kl": log_new.abs() * 1e-2,
        "ref_log_probs": -log_new.detach(),
    }
    if token_only:  # CAPO's inputs: the head's outputs (k = 4, H = 2) and its shadow moments
        from genrl.objectives.capo import ShadowAdam

        gen = torch.Generator().manual_seed(0)
        info["head"] = {
            "hidden": torch.randn(5, 3, 2, generator=gen),
            "probs": torch.softmax(torch.randn(5, 3, 4, generator=gen), -1),
            "action": torch.nn.functional.one_hot(torch.randint(0, 4, (5, 3), generator=gen), 4).float(),
            "ids": torch.randint(0, 6, (5, 3, 4), generator=gen),
        }
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        info["objective_state"] = ShadowAdam(cfg.capo, 6, 2, opt)
    loss, metrics = OBJECTIVES.get(name)(
        log_new, log_old, torch.tensor([1.0, -1.0, 2.0, 0.5, -3.0]), torch.ones(5, 3), info, cfg
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_new.grad).all(), (loss, log_new.grad)
    assert all(math.isfinite(v) for v in metrics.values()), metrics


# ----------------------------------------------------------------------------- 9. SAGE-GRPO's adaptive KL


def test_adaptive_kl_controller_follows_sage_grpo():
    c = AdaptiveKL(target=1e-5, coef_min=1e-7, coef_max=1e-5)
    assert c.value == 1e-7
    for _ in range(50):
        c.update(0.0)
    assert c.value == pytest.approx(1e-7 + (1e-5 - 1e-7) * 50 / 100)
    for _ in range(50):
        c.update(0.0)  # update 100 ends the ramp: mean KL 0 < 0.5 target -> x1.1, bounded to 1e-5
    assert c.value == pytest.approx(1e-5)
    for _ in range(9):
        c.update(1.0)  # the mean of the last 10 still holds a 0: 0.9 > 1.5 target -> x0.9 each time
    assert c.value == pytest.approx(1e-5 * 0.9**9)
    for _ in range(200):
        c.update(1.0)
    assert c.value == pytest.approx(1e-7)  # bounded below
    c.update(1e-5)
    state = c.state_dict()
    d = AdaptiveKL(target=1e-5, coef_min=1e-7, coef_max=1e-5)
    d.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(12):
        c.update(2e-6)
        d.update(2e-6)
    # the last 10 values fall below 0.5 x target from the 9th of them on: x1.1 four times
    assert c.value == d.value and c.value == pytest.approx(1e-7 * 1.1**4)


def test_adaptive_kl_warmup_stays_within_its_bounds_when_the_target_is_set_apart():
    """objective.kl_target is a KL value, beta the coefficient's bound: the ramp had gone to the
    target (9.9e-4 after 99 updates with beta 1e-5, 99x the bound), or below kl_coef_min for a tiny one."""
    for target in (1e-3, 5e-8):
        c = AdaptiveKL(target=target, coef_min=1e-7, coef_max=1e-5)
        values = []
        for _ in range(150):
            c.update(target)
            values.append(c.value)
        assert all(1e-7 <= v <= 1e-5 * (1 + 1e-9) for v in values), (target, min(values), max(values))
        assert values[98] == pytest.approx(1e-7 + (1e-5 - 1e-7) * 99 / 100)


def test_sage_recipes_use_the_adaptive_controller():
    for path in ("configs/digits/sage.yaml", "configs/hunyuanvideo15/sage_videoalign.yaml"):
        o = load_config(OnlineConfig, path).objective
        assert o.kl_controller == "adaptive" and o.kl_coef_min == pytest.approx(o.beta / 100)
    o = load_config(OnlineConfig, "configs/hunyuanvideo15/sage_videoalign.yaml").objective
    assert (o.beta, o.kl_coef_min, o.kl_warmup) == (1e-5, 1e-7, 100)


def test_update_feeds_the_adaptive_controller():
    policy = FlowPolicy(PolicyConfig(num_steps=4, sde="sage", eta=0.5), get_dummy_pipeline())
    g = torch.Generator().manual_seed(0)
    traj = policy.rollout([prompt_for(i % 2) for i in range(4)], [{}] * 4, [0, 0, 1, 1], g, policy.window(g))
    cfg = load_config(
        OnlineConfig,
        None,
        [
            "objective.name=sage_grpo",
            "objective.beta=1e-2",
            "objective.kl_controller=adaptive",
            "objective.kl_coef_min=1e-4",
            "policy.sde=sage",
            "policy.eta=0.5",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.batch_size=4",
            "train.batch_size=2",
        ],
    )
    kl = AdaptiveKL(target=1e-2, coef_min=1e-4, coef_max=1e-2)
    out = update(
        policy,
        traj,
        torch.tensor([1.0, -1.0, 0.5, -0.5]),
        torch.optim.SGD(policy.trainable_parameters(), lr=0.1),
        OBJECTIVES.get("sage_grpo"),
        cfg,
        _accelerator(),
        None,
        torch.Generator().manual_seed(0),
        kl,
    )
    assert kl.updates == 2 and out["loss/kl_coef"] == pytest.approx((1e-4 + (1e-4 + 1e-2 * 0.99 / 100)) / 2)


# ----------------------------------------------------------------------------- 10. SAGE's equaliser median


def test_sage_equaliser_median_is_over_the_whole_schedule():
    from genrl.sde import sage_gradient_scale

    policy = FlowPolicy(PolicyConfig(num_steps=10, sde="sage", eta=0.5, sde_window_size=3), get_dummy_pipeline())
    sig = policy.sigmas(10)
    every = sage_gradient_scale(sig[:-1], sig[1:], 0.5)
    window = [6, 7, 8]
    traj = policy.rollout([prompt_for(3)], [{}], [0], torch.Generator().manual_seed(0), window)
    torch.testing.assert_close(traj.step_info["grad_scale"][0], every[window])
    only = sage_gradient_scale(sig[6:9], sig[7:10], 0.5)
    assert not torch.allclose(traj.step_info["grad_scale"][0], only)  # what a window-only median gave


# ----------------------------------------------------------------------------- 11. Dr. GRPO


def test_dr_grpo_refuses_std_normalised_advantages():
    with pytest.raises(ConfigError, match=r"advantages.std='group'.*dr_grpo"):
        config_from_dict(OnlineConfig, {"objective": {"name": "dr_grpo"}})
    config_from_dict(OnlineConfig, {"objective": {"name": "dr_grpo"}, "advantages": {"std": "none"}})


# ----------------------------------------------------------------------------- 12. Flow-GRPO's options


def test_flow_grpo_ema_warmup_and_interval():
    p = torch.nn.Parameter(torch.zeros(1))
    ema = EMA([p], decay=0.9, every=8, warmup=True)
    history = []
    for n in range(1, 17):
        p.data.fill_(float(n))
        ema.update()
        history.append(float(ema.shadow[0]))
    assert history[:6] == [0.0] * 6  # (n + 1) % 8 != 0: not applied
    d7 = 8 / 17  # min((1 + 7) / (10 + 7), 0.9)
    assert history[6] == pytest.approx((1 - d7) * 7)
    d15 = 16 / 25
    assert history[14] == pytest.approx(d15 * history[6] + (1 - d15) * 15)
    plain = EMA([p], decay=0.9)
    p.data.fill_(1.0)
    plain.update()
    assert float(plain.shadow[0]) == pytest.approx(0.9 * 16 + 0.1 * 1.0)


def test_timestep_fraction_samples_the_last_step_with_noise_but_does_not_train_it():
    fraction = FlowPolicy(PolicyConfig(num_steps=10, timestep_fraction=0.99), get_dummy_pipeline())
    window9 = FlowPolicy(PolicyConfig(num_steps=10, sde_window_size=9, sde_window_range=[0, 9]), get_dummy_pipeline())
    assert fraction.trained_steps == list(range(9))
    a = fraction.rollout([prompt_for(2)], [{}], [0], torch.Generator().manual_seed(0), list(range(10)))
    b = window9.rollout([prompt_for(2)], [{}], [0], torch.Generator().manual_seed(0), list(range(9)))
    assert a.step_info["step_index"][0].tolist() == list(range(9))
    torch.testing.assert_close(a.log_probs_old, b.log_probs_old)  # the same 9 trained transitions
    assert not torch.equal(a.samples, b.samples)  # ... but the last step drew noise


def test_flow_grpo_kl_convention_drops_the_dt_factor():
    cfg = PolicyConfig(num_steps=4)
    policy = FlowPolicy(cfg, get_dummy_pipeline())
    g = torch.Generator().manual_seed(0)
    traj = policy.rollout([prompt_for(5)] * 2, [{}] * 2, [0, 0], g, policy.window(g))
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05)
    _, info = policy.log_prob(traj, slice(0, 4), with_ref=True)
    dt = traj.step_info["sigma"] - traj.step_info["sigma_next"]
    assert info["kl"].min() > 0
    torch.testing.assert_close(info["kl_flow_grpo"], info["kl"] * dt)
    objective = config_from_dict(OnlineConfig, {"objective": {"beta": 1.0, "kl_convention": "flow_grpo"}}).objective
    lp = torch.zeros(2, 4)
    _, m = OBJECTIVES.get("grpo")(lp, lp, torch.ones(2), torch.ones(2, 4), info, objective)
    assert m["loss/kl"] == pytest.approx(float(info["kl_flow_grpo"].detach().mean()))
    with pytest.raises(ConfigError, match="kl_convention"):
        config_from_dict(
            OnlineConfig, {"policy": {"sde": "sage", "eta": 0.5}, "objective": {"kl_convention": "flow_grpo"}}
        )


def test_flow_grpo_recipes_use_its_options():
    for path in (
        "configs/sd35m/flowgrpo_pickscore.yaml",
        "configs/sd35m/guard_pickscore.yaml",
        "configs/flux/guard_pickscore.yaml",
        "configs/wan/flowgrpo_videoalign.yaml",
    ):
        c = load_config(OnlineConfig, path)
        assert c.policy.timestep_fraction == 0.99 and c.policy.sde_window_size == 0
        assert c.advantages.drop_zero and (c.train.ema_every, c.train.ema_warmup) == (8, True)
    assert load_config(OnlineConfig, "configs/sd35m/flowgrpo_pickscore.yaml").objective.kl_convention == "flow_grpo"


# ----------------------------------------------------------------------------- 13. DAPO's dynamic sampling


def _fake_round(rewards: list[list[float]]):
    """A Rollout of len(rewards) groups of 2 samples with these rewards."""
    r = torch.tensor([x for g in rewards for x in g])
    groups = torch.arange(len(rewards)).repeat_interleave(2)
    traj = Trajectory(
        log_probs_old=r[:, None].clone(),
        mask=torch.ones(len(r), 1),
        group_ids=groups,
        prompts=["p"] * len(r),
        metadata=[{}] * len(r),
    )
    return Rollout(
        traj,
        {"r": r},
        {"r": int((~torch.isfinite(r)).sum())},
        0.0,
        list(range(100 * len(rewards), 100 * len(rewards) + len(r))),
        (0.0, 0.0),
    )


def test_vas_scores_the_groups_dynamic_sampling_leaves_out():
    """With rollout.dynamic_sampling, VAS was updated with the kept (varied) groups only: a prompt always or
    never solved was never scored, kept its prior OVS 0.25 (the highest) and got weight 1, so the weighted
    draws picked exactly the prompts MMR1's VAS avoids (arXiv 2509.21268 sec. 3.1: OVS = p (1 - p))."""
    from genrl.samplers import VarianceAwareSampler

    vas = VarianceAwareSampler(4, 4, 4, 0, a=1.0, b=0.0, update_every=1)
    pass_rates = [[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]  # prompts 0..3, 4 samples each

    def collect(_):
        r = torch.tensor([float(x) for g in pass_rates for x in g])
        traj = Trajectory(
            log_probs_old=r[:, None].clone(),
            mask=torch.ones(16, 1),
            group_ids=torch.arange(4).repeat_interleave(4),
            prompts=["p"] * 16,
            metadata=[{}] * 16,
        )
        return Rollout(traj, {"r": r}, {"r": 0}, 0.0, [i for i in range(4) for _ in range(4)], (0.0, 0.0))

    batch, m, seen = dynamic_sampling(collect, n_groups=2, weights={"r": 1.0}, max_rounds=1)
    assert batch.prompt_idx == [1] * 4 + [2] * 4 and m["dynamic_sampling/dropped_groups"] == 2
    vas.update(seen.prompt_idx, seen.rewards, seen.samples, step=0)
    assert vas.scores["ovs"].tolist() == [0.0, 0.1875, 0.1875, 0.0] and vas.scores["scored"].all()
    assert vas.weights.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_dynamic_sampling_keeps_varied_groups_across_rounds():
    rounds = [_fake_round([[1, 1], [1, 2], [0, 0], [3, 4]]), _fake_round([[5, 5], [6, 7], [8, float("nan")], [9, 9]])]
    batch, m, seen = dynamic_sampling(lambda i: rounds[i], n_groups=3, weights={"r": 1.0}, max_rounds=5, first_group=1)
    assert m == {
        "dynamic_sampling/rounds": 2,
        "dynamic_sampling/filled_groups": 0,
        "dynamic_sampling/dropped_groups": 5,
    }
    assert batch.values["r"].tolist() == [1, 2, 3, 4, 6, 7]
    assert batch.traj.group_ids.tolist() == [3, 3, 4, 4, 5, 5]  # process 1's groups 3..5
    assert batch.prompt_idx == [402, 403, 406, 407, 402, 403] and batch.traj.log_probs_old[:, 0].tolist() == [
        1,
        2,
        3,
        4,
        6,
        7,
    ]
    # every sample of both rounds, the uniform groups left out included: what VAS scores the prompts by
    assert seen.prompt_idx == [*range(400, 408), *range(400, 408)] and seen.samples is None
    assert seen.rewards.tolist()[:8] == [1, 1, 1, 2, 0, 0, 3, 4] and seen.rewards[13].isnan()
    short, m, _ = dynamic_sampling(lambda i: rounds[i], n_groups=3, weights={"r": 1.0}, max_rounds=1)
    assert (
        m["dynamic_sampling/filled_groups"] == 1
        and m["dynamic_sampling/dropped_groups"] == 1
        and short.values["r"].tolist() == [1, 2, 3, 4, 1, 1]
    )


# ----------------------------------------------------------------------------- 14. MMR1's release, VideoAlign


def test_vas_with_replacement_can_draw_a_prompt_twice():
    kw = dict(num_prompts=6, prompts_per_step=4, group_size=2, lam=0.5, a=1.0, b=0.0)
    with_r, without = VarianceAwareSampler(**kw, replacement=True), VarianceAwareSampler(**kw)
    for s in (with_r, without):
        s.update(torch.arange(6).repeat_interleave(2), torch.tensor([1, 0] + [1, 1] * 5, dtype=torch.bool), step=3)
    assert with_r.weights.tolist() == [1, 0, 0, 0, 0, 0]  # only prompt 0 is learnable
    draws = [with_r.draw(s) for s in range(5)]
    assert all(sum(p == 0 for p, w in zip(d["prompts"], d["weighted"]) if w) == 2 for d in draws)
    assert all(len(set(without.draw(s)["prompts"])) == 4 for s in range(5))


def test_grpo_guard_recipes_keep_the_official_values():
    for path in ("configs/sd35m/guard_pickscore.yaml", "configs/flux/guard_pickscore.yaml"):
        c = load_config(OnlineConfig, path)
        assert (c.objective.name, c.objective.clip_range, c.train.lr, c.objective.beta, c.advantages.std) == (
            "grpo_guard",
            4e-6,
            1e-4,
            0.0,
            "group",
        )
        assert (
            "config/grpo_guard.py" in open(path).read() and "2e-6" in open("configs/sd35m/guard_pickscore.yaml").read()
        )


@pytest.mark.parametrize(
    "data, key, match",
    [
        ({"objective": {"name": "sage_grpo"}}, "policy.sde", "sage_grpo needs policy.sde=sage"),
        (
            {"objective": {"name": "grpo_guard"}, "policy": {"sde": "cps", "eta": 0.5}},
            "policy.cps_log_prob",
            "Gaussian",
        ),
        ({"objective": {"name": "nope"}}, "objective.name", "unknown objective 'nope'; valid: capo, dapo"),
        ({"objective": {"name": "no_pkg.mod:fn"}}, "objective.name", "cannot import module 'no_pkg.mod'"),
        ({"objective": {"name": "gspo"}, "train": {"timestep_chunk": 3}}, "train.timestep_chunk", "whole sequences"),
    ],
)
def test_objectives_own_their_cross_section_rules_checked_before_any_work(data, key, match):
    """Each objective checks the options it needs (registered check_config), at config time: before,
    sage_grpo with flow_sde failed at the first update, after model load, evaluation and a rollout."""
    with pytest.raises(ConfigError, match=match) as e:
        config_from_dict(OnlineConfig, data)
    assert e.value.key == key


def test_a_section_of_another_trainer_says_which_trainer_reads_it():
    """``trainer=online`` on a SePPO recipe: "unknown config key 'reference'" without saying why."""
    from genrl.config import load_trainer_config

    with pytest.raises(ConfigError) as e:
        load_trainer_config("configs/digits/seppo.yaml", ["trainer=online"])
    assert str(e.value).startswith("unknown config key 'reference'; valid keys at the top level: trainer, ")
    assert str(e.value).endswith(
        "; 'reference' is a setting of trainer: preference, and this config is read as trainer: online"
    )


def test_an_unknown_preference_objective_lists_the_preference_objectives():
    """Under trainer: preference the list named every policy-gradient objective too, each then refused."""
    from genrl.config import PreferenceConfig

    with pytest.raises(ConfigError) as e:
        config_from_dict(PreferenceConfig, {"objective": {"name": "nope"}})
    assert str(e.value) == "objective.name='nope': unknown preference objective; valid: diffusion_dpo, seppo, sft"
    with pytest.raises(ConfigError, match=r"is not a preference objective \(diffusion_dpo, seppo, sft\)"):
        config_from_dict(PreferenceConfig, {"objective": {"name": "grpo"}})


def test_grpo_guard_refuses_a_token_policy_at_config_time():
    with pytest.raises(ConfigError, match="needs a flow or diffusion policy"):
        config_from_dict(OnlineVLMConfig, {"objective": {"name": "grpo_guard"}})


@pytest.mark.parametrize(
    "cls, data, key",
    [
        (OnlineVLMConfig, {"rollout": {"dynamic_sampling": True}}, "policy.max_prompt_length"),
        (OnlineConfig, {"train": {"ema_every": 8}}, "train.ema_decay"),
        (OnlineConfig, {"train": {"ema_warmup": True}}, "train.ema_decay"),
    ],
)
def test_options_that_need_another_one_are_config_errors(cls, data, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict(cls, data)
    assert e.value.key == key


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["objective.name=genrl.objectives.common:aggregate"], "is not an objective function"),
        (["task=genrl.tasks.digits:prompt_for"], "is a function, not a class"),
        (["task=genrl.registry:Registry"], "is not a task class"),
        (["policy.model=/no/such/model"], "/no/such/model"),
    ],
)
def test_a_failed_start_writes_nothing_and_keeps_an_existing_run(tmp_path, capsys, overrides, match):
    """Before, config.yaml was written first: a bad rerun replaced a finished run's config (then export
    read the bad one). Entries of the wrong kind were TypeErrors in the first update."""
    from genrl.trainers.common import RUN_CONFIG_HEADER

    run = tmp_path / "run"
    run.mkdir()
    kept = RUN_CONFIG_HEADER + "trainer: online\nkept: true\n"  # a run's (a header), of no completed step
    (run / "config.yaml").write_text(kept)
    rc = cli_main(["train", "configs/digits/flowgrpo.yaml", f"output_dir={run}", *overrides])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1
    assert os.listdir(run) == ["config.yaml"] and (run / "config.yaml").read_text() == kept


def test_genrl_prepare_names_tasks_without_models(capsys):
    assert cli_main(["prepare", "prompts"]) == 2
    assert (
        "task 'prompts' owns no model; tasks that do: digit_sum, digits, moving_digits; or give a config"
        in capsys.readouterr().err
    )
    assert cli_main(["prepare", "configs/digits/nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert "no config file 'configs/digits/nope.yaml'" in err and err.count("genrl prepare:") == 1, err
    assert cli_main(["prepare", "configs/digits"]) == 2  # a folder: it said "unknown task"
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "genrl prepare: 'configs/digits' is a folder: give a task (digit_sum, digits, moving_digits) or a config file"
    )
    assert cli_main(["prepare", "configs/digits/nope"]) == 2  # a path without the .yaml
    assert "no config file 'configs/digits/nope'" in capsys.readouterr().err


def test_help_config_names_a_missing_config_instead_of_ignoring_it(capsys):
    assert cli_main(["train", "--help-config", "configs/digits/nope.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "genrl train: configs/digits/nope.yaml: no such config file"


def test_help_config_of_a_recipe_shows_its_values_beside_the_defaults(capsys):
    """``genrl train RECIPE --help-config`` listed only the trainer's defaults (max_steps 100, beta 2000 for
    configs/digits/seppo.yaml, which sets 300 and 1000), with nothing saying the recipe's were not shown."""
    assert cli_main(["train", "configs/digits/seppo.yaml", "objective.beta=500.0", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "\nmax_steps: int = 100 (this config: 800)\n" in out
    assert "\nobjective.beta: float = 2000.0 (this config: 500.0)\n" in out  # the overrides too
    assert "\nseed: int = 0\n" in out  # the same value: the default alone
    assert "\noutput_dir: str = runs/digits_seppo\n" in out  # saved absolute, still the default
    # overrides without a recipe; a config that does not load yet (task=preference_data before its data.*
    # keys are known) still gets its help, the defaults alone, saying why
    assert cli_main(["train", "--help-config", "trainer=preference", "objective.beta=500.0"]) == 0
    assert "\nobjective.beta: float = 2000.0 (this config: 500.0)\n" in capsys.readouterr().out
    # overrides after the flag: "genrl: unrecognized arguments: objective.beta=500.0" (argparse's)
    assert cli_main(["train", "configs/digits/seppo.yaml", "--help-config", "objective.beta=500.0"]) == 0
    assert "\nobjective.beta: float = 2000.0 (this config: 500.0)\n" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="2"):  # argparse's own exit
        cli_main(["train", "configs/digits/seppo.yaml", "--help-config", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert cli_main(["train", "configs/digits/seppo.yaml", "task=preference_data", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# trainer: preference\n# this config does not load (data.train_files=[]: must be non-empty")
    assert "\ndata.train_files: list[str] = []\n" in out and "(this config:" not in out


def test_a_truncated_safetensors_file_is_one_line_naming_the_model(base_model, tmp_path, capsys):
    """Issue 16, 2: a damaged model folder reached the user as a traceback."""
    import shutil

    broken = shutil.copytree(base_model, tmp_path / "broken")
    weights = next((broken / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    overrides = [f"output_dir={tmp_path / 'run'}", f"policy.model={broken}"]
    line = _one_line_error(capsys, cli_main(["train", "configs/digits/flowgrpo.yaml", *overrides]))
    assert f"policy.model='{broken}'" in line and "cannot load" in line
    assert not (tmp_path / "run").exists()


def test_help_config_takes_a_trainer_override_without_a_config(capsys):
    """``--help-config trainer=sft`` was read as a config file named "trainer=sft"."""
    assert cli_main(["train", "--help-config", "trainer=sft"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# trainer: sft\n") and out.count("# trainer:") == 1
    assert cli_main(["train", "--help-config", "trainer=nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        "genrl train: trainer='nope': must be one of 'online', 'online_vlm', 'sft', 'preference'"
    )


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    """Ctrl-C while models load (no step to checkpoint) printed a KeyboardInterrupt traceback, exit -2."""
    import genrl.trainers

    def interrupted(cfg, kind):
        raise KeyboardInterrupt

    monkeypatch.setattr(genrl.trainers, "run_trainer", interrupted)
    assert cli_main(["train", "configs/digits/flowgrpo.yaml", f"output_dir={tmp_path / 'run'}"]) == 130
    assert (
        capsys.readouterr().err
        == "genrl train: interrupted (Ctrl-C); a rerun resumes from the newest checkpoint, if there is one\n"
    )


def test_ctrl_c_in_a_command_without_checkpoints_does_not_promise_a_resume(tmp_path, capsys, monkeypatch):
    """``genrl gallery`` interrupted said "a rerun resumes from the newest checkpoint": it writes none."""
    import genrl.gallery

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(genrl.gallery, "make_gallery", interrupted)
    assert cli_main(["gallery", str(tmp_path), "--out", str(tmp_path / "g")]) == 130
    assert capsys.readouterr().err == "genrl gallery: interrupted (Ctrl-C)\n"
