"""genrl.sde: exact log-probs, the eta = 0 limit, and the closed-form KL."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from genrl import sde


def _schedule(n=10):
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(n)
    return sch, sch.sigmas.float()


@pytest.mark.parametrize("kind", ["flow_sde", "cps"])
@pytest.mark.parametrize("i", [0, 4, 8])
def test_log_prob_equals_torch_normal(kind, i):
    _, sig = _schedule()
    g = torch.Generator().manual_seed(i)
    x, v = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    out = sde.get_step(kind, "gaussian")(v, x, sig[i], sig[i + 1], 0.7, sig[1].item(), generator=g)
    std = out.std.view(-1, 1, 1, 1).expand_as(x)
    ref = torch.distributions.Normal(out.mean, std).log_prob(out.prev_sample)
    torch.testing.assert_close(out.log_prob, ref.mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-5)
    summed = sde.gaussian_log_prob(out.prev_sample, out.mean, out.std, reduce="sum")
    torch.testing.assert_close(summed, ref.sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-4)


def test_flow_sde_matches_paper_formula():
    """Mean and std written out independently from Flow-GRPO eq. 9-10."""
    _, sig = _schedule()
    x, v = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    for i in range(len(sig) - 1):
        s, sn, eta = sig[i].item(), sig[i + 1].item(), 0.7
        dt = sn - s
        std_t = eta * math.sqrt(s / (1 - (sig[1].item() if s == 1.0 else s)))
        mean = x * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
        out = sde.flow_sde_step(v, x, sig[i], sig[i + 1], eta, sig[1].item())
        torch.testing.assert_close(out.mean, mean)
        torch.testing.assert_close(out.std, torch.full((2,), std_t * math.sqrt(-dt)))


def test_cps_formula_and_final_step_is_deterministic():
    _, sig = _schedule()
    x, v = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    s, sn = sig[3].item(), sig[4].item()
    std = sn * math.sin(0.7 * math.pi / 2)
    mean = (x - s * v) * (1 - sn) + (x + (1 - s) * v) * math.sqrt(sn**2 - std**2)
    out = sde.cps_step(v, x, sig[3], sig[4], 0.7)
    torch.testing.assert_close(out.mean, mean)
    last = sde.cps_step(v, x, sig[-2], sig[-1], 0.7)
    assert (last.std == 0).all() and (last.log_prob == 0).all()
    torch.testing.assert_close(last.prev_sample, last.mean)


@pytest.mark.parametrize("kind", ["ode", "flow_sde", "cps", "sage"])
def test_eta_zero_equals_diffusers_scheduler_step(kind):
    sch, sig = _schedule()
    x = torch.randn(3, 2, 4, 4)
    ref = x.clone()
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(sch.timesteps):
        v = torch.sin(x * (i + 1))  # any velocity field
        out = sde.get_step(kind)(v, x, sig[i], sig[i + 1], 0.0, sig[1].item(), generator=g)
        ref = sch.step(v, t, x).prev_sample
        torch.testing.assert_close(out.prev_sample, ref, rtol=1e-5, atol=1e-6)
        # continue both from the scheduler's sample: rounding differences must not compound
        # through the (chaotic) velocity field, which made this test depend on the random draw
        x = ref


@pytest.mark.parametrize("kind", ["flow_sde", "cps", "sage"])
def test_rescoring_a_stored_transition_gives_the_same_log_prob(kind):
    _, sig = _schedule()
    x, v = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    fn = sde.get_step(kind)
    out = fn(v, x, sig[2], sig[3], 0.7, sig[1].item(), generator=torch.Generator().manual_seed(1))
    again = fn(v, x, sig[2], sig[3], 0.7, sig[1].item(), prev_sample=out.prev_sample)
    assert torch.equal(again.log_prob, out.log_prob)


def test_gaussian_kl_closed_form_and_zero_at_reference():
    mu_p, mu_q = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    std = torch.tensor([0.1, 0.5, 2.0])
    kl = sde.gaussian_kl(mu_p, mu_q, std)
    p = torch.distributions.Normal(mu_p, std.view(-1, 1, 1).expand_as(mu_p))
    q = torch.distributions.Normal(mu_q, std.view(-1, 1, 1).expand_as(mu_q))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(p, q).mean(dim=(1, 2)))
    assert torch.equal(sde.gaussian_kl(mu_p, mu_p, std), torch.zeros(3))


def test_unknown_sde_lists_valid_names():
    with pytest.raises(ValueError, match="flow_sde"):
        sde.get_step("sdee")


def test_sage_variance_is_the_integral_of_flow_grpos_diffusion_over_the_step():
    from genrl.sde import sage_step, sage_variance

    eta = 0.5
    for s, sn in ((0.9, 0.7), (0.5, 0.4), (0.2, 0.0), (0.99, 0.95)):
        u = torch.linspace(sn, s, 200001, dtype=torch.float64)
        integral = torch.trapezoid(eta**2 * u / (1 - u), u)
        got = sage_variance(torch.tensor([s], dtype=torch.float64), torch.tensor([sn], dtype=torch.float64), eta)
        assert got.item() == pytest.approx(integral.item(), rel=1e-6)
    # finite at sigma = 1 (the log term uses min(sigma, 1 - 3e-3))
    assert torch.isfinite(sage_variance(torch.tensor([1.0]), torch.tensor([0.9]), eta)).all()
    # small steps agree with Flow-GRPO's flow_sde; eta = 0 is the Euler step
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    a = sage_step(v, x, 0.5, 0.499, eta)
    b = sde.flow_sde_step(v, x, 0.5, 0.499, eta, 0.9)
    torch.testing.assert_close(a.std, b.std, rtol=2e-3, atol=0)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-5, atol=1e-6)
    e = sage_step(v, x, 0.5, 0.3, 0.0)
    torch.testing.assert_close(e.mean, x + (0.3 - 0.5) * v)
    # a stored transition re-scores to the same log-prob
    out = sage_step(v, x, 0.8, 0.6, eta, generator=g)
    torch.testing.assert_close(sage_step(v, x, 0.8, 0.6, eta, prev_sample=out.prev_sample).log_prob, out.log_prob)


def test_sage_equaliser_makes_per_step_logp_gradients_in_v_equal():
    """||d log p / d v|| differs across noise levels; times the equaliser's scale it is the same
    at every step (in expectation over the noise: checked with many samples)."""
    from genrl.sde import sage_gradient_scale, sage_step

    eta, _, sig = 0.5, *_schedule()
    steps = list(range(1, 8))
    s, sn = sig[steps].double(), sig[[i + 1 for i in steps]].double()
    scale = sage_gradient_scale(s, sn, eta)
    g = torch.Generator().manual_seed(0)
    norms = []
    for k, i in enumerate(steps):
        x = torch.randn(2000, 64, dtype=torch.float64, generator=g)
        v = torch.randn(2000, 64, dtype=torch.float64, generator=g).requires_grad_(True)
        out = sage_step(v.detach(), x, s[k], sn[k], eta, generator=g)  # sample x', then re-score it
        lp = sage_step(v, x, s[k], sn[k], eta, prev_sample=out.prev_sample, reduce="sum").log_prob
        (grad,) = torch.autograd.grad(lp.sum(), v)
        norms.append(grad.pow(2).sum(1).mean().sqrt().item() * scale[k].item())  # RMS over samples
    raw = [n / scale[k].item() for k, n in enumerate(norms)]
    assert max(raw) / min(raw) > 2  # unequal without the equaliser
    assert max(norms) / min(norms) == pytest.approx(1.0, abs=0.03)


def test_cps_flow_grpo_surrogate_log_prob():
    """Flow-GRPO's CPS surrogate: -(x' - mean)^2 averaged, the Gaussian's std factor dropped;
    re-scoring the stored sample gives it back, and the final (std 0) step carries 0."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    step = sde.get_step("cps", "flow_grpo")
    out = step(v, x, torch.tensor(0.6), torch.tensor(0.4), 0.8, generator=g)
    torch.testing.assert_close(out.log_prob, -((out.prev_sample - out.mean) ** 2).mean(dim=(1, 2, 3)))
    exact = sde.get_step("cps", "gaussian")(
        v, x, torch.tensor(0.6), torch.tensor(0.4), 0.8, prev_sample=out.prev_sample
    )
    torch.testing.assert_close(exact.mean, out.mean)
    assert not torch.allclose(exact.log_prob, out.log_prob)
    again = step(v, x, torch.tensor(0.6), torch.tensor(0.4), 0.8, prev_sample=out.prev_sample)
    assert torch.equal(again.log_prob, out.log_prob)
    last = step(v, x, torch.tensor(0.1), torch.tensor(0.0), 0.8, generator=g)
    assert torch.equal(last.log_prob, torch.zeros(3))
    with pytest.raises(ValueError, match="flow_grpo"):
        sde.get_step("cps", "other")


def test_one_default_for_the_cps_log_prob():
    from genrl.config import PolicyConfig

    assert PolicyConfig().cps_log_prob == sde.DEFAULT_CPS_LOG_PROB == "flow_grpo"
    x, v = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    out = sde.cps_step(v, x, torch.tensor(0.6), torch.tensor(0.4), 0.7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.log_prob, -((out.prev_sample - out.mean) ** 2).mean(dim=(1, 2, 3)))
