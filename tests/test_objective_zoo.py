"""Issue 19's objectives and advantage estimators: the property each paper claims for its mechanism.

Each test computes what the paper (or the source named in the module's docstring) says the mechanism
does, from the formula, independently of the implementation's code path where possible."""

import math

import pytest
import torch

from genrl.config import ConfigError, ObjectiveConfig, TokenObjectiveConfig, config_from_dict
from genrl.objectives.mdpo import mdpo_step_size
from genrl.objectives.mhpo import hazard, log_fidelity
from genrl.registry import OBJECTIVES


def _cfg(**kw):
    """The token policies' objective section (PPO's clip 0.2 by default, which sapo, mhpo and fiberpo do not read)."""
    return config_from_dict(TokenObjectiveConfig, kw)


def _call(name, log_new, log_old, adv, mask=None, info=None, **kw):
    mask = torch.ones_like(log_new) if mask is None else mask
    return OBJECTIVES.get(name)(log_new, log_old, adv, mask, info or {}, _cfg(name=name, **kw))


def _grad(name, log_ratios, adv, info=None, **kw):
    """d loss / d logp_new for one action per sequence with the given log-ratios (old logp = 0)."""
    log_new = torch.tensor(log_ratios, dtype=torch.float64)[:, None].requires_grad_(True)
    loss, m = _call(name, log_new, torch.zeros_like(log_new), torch.tensor(adv, dtype=torch.float64), info=info, **kw)
    loss.backward()
    return log_new.grad[:, 0], loss, m


def test_option_sections_are_typed_validated_and_named_by_key():
    assert _cfg(name="mhpo", mhpo={"c": 2}).mhpo.c == 2.0
    with pytest.raises(ConfigError, match=r"mhpo\.lambda_neg"):
        _cfg(mhpo={"lambda_neg": 0})
    with pytest.raises(ConfigError, match=r"mdpo\.schedul"):
        _cfg(mdpo={"schedul": "constant"})


# ----------------------------------------------------------------------------- mhpo


def test_mhpo_modulator_is_bounded_odd_and_the_identity_to_first_order():
    x = torch.linspace(-20, 20, 2001, dtype=torch.float64)  # the log-ratio clamp (common.safe_exp)
    psi = log_fidelity(x, 1.5)
    assert psi.abs().max() < 1.5 and torch.allclose(log_fidelity(-x, 1.5), -psi)
    assert (psi[1:] > psi[:-1]).all()  # monotone
    small = torch.tensor([1e-3, -1e-3], dtype=torch.float64)
    # exp(psi(r)) = r + O((log r)^3): tanh(x) = x - x^3 / 3
    assert torch.allclose(log_fidelity(small, 1.5), small, rtol=0, atol=1e-9)


def test_mhpo_gradient_never_vanishes_never_flips_and_penalises_negative_shifts_more():
    logs = [-15.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 3.0, 15.0]
    for adv in (1.0, -1.0):
        g, _, _ = _grad("mhpo", logs, [adv] * len(logs), loss_agg="token-mean")
        assert (g != 0).all() and (torch.sign(-g) == adv).all()  # no dead zone, never the other sign
        # the gradient's size is A exp(psi - zeta) sech^2(log r / c) / N, bounded by e^c
        x = torch.tensor(logs, dtype=torch.float64)
        psi = 1.5 * torch.tanh(x / 1.5)
        zeta = (torch.log1p(psi.exp()) / 1.0) ** 1.5 + (torch.log1p((-psi).exp()) / 0.8) ** 2.0
        expected = (psi - zeta).exp() / torch.cosh(x / 1.5) ** 2 / len(logs)
        assert torch.allclose(g.abs(), expected) and (g.abs() * len(logs) <= math.exp(1.5)).all()
    d = torch.tensor([0.5], dtype=torch.float64)
    opts = ObjectiveConfig().mhpo
    assert hazard(log_fidelity(-d, 1.5), opts) > hazard(log_fidelity(d, 1.5), opts)


