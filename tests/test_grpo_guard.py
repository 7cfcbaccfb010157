"""GRPO-Guard: RatioNorm on synthetic Gaussian steps, the step reweighting, and the flow policy's inputs."""

import pytest
import torch

from genrl import sde
from genrl.config import ObjectiveConfig
from genrl.objectives.grpo_guard import normalized_log_ratio
from genrl.registry import OBJECTIVES


def test_ratio_norm_is_zero_mean_with_a_step_independent_scale():
    """x' ~ N(mu_old, s^2) per dimension; the new mean is shifted by delta in every dimension.
    Raw log-ratios are left-shifted by delta^2 / (2 s^2) with spread delta / (s sqrt(D));
    normalised ones have mean 0 and spread delta / sqrt(D) at every noise level."""
    g = torch.Generator().manual_seed(0)
    N, D, delta = 4000, 256, 0.02
    spreads = []
    for s in (0.05, 0.2, 0.8):
        mu_old = torch.randn(N, D, generator=g)
        x = mu_old + s * torch.randn(N, D, generator=g)
        std = torch.full((N,), s)
        log_r = sde.gaussian_log_prob(x, mu_old + delta, std) - sde.gaussian_log_prob(x, mu_old, std)  # [N]
        assert log_r.mean().item() == pytest.approx(-(delta**2) / (2 * s**2), rel=0.1)
        assert log_r.std().item() == pytest.approx(delta / (s * D**0.5), rel=0.05)
        hat = normalized_log_ratio(log_r, std, torch.full((N,), delta**2))
        se = delta / D**0.5 / N**0.5
        assert abs(hat.mean().item()) < 4 * se
        spreads.append(hat.std().item())
    for spread in spreads:
        assert spread == pytest.approx(delta / D**0.5, rel=0.05)


def _guard(log_new, log_old, adv, info, **kw):
    cfg = ObjectiveConfig(name="grpo_guard", **kw)
    return OBJECTIVES.get("grpo_guard")(log_new, log_old, adv, torch.ones_like(log_new), info, cfg)


def test_step_weights_scale_each_steps_gradient_by_one_over_dt():
    B, T = 4, 3
    log_new = torch.zeros(B, T, requires_grad=True)
    dt = torch.tensor([0.05, 0.1, 0.2]).expand(B, T)
    info = {"std": torch.full((B, T), 0.3), "mean_sq_diff": torch.zeros(B, T), "output_scale": dt}
    loss, m = _guard(log_new, torch.zeros(B, T), torch.tensor([1.0, -1.0, 2.0, 0.5]), info, clip_range=0.2)
    loss.backward()
    g = log_new.grad  # d loss / d log_new = -A * s / |dt| / (B T) on the unclipped side (r_hat = 1)
    ratio = g[:, 0] / g[:, 2]
    torch.testing.assert_close(ratio, torch.full((B,), 4.0))  # (1 / 0.05) / (1 / 0.2)
    torch.testing.assert_close(g[:, 1], -torch.tensor([1.0, -1.0, 2.0, 0.5]) * 0.3 / 0.1 / (B * T))
    assert m["ratio/mean"] == pytest.approx(1.0) and m["ratio/clip_frac_pos"] == 0.0


def test_clip_fraction_is_split_by_advantage_sign():
    B, T = 2, 1
    info = {"std": torch.ones(B, T), "mean_sq_diff": torch.zeros(B, T), "output_scale": torch.ones(B, T)}
    log_new = torch.tensor([[0.5], [0.0]])  # sample 0 far outside the clip band
    _, m = _guard(log_new, torch.zeros(B, T), torch.tensor([1.0, -1.0]), info, clip_range=0.1)
    assert m["ratio/clip_frac_pos"] == 1.0 and m["ratio/clip_frac_neg"] == 0.0
    assert m["ratio/raw_mean"] == pytest.approx((1 + 0.5**0.5 * 0 + torch.e**0.5) / 2, rel=1e-5)


def test_guard_needs_the_flow_step_info():
    with pytest.raises(ValueError, match="grpo_guard needs the flow step"):
        _guard(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), {"std": torch.ones(2, 3)})


def test_flow_policy_provides_the_inputs_and_unchanged_weights_give_ratio_one():
    from conftest import get_dummy_pipeline

    from genrl.config import PolicyConfig
    from genrl.policies.flow import FlowPolicy

    for kind in ("flow_sde", "cps", "sage"):
        policy = FlowPolicy(
            PolicyConfig(
                model="unused",
                sde=kind,
                eta=0.7 if kind == "flow_sde" else 0.5,
                num_steps=4,
                cps_log_prob="gaussian" if kind == "cps" else "flow_grpo",  # read by cps only
            ),
            get_dummy_pipeline(),
        )
        prompts = ["a handwritten digit one", "a handwritten digit two"]
        traj = policy.rollout(prompts, [{}, {}], [0, 1], torch.Generator().manual_seed(0), [1, 2])
        T = traj.mask.shape[1]
        log_new, info = policy.log_prob(traj, slice(0, T))
        # the batched re-scoring forward matches the rollout's per-step forwards to float rounding
        assert (info["mean_sq_diff"] >= 0).all() and info["mean_sq_diff"].max() < 1e-12
        torch.testing.assert_close(info["output_scale"], traj.step_info["sigma"] - traj.step_info["sigma_next"])
        step_info = {**traj.step_info, **info}
        hat = normalized_log_ratio(log_new - traj.log_probs_old, step_info["std"], step_info["mean_sq_diff"])
        assert hat.abs().max() < 1e-6


def test_guard_logs_the_normalised_ratio_per_step():
    B, T = 3, 2
    info = {
        "std": torch.tensor([[0.5, 0.1]]).expand(B, T),
        "mean_sq_diff": torch.zeros(B, T),
        "output_scale": torch.ones(B, T),
        "step_index": torch.tensor([[4, 7]]).expand(B, T),
    }
    log_new = torch.tensor([[0.2, 0.2], [0.0, 0.0], [-0.2, -0.2]])
    _, m = _guard(log_new, torch.zeros(B, T), torch.ones(B), info, clip_range=0.1)
    # normalised log-ratio = s * log r: the step with s = 0.1 spreads 5x less than the one with 0.5
    assert m["ratio/norm_std_step_07"] < m["ratio/norm_std_step_04"] / 4
    assert {k for k in m if "_step_" in k} == {
        "ratio/norm_mean_step_04",
        "ratio/norm_std_step_04",
        "ratio/norm_mean_step_07",
        "ratio/norm_std_step_07",
    }
