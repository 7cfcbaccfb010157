"""The DDPO diffusion policy over a tiny real ``StableDiffusionPipeline`` (diffusers' own SD test
sizes, word tokenizer built in code): rollout shapes, ``eta = 0`` sampling equal to the stock
pipeline, log-probs equal to a direct Gaussian computation from ``DDIMScheduler.step``,
re-scoring with ratio exactly 1, one update moving only LoRA weights, v-prediction, loading and
the config rules for ``sde: ddim``."""

import pytest
import torch
from families.tiny_text import word_tokenizer

from genrl.config import ConfigError, OnlineConfig, PolicyConfig, config_from_dict
from genrl.policies.diffusion import DiffusionPolicy, ddim_std
from genrl.registry import POLICIES

PROMPTS = ["a photo of a cat", "a red car", "a dog in the park"]
SIZE = 32  # pixels; latents 16 x 16 (the tiny VAE downsamples by 2)


def build(prediction_type="epsilon", scheduler_cls=None):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=3,
        )
    )
    sched_kw = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )  # SD1.5's scheduler config
    if scheduler_cls is None:
        scheduler = DDIMScheduler(clip_sample=False, **sched_kw)
    else:  # SD1.5 ships PNDM; its saved config also holds DDIM's clip_sample=False
        scheduler = scheduler_cls.from_config({**sched_kw, "skip_prk_steps": True, "clip_sample": False})
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=word_tokenizer(8),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompts,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=gens,
        output_type="pt",
        height=SIZE,
        width=SIZE,
    ).images


def make_cfg(**kw):
    return PolicyConfig(
        **{
            "name": "diffusion",
            "sde": "ddim",
            "model": "unused",
            "eta": 1.0,
            "num_steps": 4,
            "height": SIZE,
            "width": SIZE,
            **kw,
        }
    )


def make_policy(prediction_type="epsilon", **kw):
    return DiffusionPolicy(make_cfg(**kw), build(prediction_type))