def test_mhpo_on_policy_value_and_lfm_only_limit():
    log_p = torch.zeros(3, 2, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    loss, m = _call("mhpo", log_p, log_p, adv)
    zeta1 = math.log(2) ** 1.5 + (math.log(2) / 0.8) ** 2  # softplus(0) = ln 2: 1.3278
    assert loss.item() == pytest.approx(-math.exp(-zeta1) * adv.mean().item(), rel=1e-9)
    assert m["mhpo/survival_mean"] == pytest.approx(0.26506, abs=1e-5)
    # the hazard switched off (huge scales): the loss is -exp(psi) A
    log_new = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    loss, _ = _call(
        "mhpo", log_new, torch.zeros_like(log_new), torch.tensor([1.0]), mhpo={"lambda_pos": 1e9, "lambda_neg": 1e9}
    )
    assert loss.item() == pytest.approx(-log_fidelity(log_new, 1.5).exp().mean().item(), rel=1e-9)


# ----------------------------------------------------------------------------- mdpo


def test_mdpo_first_step_is_the_plain_policy_gradient_for_any_step_size():
    """At r = 1 the KL(new || old) term has zero gradient: one step of MDPO is the vanilla policy gradient."""
    for progress in (0.0, 0.5, 0.99):
        g, _, m = _grad("mdpo", [0.0, 0.0], [1.0, -2.0], info={"progress": progress})
        assert torch.allclose(g, torch.tensor([-0.5, 1.0], dtype=torch.float64))
        assert m["mdpo/kl"] == 0.0


def test_mdpo_proximity_term_is_kl_new_to_old_and_grows_as_the_step_size_anneals():
    # the token estimator r log r - (r - 1) averages to KL(new || old) over actions sampled from old
    p_old, p_new = torch.tensor([0.9, 0.05, 0.05]), torch.tensor([0.3, 0.35, 0.35])
    a = torch.multinomial(p_old, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    log_r = (p_new.log() - p_old.log())[a]
    estimate = (log_r.exp() * log_r - (log_r.exp() - 1)).mean()
    forward, reverse = (p_new * (p_new / p_old).log()).sum(), (p_old * (p_old / p_new).log()).sum()
    assert estimate.item() == pytest.approx(forward.item(), abs=1e-2) and abs(forward - reverse) > 0.2
    # the loss weights it by 1 / t_k, t_k = 1 - k / K (floored)
    opts = ObjectiveConfig().mdpo
    assert [mdpo_step_size(opts, p) for p in (0.0, 0.5, 0.999)] == [1.0, 0.5, 0.01]
    log_new = torch.tensor([[0.4, -0.2]], dtype=torch.float64)
    zero_adv = torch.zeros(1, dtype=torch.float64)
    losses = [_call("mdpo", log_new, torch.zeros_like(log_new), zero_adv, info={"progress": p})[0] for p in (0, 0.5)]
    kl = (log_new.exp() * log_new - log_new.exp() + 1).mean()
    assert losses[0].item() == pytest.approx(kl.item()) and losses[1].item() == pytest.approx(2 * kl.item())


def test_mdpo_uses_the_closed_form_gaussian_kl_on_denoising_steps_and_never_clips():
    info = {"mean_sq_diff": torch.tensor([[0.02]]), "std": torch.tensor([[0.1]])}
    loss, m = _call("mdpo", torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), info=info)
    assert m["mdpo/kl"] == pytest.approx(0.02 / (2 * 0.01))
    g, _, _ = _grad(
        "mdpo", [math.log(3.0)], [1.0], info={"progress": 0.0}, mdpo={"schedule": "constant", "step_size": 1e9}
    )
    assert g.item() == pytest.approx(-3.0)  # r = 3 is far outside any clip range: still the full -A r


# ----------------------------------------------------------------------------- advantage estimators


def _adv_cfg(**kw):
    from genrl.config import AdvantageConfig

    return config_from_dict(AdvantageConfig, kw)


def _estimate(name, rewards, groups, **kw):
    from genrl.advantages import build_estimator
    from genrl.registry import ADVANTAGE_ESTIMATORS

    r = torch.tensor(rewards, dtype=torch.float32)
    g = torch.tensor(groups)
    cfg = _adv_cfg(estimator=name, **kw)
    return build_estimator(ADVANTAGE_ESTIMATORS.get(name), cfg)(r, g, cfg)


BINARY = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]  # 4 prompts x 4 samples: p = .25, .5, .75, 0
GROUPS = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4


def test_bnpo_reduces_to_reinforce_and_to_grpo_in_its_stated_limits():
    from genrl.advantages import group_advantages

    r, g = torch.tensor(BINARY, dtype=torch.float32), torch.tensor(GROUPS)
    p = torch.tensor([0.25] * 4 + [0.5] * 4 + [0.75] * 4 + [0.0] * 4)
    adv, _ = _estimate("bnpo", BINARY, GROUPS, bnpo={"alpha": 1, "beta": 1})
    assert torch.allclose(adv, r - p)  # alpha = beta = 1: REINFORCE with the group-mean baseline
    adv, _ = _estimate("bnpo", BINARY, GROUPS, bnpo={"alpha": 1.5, "beta": 1.5})
    grpo, _ = group_advantages(r, g, "group", eps=0.0)
    grpo = torch.nan_to_num(grpo)  # the all-zero group: 0 / 0
    assert torch.allclose(adv, math.pi / 8 * grpo, atol=1e-6)  # alpha = beta = 3/2: GRPO times pi / 8


def test_bnpo_fits_the_beta_of_the_group_means_and_survives_degenerate_batches():
    from genrl.advantages.bnpo import beta_moments

    torch.manual_seed(0)
    p = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(5.0)).sample((200_000,)).double()
    alpha, beta = beta_moments(p)
    assert alpha == pytest.approx(1 + 2 / 3, abs=0.02) and beta == pytest.approx(1 + 5 / 3, abs=0.05)
    assert beta_moments(torch.tensor([0.5, 0.5, 0.5])) == (1.0, 1.0)  # v = 0 (the authors' code: NaN)
    adv, st = _estimate("bnpo", [1, 0, 1, 0, 0, 1, 0, 1], [0] * 4 + [1] * 4)  # every prompt p = 0.5
    assert torch.isfinite(adv).all() and (st["bnpo/alpha"], st["bnpo/beta"]) == (1.0, 1.0)
    adv, _ = _estimate("bnpo", [0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])  # p in {0, 1}: R - p = 0, capped weight
    assert torch.equal(adv, torch.zeros(4))
    with pytest.raises(ValueError, match=r"advantages.bnpo.reward_min"):
        _estimate("bnpo", [2.0, 0.0], [0, 0])
    adv_scaled, _ = _estimate("bnpo", [x * 4 - 1 for x in BINARY], GROUPS, bnpo={"reward_min": -1, "reward_max": 3})
    assert torch.allclose(adv_scaled, _estimate("bnpo", BINARY, GROUPS)[0])  # affine invariance


