"""Qwen-Image's variable-length text: a prompt's velocity does not depend on how far its batch is
padded, and a fixed ``max_sequence_length`` width lets rollout chunks of different prompts concatenate."""

import torch
from families import dummy_qwen_image as fam

from genrl.config import PolicyConfig
from genrl.policies.flow import FlowPolicy
from genrl.trajectory import Trajectory


def _policy(**kw):
    return FlowPolicy(PolicyConfig(model="unused", num_steps=4, **{**fam.POLICY_KW, **kw}), fam.build())


def test_a_prompts_velocity_does_not_depend_on_padding():
    policy = _policy()
    short, long = "a red car", "a photo of a dog running in the park"
    alone, batched = policy.encode_prompts([short]), policy.encode_prompts([short, long])
    assert alone["embeds"].shape[1] < batched["embeds"].shape[1] and batched["mask"][0].sum() == alone["mask"].sum()
    assert not batched["mask"][0, -1] and not batched["embeds"][0, alone["embeds"].shape[1] :].any()
    x = policy.noise(2, torch.Generator().manual_seed(0))
    sigma = torch.full((2,), 0.7)
    with torch.no_grad():
        v_alone = policy.family.forward(policy.transformer, x[:1], sigma[:1], alone)
        v_batched = policy.family.forward(policy.transformer, x, sigma, batched)
    torch.testing.assert_close(v_batched[:1], v_alone, rtol=1e-5, atol=1e-6)
    # encoding: a prompt's rows are the same whatever it was encoded with
    torch.testing.assert_close(
        policy.family.encode([short, long])["embeds"][0, : alone["embeds"].shape[1]],
        alone["embeds"][0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_fixed_width_rollout_chunks_concatenate_and_match_batch_max_padding():
    fixed, free = _policy(max_sequence_length=16), _policy()
    a, b = fam.PROMPTS[1:2], fam.PROMPTS[2:3]  # different token counts
    assert fixed.encode_prompts(a)["embeds"].shape[1] == 16
    parts = [fixed.rollout(p, [{}], [i], torch.Generator().manual_seed(i), [0, 1]) for i, p in enumerate((a, b))]
    assert Trajectory.cat(parts).data["embeds"].shape[:2] == (2, 16)
    torch.testing.assert_close(
        fixed.sample(a + b, [0, 1], guidance_scale=2.5),
        free.sample(a + b, [0, 1], guidance_scale=2.5),
        rtol=1e-4,
        atol=1e-5,
    )