def rollout(policy, prompts=PROMPTS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return policy.rollout(prompts, [{}] * len(prompts), list(range(len(prompts))), g, policy.window(g))


def test_registered_and_rollout_shapes():
    assert POLICIES.get("diffusion") is DiffusionPolicy
    policy = make_policy()
    traj = rollout(policy)
    B, T = len(PROMPTS), 4  # set_alpha_to_one=False: the last step is stochastic too
    assert traj.log_probs_old.shape == (B, T) and torch.isfinite(traj.log_probs_old).all()
    assert traj.mask.shape == (B, T) and traj.group_ids.tolist() == [0, 1, 2]
    for k in ("latents", "next_latents", "means"):
        assert traj.data[k].shape == (B, T, 4, SIZE // 2, SIZE // 2)
    assert traj.data["prompt_embeds"].shape == (B, 8, 32) and "neg_prompt_embeds" not in traj.data
    assert traj.step_info["step_index"].tolist() == [[0, 1, 2, 3]] * B
    assert traj.step_info["timestep"][0].tolist() == [751, 501, 251, 1]  # leading spacing + steps_offset
    assert (traj.step_info["std"] > 0).all()
    assert traj.samples.shape == (B, 3, SIZE, SIZE) and 0 <= traj.samples.min() <= traj.samples.max() <= 1
    # the SDE window: only K consecutive steps are stochastic and recorded
    windowed = make_policy(sde_window_size=2)
    g = torch.Generator().manual_seed(0)
    traj = windowed.rollout(PROMPTS[:1], [{}], [0], g, [1, 2])
    assert traj.step_info["step_index"].tolist() == [[1, 2]]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_eta_zero_sampling_equals_the_stock_pipeline(prediction_type):
    policy = make_policy(prediction_type)
    prompts, seeds = PROMPTS[:2], [3, 4]
    for g in (1.0, 3.0):
        ours = policy.sample(prompts, seeds, num_steps=4, guidance_scale=g)
        theirs = pipeline_output(policy.pipe, prompts, seeds, 4, g)
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


def test_log_prob_equals_a_direct_gaussian_computation():
    """eta = 1: the mean is ``DDIMScheduler.step`` with zero noise, the std ``eta * sqrt(_get_variance)``."""
    policy = make_policy(guidance_scale=3.0)
    traj = rollout(policy)
    pipe, sched = policy.pipe, policy.scheduler
    pos, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    sched.set_timesteps(4)
    for j, t in enumerate(sched.timesteps):
        x, xn = traj.data["latents"][:, j], traj.data["next_latents"][:, j]
        with torch.no_grad():
            u, c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([neg, pos])).sample.chunk(2)
        out = u + 3.0 * (c - u)
        mean = sched.step(out, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
        std = sched._get_variance(t, t - 1000 // 4) ** 0.5
        direct = torch.distributions.Normal(mean, std).log_prob(xn).mean(dim=(1, 2, 3))
        torch.testing.assert_close(traj.log_probs_old[:, j], direct, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(traj.step_info["std"][:, j], std.expand(len(PROMPTS)))
        torch.testing.assert_close(traj.data["means"][:, j], mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_recomputed_log_probs_give_ratio_one(prediction_type):
    policy = make_policy(prediction_type, guidance_scale=2.0)
    traj = rollout(policy)
    for j in range(traj.log_probs_old.shape[1]):
        lp, _ = policy.log_prob(traj, slice(j, j + 1))
        assert torch.equal(lp, traj.log_probs_old[:, j : j + 1])
    lp, info = policy.log_prob(traj, slice(0, None), with_ref=True)  # all steps in one batched forward
    torch.testing.assert_close(lp, traj.log_probs_old, rtol=1e-5, atol=1e-5)
    assert set(info) == {"std", "mean_sq_diff", "output_scale", "kl"}
    assert all(v.shape == lp.shape for v in info.values())
    assert (info["kl"] == 0).all()  # LoRA B starts at zero: the policy is its reference
    assert info["mean_sq_diff"].max() < 1e-10 and (info["output_scale"] > 0).all()
    torch.testing.assert_close(info["std"], traj.step_info["std"])


def test_one_update_moves_only_the_lora_weights():
    policy = make_policy(guidance_scale=2.0)
    traj = rollout(policy)
    modules = [policy.unet, policy.pipe.text_encoder, policy.pipe.vae]
    frozen = {
        f"{i}.{n}": p.detach().clone()
        for i, m in enumerate(modules)
        for n, p in m.named_parameters()
        if not p.requires_grad
    }
    trained = {n: p.detach().clone() for n, p in policy.unet.named_parameters() if p.requires_grad}
    assert trained and all("lora" in n for n in trained)
    assert {n.split(".lora")[0].rsplit(".", 1)[-1] for n in trained} >= {"to_q", "to_k", "to_v", "0"}
    assert len(policy.trainable_parameters()) == len(trained)
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1.0)
    lp, _ = policy.log_prob(traj, slice(0, None))
    (-lp.mean()).backward()
    assert sorted(policy.output_grad_norms()) == [0, 1, 2, 3]
    opt.step()
    after = {f"{i}.{n}": p for i, m in enumerate(modules) for n, p in m.named_parameters()}
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    moved = [n for n, p in policy.unet.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert moved
    lp2, info = policy.log_prob(traj, slice(0, None), with_ref=True)
    assert not torch.allclose(lp2, traj.log_probs_old) and (info["kl"] > 0).any()


def test_bf16_weights_keep_fp32_lora_and_log_probs():
    policy = make_policy(dtype="bfloat16")
    assert policy.unet.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    traj = rollout(policy, PROMPTS[:2])
    assert traj.log_probs_old.dtype == torch.float32 and torch.isfinite(traj.log_probs_old).all()
    lp, _ = policy.log_prob(traj, slice(0, 1))
    assert torch.equal(lp, traj.log_probs_old[:, :1])


def test_full_fine_tuning_in_bf16_keeps_the_trained_unet_fp32(tmp_path):
    """policy.dtype=bfloat16 with lora.rank=0 trained the UNet's own weights in bf16, where most AdamW
    updates round away; the frozen VAE and text encoder are the ones to store in bf16."""
    build().save_pretrained(tmp_path / "sd")  # from disk: the UNet is read in fp32, not rounded to bf16 first
    for policy in (
        make_policy(dtype="bfloat16", lora={"rank": 0}),
        DiffusionPolicy.from_pretrained(make_cfg(model=str(tmp_path / "sd"), dtype="bfloat16", lora={"rank": 0})),
    ):
        assert {p.dtype for p in policy.unet.parameters()} == {torch.float32}
        assert {p.dtype for p in policy.ref_model.parameters()} == {torch.float32}
        assert policy.pipe.vae.dtype == torch.bfloat16 and policy.pipe.text_encoder.dtype == torch.bfloat16
        traj = rollout(policy, PROMPTS[:2])  # no autocast: the UNet's inputs follow its own dtype
        for j in range(traj.log_probs_old.shape[1]):  # the rollout's own batch layout: bit for bit
            assert torch.equal(policy.log_prob(traj, slice(j, j + 1))[0], traj.log_probs_old[:, j : j + 1])
        lp, _ = policy.log_prob(traj, slice(0, None))  # all steps in one forward: the UNet's convolutions
        torch.testing.assert_close(lp, traj.log_probs_old, rtol=1e-5, atol=1e-5)  # round by batch size
    fp32 = build().unet
    assert all(torch.equal(a, b) for a, b in zip(policy.unet.parameters(), fp32.parameters()))


def test_full_fine_tuning_has_a_frozen_reference():
    policy = make_policy(lora={"rank": 0})
    assert policy.ref_model is not None and not any(p.requires_grad for p in policy.ref_model.parameters())
    assert len(policy.trainable_parameters()) == len(list(policy.unet.parameters()))


def test_loading_swaps_in_ddim_and_fails_clearly(tmp_path):
    from diffusers import DDIMScheduler, PNDMScheduler

    build(scheduler_cls=PNDMScheduler).save_pretrained(tmp_path / "sd")
    policy = DiffusionPolicy.from_pretrained(make_cfg(model=str(tmp_path / "sd")))
    assert isinstance(policy.scheduler, DDIMScheduler) and policy.scheduler.config.steps_offset == 1
    torch.testing.assert_close(
        policy.sample(PROMPTS[:1], [0], num_steps=2), make_policy().sample(PROMPTS[:1], [0], num_steps=2)
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        DiffusionPolicy.from_pretrained(make_cfg(model=str(tmp_path / "empty")))


def test_ddim_std_is_the_scheduler_variance():
    sched = build().scheduler
    a = sched.alphas_cumprod
    torch.testing.assert_close(ddim_std(a[501], a[251], 0.5), 0.5 * sched._get_variance(501, 251) ** 0.5)


def test_config_ddim_belongs_to_the_diffusion_policy():
    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the default task:digits is the flow policy's model
    cfg = config_from_dict(OnlineConfig, {"policy": {"name": "diffusion", "model": sd15, "sde": "ddim", "eta": 1.0}})
    assert cfg.policy.sde == "ddim"
    with pytest.raises(ConfigError, match="diffusion"):
        PolicyConfig(name="flow", sde="ddim")
    with pytest.raises(ConfigError, match="ddim"):
        PolicyConfig(name="diffusion", sde="flow_sde")
    with pytest.raises(ConfigError, match="eta"):
        PolicyConfig(name="diffusion", sde="ddim", eta=1.5)
    with pytest.raises(ConfigError, match="eta"):
        config_from_dict(OnlineConfig, {"policy": {"name": "diffusion", "sde": "ddim", "eta": 0.0}})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_path_matches_add_noise_and_the_target(prediction_type):
    policy = make_policy(prediction_type)
    g = torch.Generator().manual_seed(0)
    x0, noise = policy.noise(2, g), policy.noise(2, g)
    u = torch.tensor([0.05, 0.9])
    x_t, target, k = policy.noised(x0, noise, u)
    sched = policy.scheduler
    assert k.tolist() == [50, 900]
    torch.testing.assert_close(x_t, sched.add_noise(x0, noise, k))
    torch.testing.assert_close(target, noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, k))
    cond = policy.encode_prompts(PROMPTS[:2])
    err = policy.denoising_error(x0, cond, u, noise)
    assert err.shape == (2,) and torch.isfinite(err).all()
    latents = policy.encode_samples(policy.decode(x0))
    assert latents.shape == x0.shape


def test_cfg_grad_cond_keeps_the_log_probs_and_differentiates_only_the_conditional_branch():
    """``policy.cfg_grad=cond`` (Flow-GRPO's update): the re-scored log-probs are the same as with ``both`` (up
    to float rounding: the unconditional branch is its own forward); the update's gradient differs, and is
    ``g`` times the conditional forward's alone at the output."""
    g = 3.0
    policies = {c: make_policy(guidance_scale=g, cfg_grad=c) for c in ("both", "cond")}
    traj = rollout(policies["both"])
    lps, grads = {}, {}
    for c, policy in policies.items():
        lps[c], _ = policy.log_prob(traj, slice(0, None))
        params = list(policy.trainable_parameters())
        grads[c] = torch.cat(
            [p.flatten() for p in torch.autograd.grad(-lps[c].mean(), params, materialize_grads=True)]
        )
    torch.testing.assert_close(lps["cond"], lps["both"], rtol=1e-6, atol=1e-5)
    assert (grads["cond"] - grads["both"]).abs().max() > 1e-3 * grads["both"].abs().max()

    policy = policies["cond"]
    x, idx, cond = policy.network_inputs(traj, slice(0, None))  # [B * T, ...]
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    params = list(policy.trainable_parameters())

    def grad(out):
        return torch.cat([p.flatten() for p in torch.autograd.grad((out * w).sum(), params, materialize_grads=True)])

    pos = {k: v for k, v in cond.items() if not k.startswith("neg_")}
    want = g * grad(policy.predict(policy.model, x, idx, pos, 1.0, 4))  # the conditional forward alone
    torch.testing.assert_close(
        grad(policy.predict(policy.model, x, idx, cond, g, 4, "cond")), want, rtol=1e-3, atol=1e-5
    )  # g applied before or after the backward's sums: rounding (1.6e-6 on one of 5632 elements seen)


def test_a_unet_folder_without_its_weights_is_refused_with_the_config(tmp_path):
    """An interrupted copy of an SD1.5 folder (the UNet's weights missing) was refused only once the VAE
    and text encoder had loaded; the diffusion policy's config checks the folder as the flow families' do."""
    build().save_pretrained(tmp_path / "sd")
    fields = {"name": "diffusion", "sde": "ddim", "model": str(tmp_path / "sd")}
    config_from_dict(PolicyConfig, fields)  # whole: accepted
    for f in (tmp_path / "sd" / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ConfigError, match=r"^model='.*sd': unet/ holds config.json but no weights"):
        config_from_dict(PolicyConfig, fields)
