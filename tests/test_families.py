"""Every model family, built from tiny configs of its real diffusers classes (``tests/families``):
the policy's rollout shapes, ``eta = 0`` sampling equal to the stock pipeline's own output for
the same seeds and prompts, re-scored log-probs giving ratio exactly 1, and one update moving
only the LoRA weights."""

import importlib
import json
import pkgutil

import families
import pytest
import torch

from genrl.config import PolicyConfig
from genrl.families.sd3 import SD3Family
from genrl.policies.flow import FlowPolicy
from genrl.registry import FAMILIES

MODULES = sorted(m.name for m in pkgutil.iter_modules(families.__path__) if m.name.startswith("dummy_"))


@pytest.fixture(params=MODULES)
def fam(request):
    return importlib.import_module(f"families.{request.param}")


def _policy(fam, **kw):
    return FlowPolicy(PolicyConfig(model="unused", num_steps=4, **{**fam.POLICY_KW, **kw}), fam.build())


def _rollout(policy, prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    return policy.rollout(prompts, [{}] * len(prompts), list(range(len(prompts))), g, policy.window(g))


def test_family_is_detected_from_the_pipeline_class(fam):
    assert type(_policy(fam).family) is FAMILIES.get(fam.FAMILY)


def test_rollout_shapes(fam):
    policy = _policy(fam)
    traj = _rollout(policy, fam.PROMPTS)
    B, T = len(fam.PROMPTS), 4
    assert traj.log_probs_old.shape == (B, T) and torch.isfinite(traj.log_probs_old).all()
    noise = policy.noise(B, torch.Generator().manual_seed(0))
    assert traj.data["latents"].shape == (B, T, *noise.shape[1:])
    ref = fam.pipeline_output(policy.pipe, fam.PROMPTS[:1], [0], 2, 1.0)
    assert traj.samples.shape == (B, *ref.shape[1:])
    assert 0 <= traj.samples.min() <= traj.samples.max() <= 1
    assert policy.samples == ("videos" if traj.samples.ndim == 5 else "images")  # what the rewards are checked against


def test_eta_zero_sampling_equals_the_stock_pipeline(fam):
    policy = _policy(fam)
    prompts, seeds = fam.PROMPTS[:2], [3, 4]
    for g in getattr(fam, "GUIDANCE_SCALES", (1.0, 2.5)):
        ours = policy.sample(prompts, seeds, num_steps=4, guidance_scale=g)
        theirs = fam.pipeline_output(policy.pipe, prompts, seeds, 4, g)
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


def _export_sampling(policy, guidance_scale: float) -> dict:
    """The ``sampling`` ``genrl export`` records for a run of ``policy`` evaluated at this guidance scale."""
    from genrl.config import OnlineConfig
    from genrl.export import sampling_settings

    cfg = OnlineConfig()
    cfg.policy, cfg.eval.num_steps, cfg.eval.guidance_scale = policy.cfg, 4, guidance_scale
    return sampling_settings(cfg, policy)[0]


def _stock(pipe, prompts, seeds, sampling) -> torch.Tensor:
    """The stock pipeline called as an export's record says, one prompt a call (diffusers 0.42's HunyuanVideo-1.5
    VAE fails to decode a batch > 1, see dummy_hunyuanvideo15.pipeline_output)."""
    out = []
    for p, s in zip(prompts, seeds):
        result = pipe([p], generator=[torch.Generator().manual_seed(s)], output_type="pt", **sampling)
        out.append(result.frames if hasattr(result, "frames") else result.images)
    return torch.cat(out).float()


def test_the_exported_sampling_reproduces_genrl_samples(fam):
    """``pipe(prompts, **sampling)`` with ``genrl export``'s recorded ``sampling`` is the README's promise of
    genrl's own samples. FLUX's record passed genrl's CFG scale as its embedded guidance and lost the embedded
    guidance; Qwen-Image's passed ``guidance_scale``, which it ignores (no CFG); HunyuanVideo-1.5's passed a
    ``guidance_scale`` its ``__call__`` does not take (a TypeError). Each family now says how its pipeline
    takes genrl's settings (``Family.prepare_export``)."""
    prompts, seeds = fam.PROMPTS[:2], [3, 4]
    for g in getattr(fam, "GUIDANCE_SCALES", (1.0, 2.5)):
        policy = _policy(fam)
        sampling = _export_sampling(policy, g)
        assert json.loads(json.dumps(sampling)) == sampling  # as genrl_export.json holds it
        ours = policy.sample(prompts, seeds, num_steps=4, guidance_scale=g)
        torch.testing.assert_close(ours, _stock(policy.pipe, prompts, seeds, sampling), rtol=1e-4, atol=1e-5)


def test_a_shipped_unipc_scheduler_is_replaced_so_the_pipeline_samples_as_genrl():
    """The stock Wan checkpoints ship UniPC; genrl samples with Euler steps of the same shift. The pipeline kept
    UniPC, so its export sampled otherwise (by 3e-4 on the tiny model, far more at few steps on the real one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    fam = importlib.import_module("families.dummy_wan")
    pipe = fam.build()
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    policy = FlowPolicy(PolicyConfig(model="unused", num_steps=4, **fam.POLICY_KW), pipe)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 3.0
    assert policy.sampling_components == ("scheduler",)  # an adapter export ships it: the base lacks it
    ours = policy.sample(fam.PROMPTS[:2], [3, 4], num_steps=4, guidance_scale=2.5)
    theirs = _stock(pipe, fam.PROMPTS[:2], [3, 4], _export_sampling(policy, 2.5))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_video_frame_counts_the_vae_cannot_make_are_refused():
    """HunyuanVideo-1.5 took ``num_frames=6`` and made 5-frame videos (the pipelines floor the count to
    ``t k + 1``), as Wan already refused."""
    for name in ("dummy_wan", "dummy_hunyuanvideo15"):
        fam = importlib.import_module(f"families.{name}")
        with pytest.raises(ValueError, match=r"policy\.num_frames=6: this \w+Pipeline takes [0-9]k \+ 1 frames"):
            _policy(fam, num_frames=6)


def test_recomputed_log_probs_give_ratio_one(fam):
    policy = _policy(fam, guidance_scale=2.0 if 2.0 in getattr(fam, "GUIDANCE_SCALES", (2.0,)) else 1.0)
    traj = _rollout(policy, fam.PROMPTS)
    for j in range(traj.log_probs_old.shape[1]):
        lp, _ = policy.log_prob(traj, slice(j, j + 1))
        assert torch.equal(lp, traj.log_probs_old[:, j : j + 1])


def test_one_update_moves_only_the_lora_weights(fam):
    policy = _policy(fam)
    traj = _rollout(policy, fam.PROMPTS)
    frozen = {
        f"{i}.{n}": p.detach().clone()
        for i, m in enumerate(
            [
                policy.transformer,
                *policy.family.text_modules(),
                *policy.family.decode_modules(),
                *policy.family.frozen_modules(),
            ]
        )
        for n, p in m.named_parameters()
        if not p.requires_grad
    }
    trained = {n: p.detach().clone() for n, p in policy.transformer.named_parameters() if p.requires_grad}
    assert trained and all("lora" in n for n in trained)
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1.0)
    lp, _ = policy.log_prob(traj, slice(0, None))
    (-lp.mean()).backward()
    opt.step()
    after = {
        f"{i}.{n}": p
        for i, m in enumerate(
            [
                policy.transformer,
                *policy.family.text_modules(),
                *policy.family.decode_modules(),
                *policy.family.frozen_modules(),
            ]
        )
        for n, p in m.named_parameters()
    }
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    moved = [n for n, p in policy.transformer.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert moved


def test_denoising_loss_path_matches_the_scheduler_and_trains_the_adapters(fam):
    """x_t as the family's scheduler makes it (FlowMatchEulerDiscreteScheduler.scale_noise at the
    training timestep), target noise - x0, clean latents from images in the denoiser's layout, and
    a per-sample error [B] with a gradient on the LoRA weights only."""
    policy = _policy(fam)
    B = 2
    g = torch.Generator().manual_seed(0)
    x0 = policy.noise(B, g)  # any latent of the denoiser's layout
    noise = policy.noise(B, g)
    u = torch.tensor([0.1, 0.75])
    x_t, target, sigma = policy.noised(x0, noise, u)
    sched = type(policy.family.scheduler).from_config(policy.family.scheduler.config)
    timesteps = sched.timesteps[(u * len(sched.timesteps)).long()]
    torch.testing.assert_close(x_t, sched.scale_noise(x0, timesteps, noise))
    torch.testing.assert_close(target, noise - x0)
    cond = policy.encode_prompts(fam.PROMPTS[:B])
    err = policy.denoising_error(x0, cond, u, noise)
    assert err.shape == (B,) and torch.isfinite(err).all()
    err.sum().backward()
    grads = {n for n, p in policy.denoiser.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all("lora" in n for n in grads)
    with torch.no_grad(), policy.reference() as ref:  # LoRA B = 0: the reference is the model itself
        torch.testing.assert_close(policy.denoising_error(x0, cond, u, noise, model=ref), err.detach())
    images = policy.decode(x0)
    assert policy.encode_samples(images).shape == x0.shape


def _grads(policy, v, w):
    params = list(policy.trainable_parameters())
    return torch.cat(
        [g.flatten() for g in torch.autograd.grad((v * w).sum(), params, retain_graph=True, materialize_grads=True)]
    )


def test_cfg_grad_cond_differentiates_only_the_conditional_branch(fam):
    """``policy.cfg_grad``: the guided velocity has the same values either way (up to float rounding: with
    ``cond`` the unconditional branch is its own forward); with ``cond`` its gradient is the one of the
    guidance formula with the unconditional forward held constant, with ``both`` the full one, each checked
    against the conditional and unconditional forwards run on their own. With ``cond`` the unconditional
    forward records no graph (what saves the backward's time and memory) and the conditional one does."""
    g = 2.5
    policy = _policy(fam, guidance_scale=g)
    B = len(fam.PROMPTS)
    cond = policy.conditioning(fam.PROMPTS, g)
    pos = {k: v for k, v in cond.items() if not k.startswith("neg_")}
    neg = {k[4:]: v for k, v in cond.items() if k.startswith("neg_")}
    x, sigma = policy.noise(B, torch.Generator().manual_seed(0)), torch.full((B,), 0.7)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # a fixed linear read-out of v
    calls = []  # (batch, autograd on) of each denoiser forward
    hook = policy.model.register_forward_hook(
        lambda m, a, kw, out: calls.append(torch.is_grad_enabled()), with_kwargs=True
    )
    try:
        v = {c: policy.velocity(x, sigma, cond, g, cfg_grad=c) for c in ("both", "cond")}
    finally:
        hook.remove()
    # both: one batched forward with a graph; cond: the unconditional one without, the conditional one with
    # (Qwen-Image runs the conditional forward first, and two in both cases: its texts differ in length)
    assert calls == ([True, True, True, False] if fam.FAMILY == "qwen_image" else [True, False, True]), calls
    torch.testing.assert_close(v["cond"], v["both"], rtol=1e-5, atol=1e-6)
    v_c, v_u = policy.velocity(x, sigma, pos, 1.0), policy.velocity(x, sigma, neg, 1.0)

    def guided(v_u, v_c):  # each family's formula, written out here
        comb = v_u + g * (v_c - v_u)
        if fam.FAMILY == "qwen_image":  # true CFG rescaled per token to the conditional norm
            comb = comb * (v_c.norm(dim=-1, keepdim=True) / comb.norm(dim=-1, keepdim=True))
        return comb

    torch.testing.assert_close(guided(v_u, v_c), v["both"], rtol=1e-4, atol=1e-5)
    want_cond, want_both = _grads(policy, guided(v_u.detach(), v_c), w), _grads(policy, guided(v_u, v_c), w)
    got_cond, got_both = _grads(policy, v["cond"], w), _grads(policy, v["both"], w)
    torch.testing.assert_close(got_cond, want_cond, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(got_both, want_both, rtol=1e-3, atol=1e-5)
    assert (got_cond - got_both).abs().max() > 1e-3 * got_both.abs().max()  # the two really differ


def test_a_policy_setting_the_family_does_not_read_is_refused(fam):
    """``policy.height=64`` on the 8x8 digits model, ``num_frames`` on an image model, ``embedded_guidance``
    without a guidance embedding: each was accepted and changed nothing. One line names the key."""
    from genrl.families.base import FAMILY_OPTIONS

    read = _policy(fam).family.reads_options()
    other = {"height": 64, "width": 64, "num_frames": 9, "max_sequence_length": 16, "embedded_guidance": 2.0}
    unread = [n for n in FAMILY_OPTIONS if n not in read]
    for name in unread:
        with pytest.raises(ValueError, match=rf"^policy.{name}={other[name]!r}: the \w+ model does not read it"):
            _policy(fam, **{name: other[name]})
    assert fam.FAMILY != "digits" or unread == list(FAMILY_OPTIONS)
    assert fam.FAMILY not in ("sd3", "qwen_image", "flux") or "num_frames" in unread


# ----------------------------------------------------------------------------- before any model loads


def _index(folder, pipeline_class):
    """A model folder holding only its ``model_index.json`` (validation reads nothing else)."""
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}))
    return str(folder)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["policy.height=64"], r"^policy.height=64: the DigitsFamily model does not read it"),
        (
            ["policy.family=flux"],
            r"^policy.family='flux': the model is a DigitsPipeline, which family 'digits' drives",
        ),
        (
            ["policy.model=task:moving_digits", "policy.embedded_guidance=2.0"],
            r"^policy.embedded_guidance=2.0: the MovingDigitsFamily model does not read it",
        ),
        (["policy.model=task:moving_digits", "policy.family=wan"], r"^policy.family='wan': the model is a Moving"),
    ],
)
def test_family_options_are_refused_before_the_task_model_is_built(overrides, message, tmp_path, monkeypatch):
    """Config validation knows an embedded task's family (``pipeline_class``): the refusal came after
    ``genrl prepare`` had built the model (minutes for moving_digits) or, for a mismatched family, as
    an AttributeError from inside the model."""
    from genrl.config import ConfigError, OnlineConfig, load_config

    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=message):
        load_config(OnlineConfig, None, overrides)
    assert not (tmp_path / "cache").exists()


