"""MMR1 Variance-Aware Sampling (arXiv 2509.21268): scores, draw, diversity, state, split."""

import io
import math
from collections import Counter

import pytest
import torch

from genrl.samplers import GroupSampler, VarianceAwareSampler, distinct_n, self_bleu_diversity


def _score_all(s, pass_counts, n=16, step=None):
    """Hand every prompt ``n`` rollouts, ``pass_counts[i]`` of them passing, and re-score."""
    idx, corr = [], []
    for i, c in enumerate(pass_counts):
        idx += [i] * n
        corr += [True] * c + [False] * (n - c)
    s.update(idx, torch.tensor(corr), step=s.update_every - 1 if step is None else step)


# ---- diversity ------------------------------------------------------------------------


def test_distinct_n_cases():
    assert distinct_n(["a b c d", "a b c d", "a b c d"]) == 0.0
    assert distinct_n(["a b c", "d e f", "g h i"]) == 1.0
    # bigrams {ab, bc, cd} and {ab, bx, xy}: union 5, max 3, sum 6 -> (5-3)/(6-3)
    assert distinct_n(["a b c d", "a b x y"]) == pytest.approx(2 / 3)
    assert distinct_n(["a b c d", "a b x y"], n=1) == pytest.approx((6 - 4) / (8 - 4))
    # edge cases: empty list, single text, empty strings, texts shorter than n
    assert distinct_n([]) == 0.0
    assert distinct_n(["a b c"]) == 0.0
    assert distinct_n(["", ""]) == 0.0
    assert distinct_n(["a", "b"], n=2) == 0.0
    assert distinct_n(["a b c", ""]) == 0.0
    # classic pooled ratio (what MMR1's calculate_distinct_n computes)
    assert distinct_n(["a b c", "a b c"], normalise=False) == pytest.approx(2 / 4)
    assert distinct_n([], normalise=False) == 0.0


def test_self_bleu_diversity_cases():
    assert self_bleu_diversity(["the cat sat on the mat"] * 4) == 0.0
    assert self_bleu_diversity(["a b c d e", "f g h i j", "k l m n o"]) > 0.9
    near = self_bleu_diversity(["the cat sat on the mat", "the cat sat on a mat"])
    assert 0.0 < near < 0.9
    assert self_bleu_diversity([]) == 0.0
    assert self_bleu_diversity(["just one"]) == 0.0
    assert self_bleu_diversity(["", "", ""]) == 0.0
    assert self_bleu_diversity(["a", "a"]) == 0.0  # shorter than n: orders 1..len only
    for texts in (["", "x y"], ["a b", "a c", "d"], ["x"] * 2 + ["y z w v u"]):
        assert 0.0 <= self_bleu_diversity(texts) <= 1.0
    # one-token answers compare by their token (NLTK's rules would give 0.86: see samplers._bleu);
    # hand-computed: BLEU 1, 1, 0.1 (the smoothed unmatched unigram) -> 1 - 2.1 / 3
    assert self_bleu_diversity(["42", "42", "41"], 3) == pytest.approx(0.3)
    # from three tokens on, NLTK's sentence_bleu with method1, hand-computed: BLEU-3 of each against
    # the other two = (5/6 * 3/5 * 2/4) ** (1/3), (6/6 * 3/5 * 2/4) ** (1/3) and, brevity penalty
    # exp(1 - 6/5) times (1/5 * 0.1/4 * 0.1/3) ** (1/3)
    texts = ["the cat sat on the mat", "the cat sat on a mat", "a dog ran far away"]
    bleu = [0.25 ** (1 / 3), 0.3 ** (1 / 3), math.exp(-0.2) * (0.2 * 0.025 * 0.1 / 3) ** (1 / 3)]
    assert self_bleu_diversity(texts, 3) == pytest.approx(1 - sum(bleu) / 3)


# ---- scores ---------------------------------------------------------------------------


def test_ovs_tds_vps_and_minmax_by_hand():
    s = VarianceAwareSampler(5, 2, 4, a=0.8, b=0.2, update_every=1, diversity="distinct-2")
    idx = [0] * 4 + [1] * 4 + [2] * 4
    rewards = torch.tensor(
        [
            0.9,
            0.7,
            0.2,
            0.5,  # > 0.5 passes: p = 0.5
            1.0,
            0.0,
            0.0,
            0.0,  # p = 0.25
            1.0,
            1.0,
            1.0,
            1.0,
        ]
    )  # p = 1
    texts = ["x y z"] * 4 + ["a b", "c d", "e f", "g h"] + ["p q r", "p q s", "t q r", "p q r"]
    assert s.update(idx, rewards, texts, step=0)
    sc = s.scores
    ovs = torch.tensor([0.25, 0.25 * 0.75, 0.0], dtype=torch.float64)
    tds = torch.tensor([0.0, 1.0, distinct_n(texts[8:])], dtype=torch.float64)
    assert torch.allclose(sc["pass_rate"][:3], torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64))
    assert torch.allclose(sc["ovs"][:3], ovs) and torch.allclose(sc["tds"][:3], tds)
    assert torch.allclose(sc["vps"][:3], 0.8 * ovs + 0.2 * tds)
    # never-scored prompts 3, 4 keep the optimistic prior OVS = 0.25, TDS = 1
    assert sc["scored"].tolist() == [True, True, True, False, False]
    assert sc["vps"][3] == pytest.approx(0.8 * 0.25 + 0.2 * 1.0)
    v = sc["vps"]
    assert torch.allclose(s.weights, (v - v.min()) / (v.max() - v.min()))
    assert s.weights.min() == 0.0 and s.weights.max() == 1.0
    m = s.metrics()
    assert m["vas/frac_informative"] == pytest.approx(2 / 3)
    assert m["vas/mean_ovs"] == pytest.approx(float(ovs.mean()))
    assert m["vas/frac_scored"] == pytest.approx(3 / 5)
    q = s.weights / s.weights.sum()
    assert m["vas/weight_entropy"] == pytest.approx(float(-(q[q > 0] * q[q > 0].log()).sum()))