def test_riskpo_bundles_use_every_sample_once_and_weight_the_lower_tail():
    from genrl.advantages.riskpo import bundles, rvar_weight

    g = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    (b1, b2) = bundles(g, 2)
    assert b1.tolist() == [[0, 1, 2], [3, 4, 5]] and b2.tolist() == [[6, 7, 8]]
    z = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert rvar_weight(z, torch.tensor(1.0), torch.tensor(3.0)).tolist() == [-2.0, -2.0, -1.0, 0.0, 0.0]
    # 2 prompts x 5 samples in one bundle: paper scores 0, 1, 1, 2, 2 (sum over the two prompts)
    rewards = [0, 1, 0, 1, 1] + [0, 0, 1, 1, 1]
    groups = [0] * 5 + [1] * 5
    adv, st = _estimate("riskpo", rewards, groups, riskpo={"bundle_size": 2, "scale": "none"})
    s = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0])
    q_a, q_b = torch.quantile(s, 0.2), torch.quantile(s, 0.8)  # 0.8, 2.0
    expected = -1.5 * (q_a - s).clamp_min(0) + rvar_weight(s, q_a, q_b)
    assert torch.allclose(adv[:5], expected.float()) and torch.allclose(adv[5:], expected.float())
    assert (adv <= 0).all() and adv[3] == 0  # the top papers get no push; the lowest the strongest
    assert adv[0] < adv[1] and st["riskpo/frac_tail"] == pytest.approx(0.2)
    omega0, _ = _estimate("riskpo", rewards, groups, riskpo={"bundle_size": 2, "scale": "none", "omega": 0})
    assert adv[0] < omega0[0] and torch.equal(adv[1:5], omega0[1:5])  # omega only acts below Q_alpha


def test_riskpo_masks_failed_rewards_and_constant_bundles():
    adv, _ = _estimate("riskpo", [1.0, float("nan"), 0.0, 0.0], [0, 0, 0, 0], riskpo={"bundle_size": 1})
    assert adv[1] == 0 and torch.isfinite(adv).all()
    adv, _ = _estimate("riskpo", [1.0] * 4, [0, 0, 1, 1])
    assert torch.equal(adv, torch.zeros(4))


def test_riskpo_tracked_quantiles_follow_the_papers_update_and_converge():
    """``quantiles: tracked``: the first batch sets q to its empirical quantiles; each later step uses
    q_k and moves it by ``lr (s - frac(R_B < q_k))``; fed i.i.d. scores, q settles at the true quantiles."""
    from genrl.advantages import build_estimator
    from genrl.advantages.riskpo import RiskPO, rvar_weight

    cfg = _adv_cfg(estimator="riskpo", riskpo={"bundle_size": 1, "quantiles": "tracked", "scale": "none"})
    est = build_estimator(RiskPO, cfg)
    gen = torch.Generator().manual_seed(0)
    groups = torch.arange(8).repeat_interleave(8)  # 8 prompts x 8 samples; bundle_size 1: papers = samples
    first = torch.randn(64, generator=gen, dtype=torch.float64)
    adv, st = est(first.float(), groups, cfg)
    q0 = torch.quantile(first, torch.tensor([0.2, 0.8], dtype=torch.float64))
    assert st["riskpo/q_alpha"] == pytest.approx(q0[0].item()) and st["riskpo/q_beta"] == pytest.approx(q0[1].item())
    f = first.float().double()
    expected = -1.5 * (q0[0] - f).clamp_min(0) + rvar_weight(f, q0[0], q0[1])
    assert torch.allclose(adv, expected.float(), atol=1e-6)  # the pooled quantiles, not each prompt's own
    second = torch.randn(64, generator=gen, dtype=torch.float64).float()
    _, st = est(second, groups, cfg)  # uses q_1 = q0 (the first batch only sets q) and moves it
    assert st["riskpo/q_alpha"] == pytest.approx(q0[0].item())
    below = torch.tensor([(second.double() < q).double().mean().item() for q in q0], dtype=torch.float64)
    torch.testing.assert_close(est.tracker.q, q0 + 0.1 * (torch.tensor([0.2, 0.8], dtype=torch.float64) - below))
    for _ in range(600):  # N(0, 1) scores: q_0.2 = -0.8416, q_0.8 = +0.8416
        est(torch.randn(64, generator=gen), groups, cfg)
    assert torch.allclose(est.tracker.q, torch.tensor([-0.8416, 0.8416], dtype=torch.float64), atol=0.08)
    # the state round-trips: a fresh estimator loaded with it gives the same advantages
    again = build_estimator(RiskPO, cfg)
    again.load_state_dict(est.state_dict())
    batch = torch.randn(64, generator=gen)
    assert torch.equal(again(batch, groups, cfg)[0], est(batch, groups, cfg)[0])