def test_a_local_folder_s_family_is_read_from_its_model_index(tmp_path):
    from genrl.config import ConfigError, OnlineConfig, load_config

    sd3, flux = _index(tmp_path / "sd3", "StableDiffusion3Pipeline"), _index(tmp_path / "flux", "FluxPipeline")
    with pytest.raises(ConfigError, match=r"^policy.num_frames=9: the SD3Family model does not read it"):
        load_config(OnlineConfig, None, [f"policy.model={sd3}", "policy.num_frames=9"])
    with pytest.raises(ConfigError, match=r"^policy.embedded_guidance=2.0: the SD3Family model"):
        load_config(OnlineConfig, None, [f"policy.model={sd3}", "policy.embedded_guidance=2.0"])
    # FLUX.1-dev reads it and FLUX.1-schnell does not: only the loaded transformer's config tells
    assert load_config(OnlineConfig, None, [f"policy.model={flux}", "policy.embedded_guidance=2.0"])
    unknown = _index(tmp_path / "other", "StableDiffusionXLPipeline")
    with pytest.raises(ConfigError, match=r"no genrl family drives StableDiffusionXLPipeline"):
        load_config(OnlineConfig, None, [f"policy.model={unknown}"])
    # a hub id is resolved only by loading: nothing to refuse yet
    assert load_config(OnlineConfig, None, ["policy.model=org/model", "policy.height=64"])