def test_correct_tensor_and_pooling_within_window():
    s = VarianceAwareSampler(3, 1, 2, update_every=2, b=0.0, a=1.0)
    s.update([0, 0], torch.tensor([True, True]), step=0)
    s.update([0, 0], torch.tensor([False, False]), step=1)  # pooled with step 0: p = 0.5
    assert s.scores["pass_rate"][0] == 0.5 and s.scores["ovs"][0] == 0.25


def test_all_equal_scores_give_uniform_weights():
    s = VarianceAwareSampler(6, 2, 2)
    assert torch.equal(s.weights, torch.ones(6, dtype=torch.float64))
    _score_all(s, [8] * 6)
    assert torch.equal(s.weights, torch.ones(6, dtype=torch.float64))


def test_momentum():
    s = VarianceAwareSampler(4, 2, 4, a=1.0, b=0.0, momentum=0.5, update_every=1)
    s.update([0] * 4, torch.tensor([1, 1, 0, 0]), step=0)  # first observation replaces the prior
    assert s.scores["ovs"][0] == 0.25
    s.update([0] * 4, torch.tensor([0, 0, 0, 0]), step=1)
    assert s.scores["ovs"][0] == pytest.approx(0.5 * 0.25 + 0.5 * 0.0)
    s.update([0] * 4, torch.tensor([1, 0, 0, 0]), step=2)
    assert s.scores["ovs"][0] == pytest.approx(0.5 * 0.125 + 0.5 * 0.1875)
    plain = VarianceAwareSampler(4, 2, 4, a=1.0, b=0.0, update_every=1)  # default momentum 0
    plain.update([0] * 4, torch.tensor([1, 1, 0, 0]), step=0)
    plain.update([0] * 4, torch.tensor([0, 0, 0, 0]), step=1)
    assert plain.scores["ovs"][0] == 0.0


def test_rescore_only_every_update_every_steps():
    s = VarianceAwareSampler(8, 2, 4, update_every=3)
    history = []
    for step in range(9):
        before = s.weights
        did = s.update([step % 8] * 4, torch.tensor([1, 0, 0, 0]), ["a b", "c d", "a b", "e f"], step=step)
        history.append(did)
        if not did:
            assert torch.equal(s.weights, before) and s.num_rescores == sum(history)
        if step == 2:  # the observations of steps 0-2 were pooled into this re-score
            assert s.scores["scored"].tolist() == [True] * 3 + [False] * 5
    assert history == [False, False, True] * 3
    assert s.num_rescores == 3 and s.metrics()["vas/num_rescores"] == 3.0


# ---- the draw -------------------------------------------------------------------------


def test_weighted_share_prefers_high_weight_prompts():
    N, k, g = 40, 8, 2
    s = VarianceAwareSampler(N, k, g, lam=0.5, a=1.0, b=0.0)
    # 16 rollouts: p = 8/16 -> OVS 0.25 (w = 1); p = 1/16 -> OVS 15/256 (w = 0.234); p = 0 -> w = 0
    _score_all(s, [8] * 10 + [1] * 10 + [0] * 20)
    w = s.weights
    assert torch.allclose(w[:10], torch.ones(10, dtype=torch.float64)) and (w[20:] == 0).all()
    high, low = Counter(), Counter()
    for step in range(2000):
        d = s.draw(step)
        assert len(set(d["prompts"])) == k
        assert sum(d["weighted"]) == math.floor(0.5 * k) == s.n_weighted
        for p, fw in zip(d["prompts"], d["weighted"]):
            if fw:
                assert w[p] > 0  # enough positive weights: zero-weight prompts never drawn
                (high if p < 10 else low)[p] += 1
    n_high, n_low = sum(high.values()), sum(low.values())
    assert n_high + n_low == 2000 * 4
    assert n_high > 2.5 * n_low  # weights 1 vs 0.234, 4 of 20 drawn without replacement


