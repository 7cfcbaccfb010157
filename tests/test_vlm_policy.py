"""VLMPolicy: a tiny real Qwen2-VL (built from a config in code) as a token-level policy."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import VLM_VISION_TOKENS as VISION_TOKENS
from conftest import VLM_VOCAB as VOCAB
from conftest import get_dummy_vlm_components
from PIL import Image

from genrl.config import (
    VLM_MODEL_TYPES,
    ConfigError,
    ObjectiveConfig,
    TrainConfig,
    VLMLoraConfig,
    VLMPolicyConfig,
    config_from_dict,
)
from genrl.policies.vlm import SUPPORTED_MODELS, VLMPolicy, model_class_for
from genrl.registry import OBJECTIVES, POLICIES


def get_dummy_components(seed: int = 0) -> dict:
    return get_dummy_vlm_components("qwen2_vl", seed)


def make_cfg(**kw) -> VLMPolicyConfig:
    lora = kw.pop("lora", {})
    kw.setdefault("model", "unused")
    return VLMPolicyConfig(lora=VLMLoraConfig(**{"rank": 4, "alpha": 8.0, **lora}), **kw)


def make_policy(**kw) -> VLMPolicy:
    return VLMPolicy(make_cfg(**kw), **get_dummy_components())


def batch(n_prompts: int = 3, group: int = 2):
    rng = np.random.default_rng(0)
    questions = ["what is the sum ?", "sum ?", "what is the sum of the digits ?"]
    prompts, metadata, groups = [], [], []
    for i in range(n_prompts):
        img = Image.fromarray(rng.integers(0, 255, (28, 56, 3), dtype=np.uint8))
        for _ in range(group):
            prompts.append(questions[i % len(questions)])
            metadata.append({"image": img})
            groups.append(i)
    return prompts, metadata, torch.tensor(groups)


def bias_logits(policy: VLMPolicy, token_bias: dict[str, float]):
    """Add a constant to some tokens' logits (a forward hook on lm_head)."""
    bias = torch.zeros(len(VOCAB))
    for t, b in token_bias.items():
        bias[VOCAB[t]] = b
    return policy.module.lm_head.register_forward_hook(lambda m, i, o: o + bias.to(o.dtype))


def rollout(policy, seed=0, **kw):
    prompts, metadata, groups = batch(**kw)
    return policy.rollout(prompts, metadata, groups, torch.Generator().manual_seed(seed), [])


def test_registered_and_config_validation():
    assert POLICIES.get("vlm") is VLMPolicy
    cfg = config_from_dict(VLMPolicyConfig, {"model": "x", "lora": {"rank": 2}}, ["temperature=0.7"])
    assert cfg.temperature == 0.7 and cfg.lora.rank == 2 and "q_proj" in cfg.lora.target_modules
    for bad in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError):
            VLMPolicyConfig(**bad)