def test_a_pipeline_folder_with_a_missing_part_is_refused_with_the_config(fam, tmp_path, monkeypatch):
    """An interrupted download or copy (a component's folder, its weights, a shard) failed only when the
    libraries reached that part, after the others had loaded (``genrl compare``: after earlier arms had
    trained). Every family's own saved folder passes; each damage is refused before anything loads."""
    import shutil

    from genrl.config import ConfigError, config_from_dict

    def load(folder):
        return config_from_dict(PolicyConfig, {"model": str(folder)})

    folder = tmp_path / "model"
    fam.build().save_pretrained(folder)
    load(folder)  # whole: accepted
    monkeypatch.setenv("HOME", str(tmp_path))  # a home-relative path is that folder for every check and loader
    assert load("~/model").model == str(folder)  # the check had seen '~/model', the loader refused it as no folder
    index = json.loads((folder / "model_index.json").read_text())
    denoiser = next(n for n in ("transformer", "unet") if n in index)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(ConfigError, match=rf"^model='{folder}': model_index.json names component 'scheduler' \("):
        load(folder)
    fam.build().scheduler.save_pretrained(folder / "scheduler")
    getattr(fam.build(), denoiser).save_pretrained(folder / denoiser, max_shard_size="20KB")  # shards + index
    shards = sorted((folder / denoiser).glob("*-of-*.safetensors"))
    assert len(shards) > 1
    load(folder)  # sharded: accepted
    shards[-1].unlink()
    with pytest.raises(ConfigError, match=rf"{denoiser}/.*index.json lists 1 shard\(s\) that are not there: "):
        load(folder)
    for f in (folder / denoiser).glob("*.safetensors*"):
        f.unlink()
    with pytest.raises(ConfigError, match=rf"{denoiser}/ holds config.json but no weights"):
        load(folder)
    # a variant's weights only (save_pretrained(variant="fp16")): diffusers without variant= refuses them,
    # after the other components have loaded
    getattr(fam.build(), denoiser).save_pretrained(folder / denoiser, variant="fp16")
    with pytest.raises(ConfigError, match=rf"{denoiser}/ holds only a variant's weights \(\S+\.fp16\.safetensors\)"):
        load(folder)
    getattr(fam.build(), denoiser).save_pretrained(folder / denoiser, variant="fp16", max_shard_size="20KB")
    with pytest.raises(ConfigError, match=rf"{denoiser}/ holds only a variant's weights \(\S+\.fp16-00001-of-"):
        load(folder)
    getattr(fam.build(), denoiser).save_pretrained(folder / denoiser)  # the default weights beside them
    load(folder)
    # a hub cache snapshot whose blob never arrived: a link to nothing, not "no weights"
    weights = next((folder / denoiser).glob("*model.safetensors"))
    weights.unlink()
    weights.symlink_to(tmp_path / "blobs" / "0123abcd")
    with pytest.raises(ConfigError, match=rf"{denoiser}/{weights.name} is a link to a file that is not there \("):
        load(folder)