def test_uniform_share_is_uniform_and_floor():
    N, k = 30, 7  # floor(0.5 * 7) = 3
    s = VarianceAwareSampler(N, k, 1, lam=0.5, a=1.0, b=0.0)
    _score_all(s, [8] * 3 + [0] * (N - 3))  # exactly 3 positive weights: the weighted part is them
    counts = Counter()
    steps = 3000
    for step in range(steps):
        d = s.draw(step)
        assert sorted(p for p, fw in zip(d["prompts"], d["weighted"]) if fw) == [0, 1, 2]
        counts.update(p for p, fw in zip(d["prompts"], d["weighted"]) if not fw)
    assert set(counts) == set(range(3, N))
    expected = steps * (k - 3) / (N - 3)
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in range(3, N))
    assert chi2 < 60  # 26 degrees of freedom: p ~ 1e-4 at 60


def test_lam_extremes_and_too_few_positive_weights():
    s = VarianceAwareSampler(10, 4, 1, lam=1.0, a=1.0, b=0.0)
    _score_all(s, [8, 8] + [0] * 8)  # only 2 positive weights for 4 weighted slots
    for step in range(50):
        d = s.draw(step)
        assert all(d["weighted"]) and {0, 1} <= set(d["prompts"]) and len(set(d["prompts"])) == 4
    s0 = VarianceAwareSampler(10, 4, 1, lam=0.0)
    assert not any(s0.draw(3)["weighted"])
    assert VarianceAwareSampler(10, 5, 1, lam=0.3).n_weighted == 1
    assert VarianceAwareSampler(10, 10, 1, lam=0.3).n_weighted == 3


# ---- determinism, checkpoints, distributed split --------------------------------------


def _drive(s, steps, start=0):
    """Sample and feed back deterministic fake rollouts; returns the draws."""
    out = []
    for step in range(start, start + steps):
        idx, gid = s.sample(step)
        out.append((idx, gid, s.last_draw["weighted"]))
        rew = torch.tensor([((p * 7 + j * 3 + step) % 5) / 4 for j, p in enumerate(idx)])
        texts = [f"t{p} r{(j + step) % 3} x" for j, p in enumerate(idx)]
        s.update(idx, rew, texts, step=step)
    return out


def test_determinism_and_state_dict_round_trip():
    kw = dict(
        num_prompts=25, prompts_per_step=5, group_size=4, seed=11, momentum=0.3, update_every=3, diversity="self-bleu"
    )
    a, b = VarianceAwareSampler(**kw), VarianceAwareSampler(**kw)
    assert _drive(a, 7) == _drive(b, 7)  # same (seed, step, state) -> same draws
    assert a.draw(7) == b.draw(7) and a.draw(7) != a.draw(8)
    # checkpoint mid-window (pending observations of step 6 not yet re-scored)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = VarianceAwareSampler(**kw)
    c.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in a.scores.items():
        assert torch.equal(v.nan_to_num(-1), c.scores[k].nan_to_num(-1))
    assert _drive(a, 10, start=7) == _drive(c, 10, start=7)
    assert torch.equal(a.weights, c.weights) and a.metrics() == c.metrics()
    with pytest.raises(ValueError):
        VarianceAwareSampler(24, 5, 4).load_state_dict(a.state_dict())


@pytest.mark.parametrize("world", [1, 2, 3, 6])
def test_distributed_split_concatenates_to_global_batch(world):
    N, k, g = 30, 6, 3
    ref = VarianceAwareSampler(N, k, g, seed=5)
    _score_all(ref, [i % 9 for i in range(N)], step=3)
    state = ref.state_dict()
    for step in range(5):
        shares = []
        for r in range(world):
            s = VarianceAwareSampler(N, k, g, seed=5, num_processes=world, process_index=r)
            s.load_state_dict(state)
            shares.append(s.sample(step))
            assert len(shares[-1][0]) == k * g // world
        idx = sum((sh[0] for sh in shares), [])
        gid = sum((sh[1] for sh in shares), [])
        d = ref.draw(step)
        assert idx == [p for p in d["prompts"] for _ in range(g)]
        assert gid == [i for i in range(k) for _ in range(g)]  # every group complete, contiguous


def test_group_sampler_unchanged_and_shared_split():
    # GroupSampler's draw stays randperm(seed * 1_000_003 + step)[:k], split as before
    s = GroupSampler(20, 4, 6, seed=3, num_processes=3, process_index=1)
    gen = torch.Generator().manual_seed(3 * 1_000_003 + 5)
    chosen = torch.randperm(20, generator=gen)[:4]
    assert s.sample(5) == (
        chosen.repeat_interleave(6)[8:16].tolist(),
        torch.arange(4).repeat_interleave(6)[8:16].tolist(),
    )
    assert isinstance(VarianceAwareSampler(20, 4, 6), GroupSampler)
    with pytest.raises(ValueError):
        VarianceAwareSampler(20, 4, 5, num_processes=3)
    with pytest.raises(ValueError):
        VarianceAwareSampler(3, 4, 1)
