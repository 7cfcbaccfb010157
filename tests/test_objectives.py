"""Objective registry and GRPO: clip region, KL term, gradient sign; advantages; sampler."""

import pytest
import torch

from genrl.advantages import group_advantages
from genrl.config import ObjectiveConfig
from genrl.registry import OBJECTIVES
from genrl.samplers import GroupSampler


def _grpo(log_new, log_old, adv, beta=0.0, kl=None, clip=0.2):
    cfg = ObjectiveConfig(name="grpo", clip_range=clip, adv_clip_max=5.0, beta=beta)
    info = {} if kl is None else {"kl": kl}
    return OBJECTIVES.get("grpo")(log_new, log_old, adv, torch.ones_like(log_new), info, cfg)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(ValueError, match="grpo"):
        OBJECTIVES.get("nope")


@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_gradient_sign_follows_advantage(adv):
    log_new = torch.zeros(1, 1, requires_grad=True)
    loss, _ = _grpo(log_new, torch.zeros(1, 1), torch.tensor([adv]))
    loss.backward()
    # minimising the loss raises log-probs of positive-advantage actions
    assert torch.sign(-log_new.grad).item() == adv


def test_clip_region_has_zero_gradient():
    log_old = torch.zeros(2, 1)
    # ratio 1.5 > 1 + eps with A > 0, ratio 0.5 < 1 - eps with A < 0: both clipped
    log_new = torch.log(torch.tensor([[1.5], [0.5]])).requires_grad_(True)
    loss, m = _grpo(log_new, log_old, torch.tensor([1.0, -1.0]))
    loss.backward()
    assert torch.equal(log_new.grad, torch.zeros(2, 1))
    assert m["ratio/clip_frac"] == 1.0
    # the other side of the trust region is not clipped (pessimistic bound)
    log_new = torch.log(torch.tensor([[0.5], [1.5]])).requires_grad_(True)
    loss, _ = _grpo(log_new, log_old, torch.tensor([1.0, -1.0]))
    loss.backward()
    assert (log_new.grad != 0).all()


def test_advantage_clamp():
    log_new = torch.zeros(1, 1, requires_grad=True)
    loss, _ = _grpo(log_new, torch.zeros(1, 1), torch.tensor([100.0]))
    assert loss.item() == pytest.approx(-5.0)


def test_kl_term_zero_at_reference_and_added_with_beta():
    log_p = torch.zeros(2, 3)
    loss0, m0 = _grpo(log_p, log_p, torch.tensor([1.0, -1.0]), beta=0.5, kl=torch.zeros(2, 3))
    assert m0["loss/kl"] == 0.0
    loss1, m1 = _grpo(log_p, log_p, torch.tensor([1.0, -1.0]), beta=0.5, kl=torch.full((2, 3), 0.2))
    assert m1["loss/kl"] == pytest.approx(0.2)
    assert (loss1 - loss0).item() == pytest.approx(0.5 * 0.2)
    # beta = 0: kl is reported but not added
    loss2, m2 = _grpo(log_p, log_p, torch.tensor([1.0, -1.0]), beta=0.0, kl=torch.full((2, 3), 0.2))
    assert loss2.item() == pytest.approx(loss0.item()) and m2["loss/kl"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="kl"):
        _grpo(log_p, log_p, torch.tensor([1.0, -1.0]), beta=0.5)


def test_group_advantages_normalise_within_groups():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    adv, st = group_advantages(r, g, "group", eps=0.0)
    torch.testing.assert_close(adv[:3], (r[:3] - 2.0) / r[:3].std(unbiased=False))
    adv, st = group_advantages(r, g, "group", eps=1e-4)
    assert torch.equal(adv[3:], torch.zeros(3))  # a zero-variance group carries no signal
    assert st["reward/frac_zero_std"] == 0.5
    adv_g, _ = group_advantages(r, g, "global", eps=0.0)
    torch.testing.assert_close(adv_g[:3], (r[:3] - 2.0) / r.std(unbiased=False))
    adv_n, _ = group_advantages(r, g, "none")
    torch.testing.assert_close(adv_n[:3], r[:3] - 2.0)


def test_group_advantages_with_the_sample_std_follow_easyr1():
    """advantages.std_correction=1: EasyR1's compute_grpo_outcome_advantage (MMR1), (r - mean) /
    (torch.std(r) + eps); [1, 2, 3] gives -1, 0, 1 there against +-1.2247 with the population std.
    A group of one finite reward has std 0 (advantage 0), not torch.std's NaN."""
    r = torch.tensor([1.0, 2.0, 3.0, 5.0, float("nan")])
    g = torch.tensor([0, 0, 0, 1, 1])
    adv, st = group_advantages(r, g, "group", eps=1e-6, correction=1)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0]), rtol=0, atol=1e-5)
    assert st["reward/std"] == pytest.approx(0.5)  # the groups' stds as used: 1 and 0
    adv0, _ = group_advantages(r, g, "group", eps=0.0, correction=0)
    assert adv0[2].item() == pytest.approx(1.224745, rel=1e-5)
    adv_g, _ = group_advantages(r[:4], g[:4], "global", eps=0.0, correction=1)
    torch.testing.assert_close(adv_g[:3], (r[:3] - 2.0) / r[:4].std())


def test_nan_rewards_get_zero_advantage_and_are_excluded_from_stats():
    r = torch.tensor([1.0, float("nan"), 3.0, 5.0])
    adv, st = group_advantages(r, torch.tensor([0, 0, 0, 0]), "group", eps=0.0)
    assert adv[1] == 0 and st["reward/invalid"] == 1
    torch.testing.assert_close(adv[[0, 2, 3]], (r[[0, 2, 3]] - 3.0) / r[[0, 2, 3]].std(unbiased=False))


def test_group_sampler_complete_groups_across_ranks():
    shares = [GroupSampler(20, 4, 6, seed=3, num_processes=3, process_index=k).sample(step=5) for k in range(3)]
    prompts = sum((s[0] for s in shares), [])
    groups = sum((s[1] for s in shares), [])
    assert len(prompts) == 24 and len(set(prompts)) == 4
    for gid in set(groups):  # each group: one prompt, group_size members in the gathered batch
        members = [p for p, g in zip(prompts, groups) if g == gid]
        assert len(members) == 6 and len(set(members)) == 1
    again = GroupSampler(20, 4, 6, seed=3, num_processes=3, process_index=0).sample(step=5)
    assert again == shares[0]  # pure function of (seed, step): resume-exact
    assert GroupSampler(20, 4, 6, seed=3).sample(step=6) != GroupSampler(20, 4, 6, seed=3).sample(step=5)
    with pytest.raises(ValueError, match="divisible"):
        GroupSampler(20, 4, 5, num_processes=3)