def test_riskpo_tracked_quantiles_push_a_uniformly_low_bundle_down():
    """A bundle whose papers all score alike below the tracked Q_alpha is pushed down (its own std, 0, is not
    the divisor: the batch's is); with each bundle's own quantiles the same bundle gets nothing."""
    from genrl.advantages import build_estimator
    from genrl.advantages.riskpo import RiskPO

    cfg = _adv_cfg(estimator="riskpo", riskpo={"bundle_size": 1, "quantiles": "tracked"})
    est = build_estimator(RiskPO, cfg)
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0] + [0.2, 0.9, 0.5, 1.0])
    groups = torch.tensor([0] * 4 + [1] * 4)
    adv, _ = est(rewards, groups, cfg)
    assert (adv[:4] < 0).all() and adv[:4].abs().max() < 10 and torch.isfinite(adv).all()
    bundle, _ = _estimate("riskpo", rewards.tolist(), groups.tolist(), riskpo={"bundle_size": 1})
    assert torch.equal(bundle[:4], torch.zeros(4))


def test_riskpo_tracked_quantiles_put_a_short_bundle_on_the_scale_of_a_full_one():
    """3 prompts in bundles of 2: the last bundle has one prompt, so its paper scores (one reward each)
    are doubled before they are pooled with the full bundle's (two rewards each)."""
    from genrl.advantages import build_estimator
    from genrl.advantages.riskpo import RiskPO

    cfg = _adv_cfg(estimator="riskpo", riskpo={"bundle_size": 2, "quantiles": "tracked", "scale": "none"})
    est = build_estimator(RiskPO, cfg)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0])  # 3 prompts x 3 samples
    _, st = est(rewards, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]), cfg)
    pooled = torch.tensor([2.0, 1.0, 1.0, 1.0, 2.0, 0.0], dtype=torch.float64)  # papers 1+1, 0+1, 1+0; 2x(.5, 1, 0)
    assert st["riskpo/q_alpha"] == pytest.approx(torch.quantile(pooled, 0.2).item())
    assert st["riskpo/q_beta"] == pytest.approx(torch.quantile(pooled, 0.8).item())


def test_advantages_keep_one_stateful_estimator_per_reward_and_their_state():
    """``combine: advantages`` gives each reward its own estimator instance (its own tracked quantiles);
    the state round-trips through ``state_dict`` and a missing stream is named."""
    from genrl.advantages import Advantages
    from genrl.advantages.riskpo import RiskPO

    riskpo = {"bundle_size": 1, "quantiles": "tracked"}
    cfg = _adv_cfg(estimator="riskpo", combine="advantages", riskpo=riskpo)
    values = {"a": torch.tensor([0.0, 1.0, 0.0, 1.0]), "b": torch.tensor([10.0, 30.0, 20.0, 40.0])}
    groups = torch.tensor([0, 0, 1, 1])
    adv = Advantages(RiskPO, cfg, {"a": 1.0, "b": 0.5})
    out, stats = adv(values["a"] + 0.5 * values["b"], values, groups)
    state = adv.state_dict()
    assert set(state) == {"a", "b"} and state["a"]["tracker"]["q"] != state["b"]["tracker"]["q"]
    assert {"riskpo/q_alpha_a", "riskpo/q_alpha_b", "reward/std"} <= set(stats)
    again = Advantages(RiskPO, cfg, {"a": 1.0, "b": 0.5})
    again.load_state_dict(state)
    assert torch.equal(again(values["a"], values, groups)[0], adv(values["a"], values, groups)[0])
    with pytest.raises(KeyError, match="b"):
        again.load_state_dict({"a": state["a"]})
    total = Advantages(RiskPO, _adv_cfg(estimator="riskpo", riskpo=riskpo), {"a": 1.0, "b": 0.5})
    assert set(total.state_dict()) == {"total"}
    from genrl.advantages.grpo import grpo_estimator

    assert Advantages(grpo_estimator, _adv_cfg(), {"a": 1.0}).state_dict() == {}  # a function keeps none
    bundle = Advantages(RiskPO, _adv_cfg(estimator="riskpo"), {"a": 1.0})  # each bundle's own quantiles: no state
    assert bundle.state_dict() == {} and bundle.load_state_dict({}) is None
    with pytest.raises(ValueError, match="levels"):  # tracked quantiles of other levels are not these
        RiskPO(_adv_cfg(estimator="riskpo", riskpo={**riskpo, "alpha": 0.1})).load_state_dict(state["a"])


# ----------------------------------------------------------------------------- d3s


def test_d3s_keeps_the_subset_of_maximal_advantage_variance():
    import itertools

    from genrl.advantages.d3s import max_variance_subset

    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = 3 + trial % 8
        a = torch.randn(n, generator=gen, dtype=torch.float64)
        for m in range(1, n):
            best = max(a[list(c)].var(unbiased=False).item() for c in itertools.combinations(range(n), m))
            assert a[max_variance_subset(a, m)].var(unbiased=False).item() == pytest.approx(best, abs=1e-12)