def test_rollout_shapes_and_masks():
    policy = make_policy(max_new_tokens=6)
    hook = bias_logits(policy, {"<|im_end|>": 2.0})  # some responses end early, some run to the cap
    traj = rollout(policy, seed=1)
    hook.remove()
    B, T = 6, 6
    assert traj.log_probs_old.shape == traj.mask.shape == (B, T)
    assert traj.step_info["entropy"].shape == (B, T) and traj.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(traj.step_info["step_index"][0], torch.arange(T))
    P = int(traj.data["prompt_length"][0])
    ids, am = traj.data["input_ids"], traj.data["attention_mask"]
    assert ids.shape == am.shape == traj.data["mm_token_type_ids"].shape == (B, P + T)
    assert [p.shape[0] for p in traj.data["pixel_values"]] == [8] * B  # 2 x 4 patches per image
    assert [g.tolist() for g in traj.data["image_grid_thw"]] == [[[1, 2, 4]]] * B
    assert (traj.data["mm_token_type_ids"] == 1).sum(1).tolist() == [2] * B  # 2 merged image tokens each
    resp, mask = ids[:, P:], traj.mask
    eos = VOCAB["<|im_end|>"]
    lengths = mask.sum(1).long()
    assert 0 < lengths.min() and lengths.min() < T, "the eos bias should end some responses early"
    for b in range(B):
        n = int(lengths[b])
        assert torch.equal(mask[b], (torch.arange(T) < n).float())  # a prefix of ones
        hit = (resp[b] == eos).nonzero().flatten()
        if n < T or len(hit):  # stops at (and includes) the first eos
            assert int(hit[0]) == n - 1
        assert (resp[b, n:] == policy.pad_id).all()
    assert torch.equal(am[:, P:], mask.long())
    assert am[:, :P].min() == 0, "prompts of different length are left-padded"
    assert am[:, -T - 1].all(), "the last prompt token is never padding (left padding)"
    assert isinstance(traj.samples, list) and len(traj.samples) == B and all(isinstance(s, str) for s in traj.samples)
    assert all("<|" not in s for s in traj.samples)
    assert (traj.step_info["entropy"][mask == 0] == 0).all() and (traj.step_info["entropy"][mask == 1] > 0).all()


def test_vision_tokens_are_never_sampled():
    policy = make_policy(max_new_tokens=8)
    hook = bias_logits(policy, dict.fromkeys(VISION_TOKENS, 50.0))  # the model "wants" them
    traj = rollout(policy)
    greedy = policy.sample(*batch()[:2])
    hook.remove()
    P = int(traj.data["prompt_length"][0])
    resp = traj.data["input_ids"][:, P:]
    for t in VISION_TOKENS:
        assert not (resp == VOCAB[t]).any()
    assert torch.isfinite(traj.log_probs_old).all()
    assert all(isinstance(s, str) for s in greedy)


def test_same_seed_same_rollout():
    policy = make_policy(max_new_tokens=5)
    a, b, c = rollout(policy, seed=3), rollout(policy, seed=3), rollout(policy, seed=4)
    assert torch.equal(a.data["input_ids"], b.data["input_ids"])
    assert torch.equal(a.log_probs_old, b.log_probs_old) and torch.equal(a.mask, b.mask)
    assert a.samples == b.samples
    assert not torch.equal(a.data["input_ids"], c.data["input_ids"])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_recomputed_log_probs_give_ratio_exactly_one(temperature):
    """``log_probs_old`` is not the sampling loop's (KV-cache) log-prob but a teacher-forced
    recompute with the same forward ``log_prob`` uses, so with unchanged weights and the same
    batch layout the ratio is exactly 1 (torch.equal). The KV-cache log-probs the tokens were
    sampled with agree to 1e-5; sub-batches and timestep chunks (other matmul shapes) to 1e-6."""
    policy = make_policy(max_new_tokens=6, temperature=temperature)
    traj = rollout(policy, seed=2)
    m = traj.mask.bool()
    new, info = policy.log_prob(traj, slice(None))
    assert info == {}
    ratio = torch.exp(new.detach() - traj.log_probs_old)
    assert torch.equal(ratio[m], torch.ones_like(ratio[m]))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)  # padding entries too (no inf/NaN)
    torch.testing.assert_close(traj.step_info["rollout_log_probs"][m], traj.log_probs_old[m], atol=1e-5, rtol=0)
    chunk, _ = policy.log_prob(traj, slice(2, 5))
    torch.testing.assert_close(chunk.detach(), traj.log_probs_old[:, 2:5], atol=1e-6, rtol=0)
    idx = torch.tensor([4, 1, 2])
    traj.samples = None  # Trajectory.index indexes samples with a tensor: text samples are a list
    sub = traj.index(idx)
    lp_sub, _ = policy.log_prob(sub, slice(None))
    torch.testing.assert_close(lp_sub.detach(), traj.log_probs_old[idx], atol=1e-6, rtol=0)