class OwnFamily(SD3Family):
    """A family of the user's own package (not registered): it may drive any pipeline class."""


def test_a_family_of_the_user_s_own_package_may_drive_any_pipeline():
    from genrl.families.base import family_named

    assert family_named("test_families:OwnFamily", "DigitsPipeline") is OwnFamily  # by import path
    for builtin in ("sd3", "genrl.families.sd3:SD3Family"):  # a built-in one, by name or by import path
        with pytest.raises(ValueError, match=rf"^family='{builtin}': the model is a DigitsPipeline"):
            family_named(builtin, "DigitsPipeline")  # (the key is relative to the policy section)
    assert family_named("auto", None) is None


def test_a_broken_model_index_or_task_is_one_line_naming_policy_model(tmp_path):
    """A model_index.json holding a list raised AttributeError; invalid JSON named neither the file nor the
    key; a task that does not exist named no key."""
    from genrl.config import ConfigError, OnlineConfig, load_config

    for name, text, message in [
        ("list", "[1, 2]", "holds a JSON list, not an object"),
        ("broken", '{"_class_name":', "model_index.json is not a readable JSON file"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(text)
        with pytest.raises(ConfigError, match=rf"^policy.model='{tmp_path / name}': .*{message}"):
            load_config(OnlineConfig, None, [f"policy.model={tmp_path / name}"])
    with pytest.raises(ConfigError, match=r"^policy.model='task:nosuch': no task 'nosuch'; tasks that own a model"):
        load_config(OnlineConfig, None, ["policy.model=task:nosuch"])
    # tasks that read files own no model: a TypeError traceback (exit 1) in prepare, train and export
    for task in ("prompts", "preference_data", "vlm_data"):
        with pytest.raises(ConfigError, match=rf"^policy.model='task:{task}': task '{task}' owns no model; tasks"):
            load_config(OnlineConfig, None, [f"policy.model=task:{task}"])
    # a path that is not a folder: refused only after the model libraries had loaded
    with pytest.raises(ConfigError, match=rf"^policy.model='{tmp_path / 'nope'}': no such folder"):
        load_config(OnlineConfig, None, [f"policy.model={tmp_path / 'nope'}"])


def test_a_size_the_transformer_cannot_place_is_refused_when_the_policy_loads():
    """SD3's cropped position embedding and Wan's rotary one hold a fixed number of patches per axis: a larger
    size was refused by diffusers at the first forward (the step-0 evaluation, after the run wrote its folder),
    in Wan's case as a traceback from a view. The limits are read from the tiny models' own configs."""
    import inspect

    sd3 = importlib.import_module("families.dummy_sd3")
    pipe = sd3.build()
    conf, f = pipe.transformer.config, pipe.vae_scale_factor
    most = conf.pos_embed_max_size * conf.patch_size * f  # pixels a side
    _policy(sd3, height=most)  # at the limit: fine
    over, width = most + conf.patch_size * f, sd3.POLICY_KW["width"]
    with pytest.raises(
        ValueError,
        match=rf"^policy.height/width={over}/{width}: .* at most {conf.pos_embed_max_size} "
        rf"patches a side \(pos_embed_max_size\): at most {most} pixels$",
    ):
        _policy(sd3, height=over)

    wan = importlib.import_module("families.dummy_wan")
    pipe = wan.build()
    conf, s = pipe.transformer.config, pipe.vae_scale_factor_spatial
    most = conf.rope_max_seq_len * conf.patch_size[2] * s
    default = inspect.signature(type(pipe).__call__).parameters["width"].default  # what width=0 means
    assert default > most  # the case found: the pipeline's own default size (Wan's 480 x 832) on a small model
    with pytest.raises(
        ValueError,
        match=rf"^policy.width=0 \(the pipeline's default, {default}\): .*"
        rf"at most {conf.rope_max_seq_len} patches along it \(rope_max_seq_len\): at most {most}$",
    ):
        _policy(wan, num_frames=0, height=0, width=0)
