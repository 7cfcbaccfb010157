"""Objectives of issue 3 (dapo, dr_grpo, gspo, sapo), loss aggregation, chunk weights, KL types."""

import math

import pytest
import torch

from genrl.config import ConfigError, ObjectiveConfig, TokenObjectiveConfig
from genrl.objectives.common import aggregate, chunk_weight, kl_per_action, objective_chunk_weight
from genrl.objectives.gspo import sequence_ratio
from genrl.registry import OBJECTIVES

NAMES = ("grpo", "dapo", "dr_grpo", "gspo", "sapo")

# ragged batch: 3 trained entries, 2 trained entries, an empty row
X = torch.tensor([[1.0, 2.0, 3.0, 40.0], [5.0, 6.0, 70.0, 80.0], [9.0, 9.0, 9.0, 9.0]])
M = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def _cfg(**kw):
    """The token policies' objective section (PPO's clip 0.2 by default, which sapo does not read)."""
    return TokenObjectiveConfig(**kw)


def _call(name, log_new, log_old, adv, mask=None, info=None, **kw):
    mask = torch.ones_like(log_new) if mask is None else mask
    return OBJECTIVES.get(name)(log_new, log_old, adv, mask, info or {}, _cfg(name=name, **kw))


def _grad(name, ratios, adv, **kw):
    """d loss / d logp_new for one action per sequence with the given ratios (old logp = 0)."""
    log_new = torch.log(torch.tensor(ratios, dtype=torch.float64))[:, None].requires_grad_(True)
    loss, m = _call(name, log_new, torch.zeros_like(log_new), torch.tensor(adv, dtype=torch.float64), **kw)
    loss.backward()
    return log_new.grad[:, 0], loss, m


# ----------------------------------------------------------------------------- registry


def test_all_objectives_registered_and_unknown_lists_them():
    assert set(NAMES) <= set(OBJECTIVES.names())
    with pytest.raises(ValueError) as e:
        OBJECTIVES.get("ppo_typo")
    for name in NAMES:
        assert name in str(e.value)


def test_config_fields_validated():
    cfg = ObjectiveConfig()
    assert (cfg.clip_range_high, cfg.loss_agg, cfg.max_len_norm, cfg.kl_type, cfg.tau_pos, cfg.tau_neg) == (
        None,
        "token-mean",
        0,
        "gaussian",
        1.0,
        1.05,
    )
    for bad, key in [
        ({"tau_neg": 0.0}, "tau_neg"),
        ({"tau_pos": -1.0}, "tau_pos"),
        ({"clip_range_high": 0.0}, "clip_range_high"),
        ({"max_len_norm": -1}, "max_len_norm"),
        ({"loss_agg": "seq-sum"}, "loss_agg"),
        ({"kl_type": "k2"}, "kl_type"),
    ]:
        with pytest.raises(ConfigError, match=key):
            ObjectiveConfig(**bad)


# ----------------------------------------------------------------------------- aggregation


def test_aggregation_modes_on_ragged_mask():
    assert aggregate(X, M, "token-mean").item() == pytest.approx((1 + 2 + 3 + 5 + 6) / 5)
    # per-sequence means 2 and 5.5; the empty row is left out
    assert aggregate(X, M, "seq-mean-token-mean").item() == pytest.approx((2.0 + 5.5) / 2)
    assert aggregate(X, M, "seq-mean-token-sum-norm").item() == pytest.approx(17 / (3 * 4))  # L = T = 4
    assert aggregate(X, M, "seq-mean-token-sum-norm", max_len_norm=10).item() == pytest.approx(17 / (3 * 10))
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(X, M, "mean")


@pytest.mark.parametrize(
    "loss_agg,max_len_norm", [("token-mean", 0), ("seq-mean-token-sum-norm", 0), ("seq-mean-token-sum-norm", 7)]
)
def test_chunk_weights_reproduce_full_loss(loss_agg, max_len_norm):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(4, 5, generator=g) > 0.4).double()
    full = aggregate(x, mask, loss_agg, max_len_norm)
    total = sum(
        aggregate(x[:, sl], mask[:, sl], loss_agg, max_len_norm)
        * chunk_weight(mask[:, sl], mask, loss_agg, max_len_norm=max_len_norm)
        for sl in (slice(0, 2), slice(2, 4), slice(4, 5))
    )
    assert total.item() == pytest.approx(full.item())