def test_head_outputs_reproduce_the_log_probs():
    """``log_prob(..., head_top_k=k)`` (CAPO's inputs): the hidden states are the LM head's input at the
    positions that predict each token, over the temperature, so ``W @ hidden`` with the never-sampled
    tokens blocked gives back the log-probs; ``ids`` / ``probs`` are the top-k renormalised, ``action``
    marks the sampled token among them; a chunk of the response gets the matching slice."""
    policy = make_policy(max_new_tokens=6, temperature=0.7)
    traj = rollout(policy, seed=3)
    with torch.no_grad():
        lp, info = policy.log_prob(traj, slice(None), head_top_k=3)
        part, part_info = policy.log_prob(traj, slice(2, 5), head_top_k=3)
    head = info["head"]
    W = policy.module.lm_head.weight.float()
    logits = (head["hidden"] @ W.T).masked_fill(policy.blocked, float("-inf"))  # [B, T, V]
    P = int(traj.data["prompt_length"][0])
    actions = traj.data["input_ids"][:, P:]
    recomputed = torch.log_softmax(logits, -1).gather(-1, actions[..., None])[..., 0]
    m = traj.mask.bool()
    torch.testing.assert_close(recomputed[m], lp[m], atol=1e-5, rtol=0)
    top, ids = logits.topk(3, -1)
    assert torch.equal(head["ids"], ids) and head["probs"].shape == (*lp.shape, 3)
    torch.testing.assert_close(head["probs"], torch.softmax(top, -1))
    assert torch.equal(head["action"], (ids == actions[..., None]).float()) and head["action"].sum() > 0
    torch.testing.assert_close(part_info["head"]["hidden"], head["hidden"][:, 2:5], atol=1e-6, rtol=0)
    assert policy.head_shape() == tuple(W.shape)


def test_temperature_is_in_the_log_probs():
    a, b = make_policy(max_new_tokens=4), make_policy(max_new_tokens=4, temperature=0.5)
    traj = rollout(a)
    with torch.no_grad():
        lp_a, _ = a.log_prob(traj, slice(None))
        lp_b, _ = b.log_prob(traj, slice(None))
    assert not torch.allclose(lp_a, lp_b)


def test_ref_log_probs_match_at_init_and_move_with_the_adapters():
    policy = make_policy(max_new_tokens=5)
    traj = rollout(policy)
    lp, info = policy.log_prob(traj, slice(None), with_ref=True)
    assert torch.equal(info["ref_log_probs"], lp.detach())  # LoRA B = 0: adapters are a no-op
    assert not info["ref_log_probs"].requires_grad and lp.requires_grad
    with torch.no_grad():
        for n, p in policy.module.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    lp2, info2 = policy.log_prob(traj, slice(None), with_ref=True)
    assert torch.equal(info2["ref_log_probs"], info["ref_log_probs"])
    assert not torch.allclose(lp2, lp)
    assert (lp2.detach() - info2["ref_log_probs"]).abs().max() > 1e-3


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_lora_trains_only_adapters(freeze_vision):
    policy = make_policy(freeze_vision=freeze_vision)
    names = [n for n, p in policy.module.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n for n in names if "language_model" in n}
    vision = [n for n in names if ".visual." in n]
    assert bool(vision) == (not freeze_vision)
    assert len(policy.trainable_parameters()) == len(names) == len(policy.trainable_state_dict())
    traj = rollout(policy, seed=5)
    lp, _ = policy.log_prob(traj, slice(None))
    (lp * traj.mask).sum().backward()
    grads = {n for n, p in policy.module.named_parameters() if p.grad is not None}
    assert grads <= set(names) and any("lora_A" in n for n in grads)  # B = 0 at init: A gets no gradient,
    assert any("lora_B" in n and policy.module.get_parameter(n).grad.abs().sum() > 0 for n in grads)  # B does


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_lora_target_modules_that_match_nothing_are_refused(freeze_vision):
    """Each entry must name a linear layer of the language model, whatever freeze_vision is: with
    the vision tower trainable a typo had trained it alone, silently (and a partial typo dropped)."""
    for targets, bad in ((["nosuch_proj"], "['nosuch_proj']"), (["q_proj", "qproj_typo"], "['qproj_typo']")):
        with pytest.raises(ValueError, match=re.escape(f"policy.lora.target_modules: {bad} match no linear layer")):
            make_policy(freeze_vision=freeze_vision, lora={"target_modules": targets})


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_full_finetuning_uses_a_frozen_reference(freeze_vision):
    policy = make_policy(lora={"rank": 0}, freeze_vision=freeze_vision, max_new_tokens=4)
    trained = {n for n, p in policy.module.named_parameters() if p.requires_grad}
    vision = {n for n, _ in policy.module.named_parameters() if ".visual." in n}
    assert not any("lora_" in n for n in trained)
    assert (trained & vision == set()) == freeze_vision and (trained - vision)
    assert not any(p.requires_grad for p in policy.ref_model.parameters())
    traj = rollout(policy)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    lp, info = policy.log_prob(traj, slice(None), with_ref=True)
    assert torch.equal(info["ref_log_probs"], traj.log_probs_old)  # the frozen copy still scores like the start
    assert not torch.allclose(lp.detach(), traj.log_probs_old)