def test_d3s_masks_samples_and_actions_without_touching_the_advantages_and_follows_its_schedule():
    from genrl.advantages.d3s import action_mask, sample_mask, schedule
    from genrl.trajectory import Trajectory

    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -1.0, -1.0])
    groups = torch.tensor([0] * 4 + [1] * 4)
    keep = sample_mask(adv, groups, torch.ones(8, dtype=torch.bool), 0.5, 0.5)
    assert keep.sum() == 2 and (adv[keep] != 0).all()  # the cross-group stage drops the zero-signal group
    score = torch.tensor([[3.0, 1.0, 2.0], [0.5, 9.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert action_mask(score, mask, 0.4).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # top 2 of 5, never padding
    assert action_mask(score, mask, 0.5, "sequence").tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert [schedule(0.2, 1.0, p) for p in (0.0, 0.5, 1.0)] == [0.2, 0.6, 1.0]
    # everything kept at the end of the schedule: the plain GRPO mask
    from genrl.advantages import d3s

    traj = Trajectory(torch.zeros(8, 3), torch.ones(8, 3), groups, step_info={"std": torch.rand(8, 3)})
    opts = _adv_cfg(downsample="d3s").d3s
    d3s.downsample(traj, adv, groups, torch.ones(8, dtype=torch.bool), slice(0, 8), opts, 1.0)
    assert torch.equal(traj.mask, torch.ones(8, 3))
    d3s.downsample(traj, adv, groups, torch.ones(8, dtype=torch.bool), slice(0, 8), opts, 0.0)
    # half of each group (4 samples, 12 steps), then a fifth of those steps: the 2 of largest |A| x std,
    # never in the zero-advantage group
    assert traj.mask.sum() == round(0.2 * 4 * 3) and traj.mask[:4].sum() == 0


# ----------------------------------------------------------------------------- fiberpo


def test_fiberpo_is_the_identity_near_on_policy_and_bounded_far_from_it():
    from genrl.objectives.fiberpo import gated_log_ratio

    opts = ObjectiveConfig().fiberpo
    gen = torch.Generator().manual_seed(0)
    small = 0.004 * torch.randn(4, 6, generator=gen, dtype=torch.float64)  # |log r| < min(eps, C+, C-) / 2
    mask = torch.ones(4, 6, dtype=torch.float64)
    log_g, _, _ = gated_log_ratio(small, mask, opts)
    assert torch.allclose(log_g, small, atol=1e-15)  # no gate active: G = r exactly
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    new = small.clone().requires_grad_(True)
    loss, _ = _call("fiberpo", new, torch.zeros_like(new), adv)
    loss.backward()
    expected = -(small.exp() * adv[:, None]) / 6 / 4  # the unclipped importance-sampled policy gradient
    assert torch.allclose(new.grad, expected, atol=1e-12)
    large = 3 * torch.randn(4, 6, generator=gen, dtype=torch.float64)
    log_g, _, _ = gated_log_ratio(large, mask, opts)
    assert (log_g <= opts.c_pos + 2 * opts.eps + 1e-12).all() and (log_g >= -(opts.c_neg + 2 * opts.eps) - 1e-12).all()


def test_fiberpo_gates_each_trajectory_alone_and_rolls_back_past_its_budget():
    from genrl.objectives.fiberpo import aggregate_gate, gated_log_ratio

    opts = ObjectiveConfig().fiberpo
    gen = torch.Generator().manual_seed(1)
    log_r = 0.3 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.float64)
    before, _, _ = gated_log_ratio(log_r, mask, opts)
    moved = log_r.clone()
    moved[2] += 1.0  # another trajectory's actions
    after, _, _ = gated_log_ratio(moved, mask, opts)
    assert torch.equal(before[:2], after[:2])
    # g(x; C, k): pass-through, rollback with slope -k, zeroed at (1 + 1/k) C
    x = torch.tensor([0.05, 0.1, 0.11, 0.125, 0.5], dtype=torch.float64)
    assert torch.allclose(
        aggregate_gate(x, 0.1, torch.tensor(4.0)), torch.tensor([0.05, 0.1, 0.06, 0.0, 0.0], dtype=torch.float64)
    )
    # a uniform shift of a whole trajectory within budget leaves the fiber gate at 1 (ratio decoupling)
    shift = torch.full((1, 5), 0.03, dtype=torch.float64)
    log_g, log_w_base, _ = gated_log_ratio(shift, torch.ones(1, 5, dtype=torch.float64), opts)
    assert torch.allclose(log_g, log_w_base[:, None].expand(1, 5)) and log_w_base.item() == pytest.approx(0.03)


def test_bnpo_advantage_decomposition_and_estimators_from_outside_genrl():
    from genrl.advantages import weighted_advantages
    from genrl.advantages.bnpo import bnpo_estimator

    cfg = _adv_cfg(estimator="bnpo")
    acc = torch.tensor(BINARY, dtype=torch.float32)
    fmt = torch.tensor([1.0] * 8 + [0.0, 1.0] * 4)
    groups = torch.tensor(GROUPS)
    mixed = weighted_advantages(
        {"acc": acc, "fmt": fmt}, {"acc": 0.5, "fmt": 0.5}, groups, lambda r, g: bnpo_estimator(r, g, cfg)[0]
    )
    each = [bnpo_estimator(r, groups, cfg)[0] for r in (acc, fmt)]
    assert torch.allclose(mixed, 0.5 * each[0] + 0.5 * each[1])  # each reward its own Beta, then averaged
    assert _adv_cfg(estimator="genrl.advantages.bnpo:bnpo_estimator").estimator.endswith("bnpo_estimator")
    with pytest.raises(ConfigError, match="estimator"):
        _adv_cfg(estimator="bnp")


# ----------------------------------------------------------------------------- capo


def _capo_opts(**kw):
    return _cfg(name="capo", capo=kw).capo


def _head(V=7, H=5, seed=0):
    """A linear softmax head W [V, H], an input h [H] and a sampled token a."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(V, H, generator=gen, dtype=torch.float64), torch.randn(H, generator=gen, dtype=torch.float64), 3


def test_capo_predictions_are_the_second_order_model_of_the_head():
    """With the full vocabulary as top-k and the SGD model (step = lr g), m_H is the second-order Taylor
    expansion of ``A pi(a) / pi_old(a)`` along the step and m_F half the squared change of log pi(a),
    both computed here by autograd on the head (the paper's eqs 7-9: gradient, Hessian, Fisher)."""
    from genrl.objectives.capo import lm_head_terms

    W, h, a = _head()
    A, lr = -1.3, 0.05
    probs = torch.softmax(W @ h, -1)
    onehot = torch.nn.functional.one_hot(torch.tensor(a), W.shape[0]).double()
    m_H, m_F, g = lm_head_terms(h[None, None], probs[None, None], onehot[None, None], torch.tensor([A]), lr)
    step = lr * g[0, 0]  # [V, H]
    torch.testing.assert_close(g[0, 0], A * (onehot - probs)[:, None] * h[None, :])
    eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax((W + eps * step) @ h, -1)[a]
    ratio_gain = A * torch.exp(logp - logp.detach())
    (d1,) = torch.autograd.grad(ratio_gain, eps, create_graph=True)
    (d2,) = torch.autograd.grad(d1, eps)
    torch.testing.assert_close(m_H[0, 0], d1.detach() + 0.5 * d2)
    eps2 = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (dlogp,) = torch.autograd.grad(torch.log_softmax((W + eps2 * step) @ h, -1)[a], eps2)
    torch.testing.assert_close(m_F[0, 0], 0.5 * dlogp**2)
    # A = 0: no step, nothing predicted; m_F scales as lr^2
    zero = lm_head_terms(h[None, None], probs[None, None], onehot[None, None], torch.tensor([0.0]), lr)
    assert zero[0].abs().max() == 0 and zero[1].abs().max() == 0
    half = lm_head_terms(h[None, None], probs[None, None], onehot[None, None], torch.tensor([A]), lr / 2)
    torch.testing.assert_close(half[1], m_F / 4)


def _capo_head(gen, B, T, k, H, vocab=0):
    """The policy's head outputs for CAPO, drawn from ``gen`` (hidden, probs, action, then ids): ``ids`` [B, T, k]
    random rows of a ``vocab``-row head, or all row 0 when ``vocab`` is 0."""
    head = {
        "hidden": torch.randn(B, T, H, generator=gen),
        "probs": torch.softmax(torch.randn(B, T, k, generator=gen), -1),
        "action": torch.nn.functional.one_hot(torch.randint(0, k, (B, T), generator=gen), k).float(),
    }
    ids = torch.randint(0, vocab, (B, T, k), generator=gen) if vocab else torch.zeros(B, T, k, dtype=torch.long)
    return {**head, "ids": ids}


def _shadow(vocab=6, width=2, **kw):
    from genrl.objectives.capo import ShadowAdam

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1, betas=(0.8, 0.9), eps=1e-6)
    return ShadowAdam(_capo_opts(**kw), vocab, width, opt)


def test_capo_shadow_adam_moments_follow_the_kept_tokens():
    """Before any update the planned step is the raw gradient; each update is one Adam moment step with
    each vocabulary row's mean kept gradient; later steps use Adam's bias-corrected direction with the
    token's own gradient folded in (the authors' SparseAdamModel)."""
    state = _shadow()
    assert state.direction(torch.zeros(1, 1, 2, dtype=torch.long)) is None and state.lr() == 0.1
    g = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]], [[5.0, 0.0], [1.0, 1.0]]]])  # [B=1, T=2, k=2, H=2]
    ids = torch.tensor([[[0, 1], [0, 4]]])  # row 0 twice, rows 1 and 4 once
    state.accumulate(g[:, :1], ids[:, :1], torch.tensor([[1.0]]))  # two micro-batches of one optimizer step
    state.accumulate(g[:, 1:], ids[:, 1:], torch.tensor([[1.0]]))
    state.accumulate(g, ids, torch.tensor([[0.0, 0.0]]))  # masked tokens add nothing
    assert not state.skip_step()
    state.after_optimizer_step(stepped=True)
    mean0 = (g[0, 0, 0] + g[0, 1, 0]) / 2
    torch.testing.assert_close(state.m[0], 0.2 * mean0)
    torch.testing.assert_close(state.v[0], 0.1 * mean0**2)
    torch.testing.assert_close(state.m[4], 0.2 * g[0, 1, 1])
    assert state.t == 1 and state.m[[2, 3, 5]].abs().sum() == 0
    new = torch.tensor([[[[0.5, -0.5]]]])
    G = state.direction(torch.tensor([[[0]]]))(new)
    m_hat = (0.8 * state.m[0] + 0.2 * new[0, 0, 0]) / (1 - 0.8**2)
    v_hat = (0.9 * state.v[0] + 0.1 * new[0, 0, 0] ** 2) / (1 - 0.9**2)
    torch.testing.assert_close(G[0, 0, 0], m_hat / (v_hat.sqrt() + 1e-6))
    state.accumulate(g, ids, torch.zeros(1, 2))
    assert state.skip_step()  # every token masked: the trainer skips the optimizer step
    state.after_optimizer_step(stepped=False)
    state.accumulate(g, ids, torch.ones(1, 2))
    state.after_optimizer_step(stepped=False)  # a skipped step (e.g. a non-finite gradient) moves nothing
    assert state.t == 1 and state.skip_step()  # and what it had gathered is dropped
    again = _shadow()
    again.load_state_dict(state.state_dict())
    assert again.t == 1 and torch.equal(again.m, state.m) and torch.equal(again.v, state.v)
    assert _shadow(optimizer_model="sgd").direction(ids) is None