def test_seq_mean_token_mean_refuses_partial_chunks():
    with pytest.raises(ValueError, match="timestep_chunk=0"):
        chunk_weight(M[:, :2], M, "seq-mean-token-mean", max_len_norm=0)
    assert chunk_weight(M, M, "seq-mean-token-mean", max_len_norm=0).item() == 1.0


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "sapo"])
def test_objective_on_chunks_equals_full_batch(name):
    """The trainer's chunk loop with objective_chunk_weight gives the full-batch loss and gradient."""
    g = torch.Generator().manual_seed(1)
    log_old = torch.randn(3, 6, generator=g, dtype=torch.float64)
    log_new = (log_old + 0.3 * torch.randn(3, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv, mask = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64), M.new_ones(3, 6).double()
    mask[0, 4:] = 0
    mask[1, 2:] = 0
    cfg = _cfg(name=name, loss_agg="token-mean")
    fn = OBJECTIVES.get(name)
    full, _ = fn(log_new, log_old, adv, mask, {}, cfg)
    (g_full,) = torch.autograd.grad(full, log_new)
    chunked = sum(
        fn(log_new[:, sl], log_old[:, sl], adv, mask[:, sl], {}, cfg)[0]
        * objective_chunk_weight(fn, mask[:, sl], mask, cfg)
        for sl in (slice(0, 4), slice(4, 6))
    )
    (g_chunk,) = torch.autograd.grad(chunked, log_new)
    assert chunked.item() == pytest.approx(full.item())
    torch.testing.assert_close(g_chunk, g_full)


def test_gspo_refuses_partial_chunks_and_dr_grpo_forces_sum_norm():
    cfg = _cfg(loss_agg="token-mean", max_len_norm=0)
    with pytest.raises(ValueError, match="timestep_chunk=0"):
        objective_chunk_weight(OBJECTIVES.get("gspo"), M[:, :2], M, cfg)
    assert objective_chunk_weight(OBJECTIVES.get("dr_grpo"), M[:, :1], M, cfg).item() == pytest.approx(1 / 4)
    # dr_grpo: sum over trained actions / (B * L) even when loss_agg says token-mean
    log_new = torch.zeros(3, 4)
    loss, _ = _call(
        "dr_grpo", log_new, log_new, torch.tensor([1.0, 2.0, 3.0]), mask=M, loss_agg="token-mean", max_len_norm=8
    )
    assert loss.item() == pytest.approx(-(1.0 * 3 + 2.0 * 2) / (3 * 8))


# ----------------------------------------------------------------------------- KL


def test_k3_and_k1_kl():
    g = torch.Generator().manual_seed(2)
    new, ref = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    k3 = kl_per_action(new, {"ref_log_probs": ref}, "k3")
    assert (k3 >= 0).all()
    assert torch.equal(kl_per_action(ref, {"ref_log_probs": ref}, "k3"), torch.zeros(5, 7))
    assert torch.equal(kl_per_action(ref, {"ref_log_probs": ref}, "k1"), torch.zeros(5, 7))
    new, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    # ref/new = 0.5: k3 = 0.5 - ln 0.5 - 1; k1 = ln(0.5 / 0.25)
    assert kl_per_action(new, {"ref_log_probs": ref}, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_per_action(new, {"ref_log_probs": ref}, "k1").item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("name", NAMES)
def test_kl_term_added_with_beta_and_logged(name):
    log_p = torch.full((2, 3), -1.0)
    ref = torch.full((2, 3), -1.5)
    adv = torch.tensor([1.0, -1.0])
    expected = math.exp(-0.5) + 0.5 - 1  # k3 with ref - new = -0.5
    loss0, _ = _call(name, log_p, log_p, adv)
    loss1, m1 = _call(name, log_p, log_p, adv, info={"ref_log_probs": ref}, beta=0.5, kl_type="k3")
    assert m1["loss/kl"] == pytest.approx(expected, rel=1e-5)
    assert (loss1 - loss0).item() == pytest.approx(0.5 * expected, rel=1e-5)
    loss2, m2 = _call(name, log_p, log_p, adv, info={"ref_log_probs": ref}, beta=0.0, kl_type="k1")
    assert m2["loss/kl"] == pytest.approx(0.5) and loss2.item() == pytest.approx(loss0.item())
    with pytest.raises(ValueError, match="ref_log_probs"):  # token KL asked, only a flow KL given
        _call(name, log_p, log_p, adv, info={"kl": torch.zeros(2, 3)}, beta=0.5, kl_type="k3")
    with pytest.raises(ValueError, match="kl_type=k3"):  # flow KL asked, only token ref log-probs given
        _call(name, log_p, log_p, adv, info={"ref_log_probs": ref}, beta=0.5, kl_type="gaussian")


# ----------------------------------------------------------------------------- dapo


def test_dapo_clip_higher_is_asymmetric():
    kw = {"clip_range": 0.2, "clip_range_high": 0.28}
    grad, _, m = _grad("dapo", [1.25, 1.3, 0.85, 0.75], [1.0, 1.0, -1.0, -1.0], **kw)
    # A > 0: 1.25 < 1.28 still learns, 1.3 is clipped; A < 0: 0.85 learns, 0.75 < 0.8 is clipped
    assert grad[0] != 0 and grad[1] == 0 and grad[2] != 0 and grad[3] == 0
    assert grad[0].item() == pytest.approx(-1.25 / 4)  # -A r / B
    assert m["ratio/clip_frac"] == pytest.approx(0.5)
    # symmetric grpo clips 1.25 already, and refuses a different upper bound
    grad, _, _ = _grad("grpo", [1.25], [1.0])
    assert grad[0] == 0
    with pytest.raises(ValueError, match="dapo"):
        _grad("grpo", [1.25], [1.0], **kw)


# ----------------------------------------------------------------------------- gspo


def test_gspo_sequence_ratio_is_geometric_mean():
    ratios = torch.tensor([[1.1, 0.9, 1.3, 5.0], [0.8, 1.2, 7.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    s = sequence_ratio(ratios.log(), mask)
    torch.testing.assert_close(
        s, torch.tensor([(1.1 * 0.9 * 1.3) ** (1 / 3), (0.8 * 1.2) ** 0.5], dtype=torch.float64)
    )


def test_gspo_uniform_gradient_within_sequence_and_sequence_clip():
    log_old = torch.zeros(3, 4, dtype=torch.float64)
    log_new = torch.log(
        torch.tensor(
            [
                [1.02, 0.99, 0.985, 3.0],  # s ~ 0.998: inside the band
                [1.01, 0.995, 1.0, 1.0],  # s ~ 1.002: inside
                [1.2, 1.1, 1.0, 1.0],
            ],
            dtype=torch.float64,
        )
    ).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    loss, m = OBJECTIVES.get("gspo")(log_new, log_old, adv, mask, {}, _cfg(clip_range=0.01, clip_range_high=0.02))
    loss.backward()
    s = sequence_ratio(log_new.detach(), mask)
    g = log_new.grad
    # d loss / d logp_bt = -A_b s_b / |y_b| / B on each trained action; 0 on the others
    torch.testing.assert_close(g[0, :3], torch.full((3,), -1.0 * s[0].item() / 3 / 3, dtype=torch.float64))
    torch.testing.assert_close(g[1], torch.full((4,), 2.0 * s[1].item() / 4 / 3, dtype=torch.float64))
    assert g[0, 3] == 0
    assert torch.equal(g[2], torch.zeros(4, dtype=torch.float64))  # s ~ 1.149 > 1.02 with A > 0: clipped
    assert m["ratio/clip_frac"] == pytest.approx(1 / 3)  # sequence level
    assert m["ratio/seq_mean"] == pytest.approx(s.mean().item())


# ----------------------------------------------------------------------------- sapo


def test_sapo_gate_gradient():
    # on policy: gate slope 1, so d loss / d logp = -A (r = 1), for either temperature
    grad, loss, _ = _grad("sapo", [1.0, 1.0], [1.0, -1.0])
    torch.testing.assert_close(grad, torch.tensor([-1.0, 1.0], dtype=torch.float64) / 2)
    assert loss.item() == pytest.approx((-2.0 / 1.0 + 2.0 / 1.05) / 2)  # -f(1) A, f(1) = 2 / tau

    def weight(r, a):  # gate weight f'(r) = (d loss / d logp) / (-A r)
        g, _, _ = _grad("sapo", [r], [a])
        return (g / (-a * r)).item()

    for a in (1.0, -1.0):
        up = [weight(r, a) for r in (1.0, 1.3, 1.8, 2.5, 4.0)]
        down = [weight(r, a) for r in (1.0, 0.8, 0.5, 0.2, 0.05)]
        assert up[0] == pytest.approx(1.0) and down[0] == pytest.approx(1.0)
        assert all(x > y for x, y in zip(up, up[1:])) and all(x > y for x, y in zip(down, down[1:]))
        assert min(up + down) > 0.05  # soft: no zero-gradient region
    for r in (1.3, 1.8, 2.5, 0.5, 0.2):  # tau_neg = 1.05 > tau_pos = 1: negative advantages decay faster
        assert weight(r, -1.0) < weight(r, 1.0)
    # d loss / d logp = -A w(r) r carries the factor r: with A > 0 it still grows a little past
    # r = 1 (peak ~1.57 near r = 2) before the gate wins; far out it is small but never zero
    g_far, _, m = _grad("sapo", [5.0], [1.0])
    g_near, _, _ = _grad("sapo", [1.0], [1.0])
    assert 0 < abs(g_far.item()) < 0.5 * abs(g_near.item())
    assert m["ratio/clip_frac"] == 1.0  # gate weight < 0.5
    _, _, m = _grad("sapo", [1.5, 0.5], [1.0, -1.0])
    assert m["ratio/clip_frac"] == 0.0


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NAMES)
def test_flow_shaped_inputs(name):
    """B=4 trajectories x T=10 denoising steps, full mask, flow KL in step_info."""
    g = torch.Generator().manual_seed(3)
    log_old = -50 + torch.randn(4, 10, generator=g)  # Gaussian step log-densities are large
    log_new = (log_old + 1e-3 * torch.randn(4, 10, generator=g)).requires_grad_(True)
    info = {"kl": torch.rand(4, 10, generator=g)}
    loss, m = OBJECTIVES.get(name)(
        log_new,
        log_old,
        torch.randn(4, generator=g),
        torch.ones(4, 10),
        info,
        ObjectiveConfig(name=name, beta=0.1),  # the flow defaults: clip 1e-3, the closed-form (gaussian) KL
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_new.grad).all() and log_new.grad.abs().sum() > 0
    for k in ("loss/policy", "ratio/clip_frac", "ratio/mean", "ratio/std", "ratio/approx_kl", "loss/kl"):
        assert math.isfinite(m[k]), k


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_token_shaped_inputs(name, loss_agg):
    """Ragged response tokens with an empty row, k3 KL from reference log-probs."""
    g = torch.Generator().manual_seed(4)
    log_old = torch.log_softmax(torch.randn(3, 4, 9, generator=g), -1)[..., 0]
    log_new = (log_old + 0.2 * torch.randn(3, 4, generator=g)).requires_grad_(True)
    info = {"ref_log_probs": log_old + 0.1 * torch.randn(3, 4, generator=g)}
    loss, m = OBJECTIVES.get(name)(
        log_new,
        log_old,
        torch.tensor([1.0, -1.0, 0.5]),
        M,
        info,
        _cfg(name=name, loss_agg=loss_agg, max_len_norm=16, beta=0.04, kl_type="k3"),
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_new.grad).all() and m["loss/kl"] >= 0
    assert torch.equal(log_new.grad * (1 - M), torch.zeros(3, 4))  # untrained tokens get no gradient


def test_per_step_metrics_are_the_masked_moments_of_each_denoising_step():
    """``noise/std_step_XX`` and ``ratio/{mean,std}_step_XX``: each column's masked mean and (population)
    std, keyed by its step index, with the unmasked count as the weight; an all-masked column is left out."""
    from genrl.objectives.common import per_step_means, per_step_ratio_stats

    values = torch.tensor([[1.0, 5.0, 2.0], [3.0, 7.0, 4.0], [8.0, 9.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    steps = torch.tensor([[4, 5, 7]]).expand(3, 3)
    assert per_step_means(values, mask, steps, "noise/std") == [
        ({"noise/std_step_04": 2.0}, 2.0),
        ({"noise/std_step_07": 4.0}, 3.0),
    ]
    stats = per_step_ratio_stats(values.log(), mask, steps)
    assert [n for _, n in stats] == [2.0, 3.0]
    assert stats[0][0] == pytest.approx({"ratio/mean_step_04": 2.0, "ratio/std_step_04": 1.0})
    assert stats[1][0] == pytest.approx({"ratio/mean_step_07": 4.0, "ratio/std_step_07": (8 / 3) ** 0.5})
