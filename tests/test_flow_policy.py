"""FlowPolicy over a tiny real SD3Transformer2DModel: rollout, re-scoring, reference KL."""

import pytest
import torch
from conftest import get_dummy_pipeline

from genrl.config import PolicyConfig
from genrl.policies.flow import FlowPolicy, load_policy_pipeline
from genrl.tasks.digits import prompt_for

PROMPTS = [prompt_for(i % 10) for i in range(6)]


def _policy(**kw):
    return FlowPolicy(PolicyConfig(**kw), get_dummy_pipeline())


def _rollout(policy, seed=0):
    g = torch.Generator().manual_seed(seed)
    return policy.rollout(PROMPTS, [{}] * len(PROMPTS), list(range(len(PROMPTS))), g, policy.window(g))


@pytest.mark.parametrize("sde,steps", [("flow_sde", 10), ("cps", 9)])
def test_rollout_shapes(sde, steps):
    traj = _rollout(_policy(sde=sde, num_steps=10))
    B = len(PROMPTS)
    assert traj.log_probs_old.shape == (B, steps) and traj.mask.shape == (B, steps)
    assert traj.data["latents"].shape == (B, steps, 1, 8, 8)
    assert traj.samples.shape == (B, 1, 8, 8) and 0 <= traj.samples.min() <= traj.samples.max() <= 1
    assert torch.isfinite(traj.log_probs_old).all()
    # cps: the final step has zero noise, so it is not an action
    assert traj.step_info["step_index"][0].tolist() == list(range(steps))


def test_sde_window_trains_only_its_steps():
    pol = _policy(num_steps=10, sde_window_size=3, sde_window_range=[2, 8])
    starts = set()
    for seed in range(12):
        traj = _rollout(pol, seed)
        idx = traj.step_info["step_index"][0].tolist()
        assert len(idx) == 3 and idx == list(range(idx[0], idx[0] + 3)) and 2 <= idx[0] <= 5
        starts.add(idx[0])
    assert len(starts) > 1  # the window moves between iterations


@pytest.mark.parametrize("sde", ["flow_sde", "cps"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_recomputed_log_probs_give_ratio_one(sde, guidance):
    pol = _policy(sde=sde, guidance_scale=guidance)
    traj = _rollout(pol)
    # re-scored one step at a time (the rollout's own batch layout): the ratio is exactly 1
    for j in range(traj.log_probs_old.shape[1]):
        lp, info = pol.log_prob(traj, slice(j, j + 1), with_ref=True)
        assert torch.equal(torch.exp(lp - traj.log_probs_old[:, j : j + 1]), torch.ones_like(lp))
        assert torch.equal(info["kl"], torch.zeros_like(lp))  # LoRA starts at the reference
    # all steps stacked in one forward, or a sub-batch: other matmul shapes, so equal up to
    # float32 rounding (far below any clip range in use)
    log_probs, _ = pol.log_prob(traj, slice(0, None))
    torch.testing.assert_close(
        torch.exp(log_probs - traj.log_probs_old), torch.ones_like(log_probs), rtol=0, atol=1e-5
    )
    sub = traj.index(torch.tensor([4, 1]))
    lp, _ = pol.log_prob(sub, slice(3, 7))
    torch.testing.assert_close(lp, sub.log_probs_old[:, 3:7], rtol=0, atol=1e-5)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_eta_zero_sampling_equals_the_pipelines_own_output(guidance):
    pol = _policy()
    images = pol.sample(PROMPTS[:3], seeds=[0, 1, 2], num_steps=8, guidance_scale=guidance)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    ref = pol.pipe(
        PROMPTS[:3], num_inference_steps=8, guidance_scale=guidance, generator=gens, output_type="pt"
    ).images
    torch.testing.assert_close(images, ref, rtol=1e-5, atol=1e-6)


def test_kl_to_reference_grows_when_weights_move():
    pol = _policy()
    traj = _rollout(pol)
    with torch.no_grad():
        for p in pol.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, info = pol.log_prob(traj, slice(0, None), with_ref=True)
    assert (info["kl"] > 0).all()
    # the reference itself (adapters disabled) is restored afterwards
    assert any(p.requires_grad for p in pol.transformer.parameters())


def test_lora_trains_adapters_only_and_full_finetune_trains_all():
    lora = _policy()
    names = [n for n, p in lora.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    full = _policy(lora={"rank": 0})
    assert all(p.requires_grad for p in full.transformer.parameters())
    traj = _rollout(full)
    log_probs, info = full.log_prob(traj, slice(0, 2), with_ref=True)
    log_probs.sum().backward()
    assert all(p.grad is not None for p in full.trainable_parameters())


def test_missing_or_unreachable_model_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ValueError, match="model_index.json is missing"):
        load_policy_pipeline(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="hf download stabilityai/stable-diffusion-3.5-medium"):
        load_policy_pipeline("stabilityai/stable-diffusion-3.5-medium")


def test_decode_maps_pixel_latents_to_unit_range():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]).reshape(5, 1, 1, 1).expand(5, 1, 8, 8)
    assert _policy().decode(x)[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_xformers_backend_is_a_clear_error_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: xformers may be valid here")
    with pytest.raises(ValueError, match="xformers needs a CUDA GPU"):
        _policy(attention_backend="xformers")


def test_gradient_checkpointing_gives_the_same_log_probs_and_gradients():
    plain, ckpt = _policy(), _policy(gradient_checkpointing=True)
    assert ckpt.transformer.is_gradient_checkpointing and not plain.transformer.is_gradient_checkpointing
    traj = _rollout(plain)
    grads = []
    for pol in (plain, ckpt):
        pol.transformer.train()  # diffusers checkpoints only in training mode
        lp, _ = pol.log_prob(traj, slice(0, None))
        lp.mean().backward()
        grads.append([p.grad.clone() for p in pol.trainable_parameters()])
        if pol is plain:
            ref_lp = lp.detach()
    torch.testing.assert_close(lp.detach(), ref_lp, rtol=0, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("rank", [4, 0])
def test_the_policy_runs_without_dropout_even_under_peft_lora_dropout(rank):
    """peft adds its ``lora_dropout`` modules in training mode, after the denoiser was put in eval mode:
    with ``lora_dropout > 0`` every rollout, re-scoring and evaluation forward drew a new mask once B left
    zero (first-update ratio != 1, clip_frac 0.19 on digits). Config validation now refuses a dropout > 0;
    a policy built with one anyway (the setting changed after validation) still runs every module in eval."""
    cfg = PolicyConfig(lora={"rank": rank})
    cfg.lora.dropout = 0.5  # the trainers refuse it; a policy built in code takes it
    pol = FlowPolicy(cfg, get_dummy_pipeline())
    assert not [n for n, m in pol.transformer.named_modules() if m.training]
    with torch.no_grad():  # move every trained weight (LoRA's B off zero): dropout would show now
        for p in pol.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    traj = _rollout(pol)
    lp, _ = pol.log_prob(traj, slice(0, 1))
    assert torch.equal(lp, traj.log_probs_old[:, :1])