def test_capo_keeps_exactly_the_tokens_inside_both_tests_and_is_the_base_without_them():
    from genrl.objectives.capo import keep_mask, lm_head_terms

    gen = torch.Generator().manual_seed(1)
    B, T, k, H = 4, 6, 5, 3
    info = {"head": _capo_head(gen, B, T, k, H)}
    hidden, probs, action = (info["head"][key] for key in ("hidden", "probs", "action"))
    adv = torch.tensor([1.0, -1.0, 0.0, 2.0])
    log_old = torch.randn(B, T, generator=gen)
    log_new = log_old + 0.01 * torch.randn(B, T, generator=gen)
    mask = torch.ones(B, T)
    mask[0, -2:] = 0
    m_H, m_F, _ = lm_head_terms(hidden, probs, action, adv, 0.1)
    opts = {"fisher_tau": float(m_F[mask.bool()].median()), "hessian_tau": float(m_H.abs()[mask.bool()].median())}
    cfg = _cfg(name="capo", capo=opts)
    loss, m = OBJECTIVES.get("capo")(
        log_new, log_old, adv, mask, {**info, "objective_state": _shadow(width=H, **opts)}, cfg
    )
    fisher, hessian = keep_mask(m_H, m_F, cfg.capo)
    expected_keep = mask * (m_F < opts["fisher_tau"]) * (m_H.abs() < opts["hessian_tau"])
    assert torch.equal(mask * fisher * hessian, expected_keep) and 0 < expected_keep.sum() < mask.sum()
    assert (expected_keep[2] == mask[2]).all()  # A = 0: nothing predicted, always kept
    base, _ = OBJECTIVES.get("grpo")(log_new, log_old, adv, expected_keep, {}, cfg)
    torch.testing.assert_close(loss, base * expected_keep.sum() / mask.sum())  # token-mean over the trained tokens
    assert m["capo/kept"] == pytest.approx(float(expected_keep.sum() / mask.sum()))
    off = {"fisher_tau": 0.0, "hessian_tau": 0.0}  # both tests off: the base objective bit for bit
    off_state = {**info, "objective_state": _shadow(width=H, **off)}
    loss0, _ = OBJECTIVES.get("capo")(log_new, log_old, adv, mask, off_state, _cfg(name="capo", capo=off))
    assert torch.equal(loss0, OBJECTIVES.get("grpo")(log_new, log_old, adv, mask, {}, cfg)[0])