def test_state_dict_roundtrip_and_unknown_keys():
    a, b = make_policy(), make_policy()
    with torch.no_grad():
        for p in a.trainable_parameters():
            p.add_(0.1)
    b.load_trainable_state_dict(a.trainable_state_dict())
    for (n, p), (_, q) in zip(a.trainable_state_dict().items(), b.trainable_state_dict().items()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="does not train"):
        b.load_trainable_state_dict({"model.visual.patch_embed.proj.weight": torch.zeros(1)})


def test_from_pretrained_reloads_identically(tmp_path):
    comps = get_dummy_components()
    comps["model"].save_pretrained(tmp_path)
    comps["processor"].save_pretrained(tmp_path)
    cfg = make_cfg(max_new_tokens=5)
    a = VLMPolicy(cfg, **comps)
    cfg.model = str(tmp_path)
    b = POLICIES.get("vlm").from_pretrained(cfg, device="cpu")
    assert type(b.module).__name__ == "Qwen2VLForConditionalGeneration"
    with torch.no_grad():
        for n, p in a.module.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    b.load_trainable_state_dict(a.trainable_state_dict())
    ta, tb = rollout(a, seed=7), rollout(b, seed=7)
    assert torch.equal(ta.data["input_ids"], tb.data["input_ids"])
    assert torch.equal(ta.log_probs_old, tb.log_probs_old)
    with torch.no_grad():
        assert torch.equal(b.log_prob(ta, slice(None))[0], ta.log_probs_old)


def test_missing_model_gives_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no such folder") as e:
        VLMPolicy.from_pretrained(make_cfg(model=missing))
    assert missing in str(e.value)
    with pytest.raises(ValueError, match="qwen2_vl") as e:
        model_class_for(SimpleNamespace(model_type="llama", architectures=["LlamaForCausalLM"]))
    assert "qwen2_5_vl" in str(e.value)
    assert (
        model_class_for(
            SimpleNamespace(model_type="custom", architectures=["Qwen2VLForConditionalGeneration"])
        ).__name__
        == "Qwen2VLForConditionalGeneration"
    )


def test_sample_greedy_is_deterministic():
    policy = make_policy(max_new_tokens=4)
    prompts, metadata, _ = batch()
    a = policy.sample(prompts, metadata)
    b = policy.sample(prompts, metadata)
    assert a == b and len(a) == len(prompts)
    s1 = policy.sample(prompts, metadata, greedy=False, generator=torch.Generator().manual_seed(0))
    s2 = policy.sample(prompts, metadata, greedy=False, generator=torch.Generator().manual_seed(0))
    assert s1 == s2