def _stepped_shadow(vocab, width, ids, **opts):
    """A shadow state that has taken one moment step (so the Adam direction is in use)."""
    state = _shadow(vocab=vocab, width=width, **opts)
    g = torch.randn(1, 1, 1, width, generator=torch.Generator().manual_seed(0))
    state.accumulate(g, ids[:1, :1, :1], torch.ones(1, 1))
    state.after_optimizer_step()
    return state


def test_capo_head_terms_taken_a_few_tokens_at_a_time_equal_one_piece(monkeypatch):
    """The [n, k, H] gradient rows are built a few tokens at a time (``HEAD_CHUNK_BYTES``): the
    predictions, the mask and the accumulated moments equal the one-piece computation, Adam's
    direction included."""
    from genrl.objectives import capo

    gen = torch.Generator().manual_seed(3)
    B, T, k, H, V = 3, 5, 4, 2, 9
    head = _capo_head(gen, B, T, k, H, vocab=V)
    adv, mask = torch.randn(B, generator=gen), (torch.rand(B, T, generator=gen) > 0.2).float()
    direction = _stepped_shadow(V, H, head["ids"]).direction(head["ids"])
    m_H, m_F, _ = capo.lm_head_terms(head["hidden"], head["probs"], head["action"], adv, 0.1, direction)
    opts = {"fisher_tau": float(m_F.median()), "hessian_tau": float(m_H.abs().median())}  # each keeps about half

    def run():
        state = _stepped_shadow(V, H, head["ids"], **opts)
        terms = capo.masked_head_terms(head, adv, mask, state, state.opts)
        state.after_optimizer_step()
        return terms, state

    whole, s1 = run()
    monkeypatch.setattr(capo, "HEAD_CHUNK_BYTES", 4 * k * H * 2)  # two tokens per chunk
    parts, s2 = run()
    for a, b in zip(whole, parts):
        assert torch.equal(a, b)
    torch.testing.assert_close(whole[0], m_H)
    torch.testing.assert_close(whole[1], m_F)
    assert 0 < (mask * whole[2] * whole[3]).sum() < mask.sum()
    assert torch.equal(s1.m, s2.m) and torch.equal(s1.v, s2.v) and s1.t == s2.t == 2


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_capo_loss_does_not_depend_on_how_the_batch_is_split(loss_agg):
    """Two micro-batches weighted as the trainer weighs them give the whole batch's loss, although the
    mask removes a different share of each (genrl's rule for every objective)."""
    from genrl.objectives.common import objective_chunk_weight, objective_normaliser

    gen = torch.Generator().manual_seed(2)
    B, T, k, H = 6, 5, 4, 3
    head = _capo_head(gen, B, T, k, H)
    adv = torch.randn(B, generator=gen)
    log_old = torch.randn(B, T, generator=gen)
    log_new = (log_old + 0.05 * torch.randn(B, T, generator=gen)).requires_grad_(True)
    mask = (torch.rand(B, T, generator=gen) > 0.2).float()
    cfg = _cfg(name="capo", loss_agg=loss_agg, capo={"fisher_tau": 2e-4, "hessian_tau": 0.02})
    capo = OBJECTIVES.get("capo")

    def loss_of(rows):
        info = {"head": {key: x[rows] for key, x in head.items()}, "objective_state": _shadow(width=H)}
        return capo(log_new[rows], log_old[rows], adv[rows], mask[rows], info, cfg)

    whole, m = loss_of(slice(None))
    total = objective_normaliser(capo, mask, cfg)
    parts = sum(
        loss_of(rows)[0] * objective_chunk_weight(capo, mask[rows], mask[rows], cfg, total=total)
        for rows in (slice(0, 2), slice(2, 6))
    )
    assert 0 < m["capo/kept"] < 1
    torch.testing.assert_close(parts, whole)


def test_capo_is_for_token_policies_and_checks_its_base():
    from genrl.config import OnlineConfig, OnlineVLMConfig, load_config

    with pytest.raises(ConfigError, match="objective.name.*softmax head"):
        load_config(OnlineConfig, None, ["objective.name=capo"])
    with pytest.raises(ConfigError, match="objective.capo.base"):
        load_config(OnlineVLMConfig, None, ["objective.name=capo", "objective.capo.base=seppo"])
    with pytest.raises(ConfigError, match="advantages.std"):  # the base's own rule (Dr. GRPO: no std division)
        load_config(OnlineVLMConfig, None, ["objective.name=capo", "objective.capo.base=dr_grpo"])
    with pytest.raises(ConfigError, match="policy.lora.rank"):  # LoRA leaves the modelled head frozen
        load_config(OnlineVLMConfig, None, ["objective.name=capo", "policy.lora.rank=8"])
    with pytest.raises(ConfigError, match="objective.capo.base.*sage_grpo"):  # a base's own rule, under the base's key
        load_config(OnlineVLMConfig, None, ["objective.name=capo", "objective.capo.base=sage_grpo"])
    cfg = load_config(
        OnlineVLMConfig,
        None,
        ["objective.name=capo", "objective.capo.base=dr_grpo", "advantages.std=none", "policy.lora.rank=0"],
    )
    from genrl.objectives.common import chunk_agg

    assert chunk_agg(OBJECTIVES.get("capo"), cfg.objective) == "seq-mean-token-sum-norm"  # the base's


SPLIT_CASES = [n for n in OBJECTIVES.names() if OBJECTIVES.meta(n).get("kind") != "preference" and n != "capo"]


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("name", SPLIT_CASES)
def test_loss_with_kl_does_not_depend_on_how_the_batch_is_split(name, loss_agg):
    """Every online objective (capo: its own test above), with a KL term on sequences of unequal
    length: two micro-batches weighted as the trainer weighs them give the whole batch's loss. gspo
    and fiberpo had averaged the KL with loss_agg's token mean under their per-sequence normaliser
    (2.5 whole against 2.0 split, for lengths 1 and 3)."""
    from genrl.objectives.common import objective_chunk_weight, objective_normaliser

    g = torch.Generator().manual_seed(0)
    B, T = 4, 5
    old = torch.randn(B, T, generator=g, dtype=torch.float64)
    new = old + 0.05 * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    full = lambda v: torch.full((B, T), v, dtype=torch.float64)  # noqa: E731
    info = {  # what token policies (ref_log_probs) and flow steps (the rest) hand the objectives
        "ref_log_probs": old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
        "step_index": torch.arange(T).repeat(B, 1),
        "std": full(0.3),
        "output_scale": full(0.1),
        "mean_sq_diff": torch.rand(B, T, generator=g, dtype=torch.float64),
        "grad_scale": torch.rand(B, T, generator=g, dtype=torch.float64) + 0.5,
    }
    cfg = _cfg(name=name, beta=0.5, kl_type="k1", loss_agg=loss_agg)
    obj = OBJECTIVES.get(name)
    whole, m = obj(new, old, adv, mask, info, cfg)
    total = objective_normaliser(obj, mask, cfg)
    parts = sum(
        obj(new[r], old[r], adv[r], mask[r], {k: v[r] for k, v in info.items()}, cfg)[0]
        * objective_chunk_weight(obj, mask[r], mask[r], cfg, total=total)
        for r in (slice(0, 1), slice(1, 4))
    )
    assert m["loss/kl"] > 0
    torch.testing.assert_close(parts, whole)