def test_text_only_prompts():
    policy = make_policy(max_new_tokens=3)
    prompts, _, groups = batch(n_prompts=2)
    traj = policy.rollout(prompts, [{} for _ in prompts], groups, torch.Generator().manual_seed(0), [])
    assert "pixel_values" not in traj.data
    lp, _ = policy.log_prob(traj, slice(None))
    assert torch.equal(lp.detach()[traj.mask.bool()], traj.log_probs_old[traj.mask.bool()])


def test_one_grpo_update_through_the_trainer():
    """The trainer's ``update`` runs on a VLM trajectory with a k3 KL and moves only the adapters."""
    from accelerate import Accelerator

    from genrl.trainers.online import update

    policy = make_policy(max_new_tokens=5)
    traj = rollout(policy, seed=0)
    traj.samples = None  # Trajectory.index/cat handle tensor samples only (see report)
    cfg = SimpleNamespace(
        train=TrainConfig(batch_size=3, lr=1e-2, timestep_chunk=0),
        objective=ObjectiveConfig(clip_range=0.2, beta=0.1, kl_type="k3"),
    )
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    acc = Accelerator(cpu=True)
    before = policy.trainable_state_dict()
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0])
    m = update(policy, traj, adv, opt, OBJECTIVES.get("grpo"), cfg, acc, None, torch.Generator().manual_seed(0))
    assert m["train/optimizer_steps"] == 2 and np.isfinite(m["grad/norm"]) and "loss/kl" in m
    assert np.isfinite(m["ratio/mean"]) and np.isfinite(m["loss/kl"]) and m["loss/kl"] >= 0
    after = policy.trainable_state_dict()
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_config_help_lists_exactly_the_supported_model_types():
    assert tuple(SUPPORTED_MODELS) == VLM_MODEL_TYPES


@pytest.mark.parametrize("rank", [4, 0])
def test_the_policy_runs_without_dropout_even_under_peft_lora_dropout(rank):
    """peft's ``lora_dropout`` modules were added in training mode after ``model.eval()``: with dropout > 0
    the rollout's and the update's log-probs differed once B left zero. Config validation refuses a
    dropout > 0; a policy built with one anyway still runs every module in eval mode."""
    cfg = make_cfg(lora={"rank": rank}, max_new_tokens=4)
    cfg.lora.dropout = 0.5  # the trainers refuse it; a policy built in code takes it
    policy = VLMPolicy(cfg, **get_dummy_components())
    assert not [n for n, m in policy.module.named_modules() if m.training]
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    traj = rollout(policy, seed=3)
    new, _ = policy.log_prob(traj, slice(None))
    m = traj.mask.bool()
    assert torch.equal(new.detach()[m], traj.log_probs_old[m])


@pytest.mark.parametrize("shipped", [{}, {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "top_k": 1}])
def test_generate_decodes_as_the_policy_whatever_generation_config_the_checkpoint_ships(shipped):
    """The SFT trainer's evaluation (``model.generate``) inherited the checkpoint's ``generation_config``:
    Qwen Instruct ships repetition_penalty 1.05, so its "greedy" answers differed from the RL policy's argmax
    on the same weights. Both answerers now give the same greedy responses, and the shipped config is kept."""
    from types import SimpleNamespace

    from genrl.vlm_batching import model_answerer, policy_answerer

    components = get_dummy_components()
    for k, v in shipped.items():
        setattr(components["model"].generation_config, k, v)
    policy = VLMPolicy(make_cfg(lora={"rank": 0}, max_new_tokens=12), **components)
    prompts, metadata, _ = batch(n_prompts=3, group=1)
    eval_cfg = SimpleNamespace(max_new_tokens=12, batch_size=8, sample_temperature=1.0)
    ours = model_answerer(policy.module, policy.processor, eval_cfg)(prompts, metadata)
    assert ours == [" ".join(r.split()) for r in policy_answerer(policy, eval_cfg)(prompts, metadata)]
    assert all(getattr(policy.module.generation_config, k) == v for k, v in shipped.items())
