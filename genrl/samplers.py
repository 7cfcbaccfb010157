"""Prompt samplers.

``GroupSampler`` (Flow-GRPO's k-repeat sampler): each step draws ``prompts_per_step``
distinct prompts and repeats each ``group_size`` times, so every group of one prompt is
complete in the batch gathered over all processes; each process takes a contiguous,
equal share of that global batch. The draw is a pure function of ``(seed, step)``, so
every process agrees on it without communication and a resumed run continues exactly.

``VarianceAwareSampler`` (MMR1's Variance-Aware Sampling, arXiv 2509.21268): the same
contract, but part of each step's prompts is drawn in proportion to a per-prompt
Variance Promotion Score estimated from the rollouts the trainer hands back; see its
docstring. ``distinct_n`` and ``self_bleu_diversity`` are the trajectory-diversity
measures it can use.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Optional, Sequence

import torch

from genrl.seeding import derive_seed


def _step_generator(seed: int, step: int, attempt: int = 0) -> torch.Generator:
    """The CPU generator of one step's draw: a pure function of ``(seed, step, attempt)``; attempt
    ``r > 0`` is the ``r``-th extra round of dynamic sampling."""
    base = seed * 1_000_003 + step
    return torch.Generator().manual_seed(base if attempt == 0 else derive_seed(base, attempt))


class GroupSampler:
    def __init__(
        self,
        num_prompts: int,
        prompts_per_step: int,
        group_size: int,
        seed: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
    ):
        if prompts_per_step > num_prompts:
            raise ValueError(
                f"rollout.prompts_per_step={prompts_per_step} exceeds the {num_prompts} prompts available"
            )
        total = prompts_per_step * group_size
        if total % num_processes:
            raise ValueError(
                f"prompts_per_step * group_size = {total} must be divisible by the {num_processes} processes"
            )
        self.num_prompts, self.k, self.g = num_prompts, prompts_per_step, group_size
        self.seed, self.world, self.rank = seed, num_processes, process_index

    @property
    def global_batch(self) -> int:
        return self.k * self.g

    def _draw(self, step: int, attempt: int = 0) -> torch.Tensor:
        """The ``k`` distinct prompts of ``step``'s global batch, in group order; [k]."""
        gen = _step_generator(self.seed, step, attempt)
        return torch.randperm(self.num_prompts, generator=gen)[: self.k]

    def _share(self, chosen: torch.Tensor) -> tuple[list[int], list[int]]:
        """Repeat each drawn prompt ``g`` times (groups contiguous) and cut this process's
        contiguous equal share of the ``k * g`` global batch."""
        prompt_idx = chosen.repeat_interleave(self.g)  # [k * g], groups contiguous
        group_ids = torch.arange(self.k).repeat_interleave(self.g)
        per_rank = self.global_batch // self.world
        sl = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        return prompt_idx[sl].tolist(), group_ids[sl].tolist()

    def sample(self, step: int, attempt: int = 0) -> tuple[list[int], list[int]]:
        """Prompt indices and group ids of this process's share at ``step``; each [B_local].

        Group id = position of the prompt in this step's draw (0..k-1), shared by all ranks.
        ``attempt > 0``: a further, independent draw of the same step (dynamic sampling's rounds).
        """
        return self._share(self._draw(step, attempt))


# --------------------------------------------------------------------------------------
# Trajectory diversity (MMR1 §3.1 "TDS": "inverse self-BLEU or distinct-n")
# --------------------------------------------------------------------------------------


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int = 2, normalise: bool = True) -> float:
    """Cross-response distinct-n of a group of responses, in [0, 1]; whitespace tokens.

    ``normalise=True`` (default): ``(U - max_i U_i) / (sum_i U_i - max_i U_i)``, where
    ``U_i`` is the number of distinct n-grams of response ``i`` and ``U`` that of all
    responses pooled. ``U`` lies between ``max_i U_i`` (every response's n-grams already
    occur in the richest one) and ``sum_i U_i`` (no n-gram shared between responses), so
    this is 0 for identical responses and 1 for responses sharing no n-gram. Repetition
    inside one response is not counted: it is not diversity *across* rollouts.

    ``normalise=False``: the classic pooled ratio (Li et al. 2016; what MMR1's
    ``calculate_distinct_n`` computes) ``#distinct n-grams / #n-grams`` over all
    responses together. It does not reach 0 for identical responses (it is
    ``distinct(text) / N`` for N copies), hence the normalised default.

    Edge cases: an empty list, a single response, or fewer than two responses with at
    least ``n`` tokens give 0.0 (normalised: nothing to differ from); responses shorter
    than ``n`` tokens (including empty strings) contribute no n-grams; with no n-grams at
    all the pooled ratio is 0.0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [_ngrams(t.split(), n) for t in texts]
    if not normalise:
        total = sum(len(g) for g in grams)
        return len({x for g in grams for x in g}) / total if total else 0.0
    per = [set(g) for g in grams]
    if len(per) < 2:
        return 0.0
    union = len(set().union(*per))
    biggest, summed = max(len(s) for s in per), sum(len(s) for s in per)
    if summed == biggest:  # at most one response has any n-gram
        return 0.0
    return (union - biggest) / (summed - biggest)


def _bleu(hyp: list[str], refs: list[list[str]], max_n: int, eps: float = 0.1) -> float:
    """Sentence BLEU of ``hyp`` against ``refs`` with uniform weights over the orders
    1..min(max_n, len(hyp)), clipped n-gram precision, brevity penalty against the
    closest reference length, and a zero clipped count replaced by ``eps`` (the "add
    epsilon to the numerator" smoothing, NLTK's ``method1``). An empty hypothesis scores
    1 if some reference is empty too, else 0.

    Not NLTK's ``sentence_bleu`` for hypotheses shorter than ``max_n`` tokens, or with no matching
    token: NLTK keeps every order (an order with no n-gram is smoothed to ``eps``) and scores 0 when
    no unigram matches; here the orders stop at the hypothesis' length and a zero unigram match is
    smoothed too, so one-token answers compare by their token. For ``["42", "42", "41"]`` and
    ``max_n = 3`` the diversity is 0.30 here and 0.86 under NLTK's rules (two identical answers of
    three look diverse there); from three tokens on the two agree."""
    if not hyp:
        return 1.0 if any(len(r) == 0 for r in refs) else 0.0
    orders = range(1, min(max_n, len(hyp)) + 1)
    log_p = 0.0
    for n in orders:
        h = Counter(_ngrams(hyp, n))
        best: Counter = Counter()
        for r in refs:
            best |= Counter(_ngrams(r, n))  # max count of each n-gram over the references
        clipped = sum(min(c, best[g]) for g, c in h.items())
        log_p += math.log((clipped if clipped > 0 else eps) / sum(h.values()))
    log_p /= len(orders)
    c = len(hyp)
    r = min((len(x) for x in refs), key=lambda L: (abs(L - c), L))
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(log_p)


def self_bleu_diversity(texts: list[str], n: int = 4) -> float:
    """``1 - mean_i BLEU(text_i | all other texts)`` in [0, 1]; whitespace tokens.

    BLEU as in ``_bleu`` (uniform weights over 1..n-grams, epsilon smoothing, brevity
    penalty). Identical responses give 0; responses sharing no token give close to 1
    (the smoothed precisions are ``0.1 / #n-grams``). Edge cases: an empty list or a
    single response gives 0.0 (no pair to compare, the same convention as MMR1's
    ``calculate_self_bleu_n``); an empty string against other empty strings counts as
    identical, against non-empty ones as sharing nothing.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    toks = [t.split() for t in texts]
    if len(toks) < 2:
        return 0.0
    sims = [_bleu(h, toks[:i] + toks[i + 1 :], n) for i, h in enumerate(toks)]
    return min(1.0, max(0.0, 1.0 - sum(sims) / len(sims)))


def diversity_fn(name: str):
    """``"distinct-N"`` -> normalised distinct-N; ``"self-bleu"`` -> 1 - self-BLEU-4;
    ``"self-bleu-N"`` -> 1 - self-BLEU over 1..N-grams (MMR1's recipe uses N = 3)."""
    m = re.fullmatch(r"distinct-(\d+)", name)
    if m:
        k = int(m.group(1))
        return lambda texts: distinct_n(texts, k)
    m = re.fullmatch(r"self-bleu(?:-(\d+))?", name)
    if m:
        k = int(m.group(1) or 4)
        return lambda texts: self_bleu_diversity(texts, k)
    raise ValueError(f"unknown diversity {name!r}: use 'distinct-N', 'self-bleu' or 'self-bleu-N'")


# --------------------------------------------------------------------------------------
# MMR1 Variance-Aware Sampling
# --------------------------------------------------------------------------------------


class VarianceAwareSampler(GroupSampler):
    """MMR1 Variance-Aware Sampling (VAS; Leng et al., arXiv 2509.21268, §3).

    Scores (§3.1), per prompt ``x`` with pass rate ``P(x)`` over its rollouts:
    ``OVS = P (1 - P)`` (Bernoulli variance of correctness), ``TDS`` = diversity of the
    responses (``diversity``: normalised distinct-n or 1 - self-BLEU, see the functions
    above), ``VPS = a * OVS + b * TDS``. Weights are the min-max normalised VPS over all
    prompts (as in the authors' ``ray_trainer._compute_curriculum_weights``); when every
    VPS is equal the weights are all 1 (uniform) instead of MMR1's all-0.

    Draw (§3.2, Algorithm 1 lines 12-15): of the ``k = prompts_per_step`` prompts of a
    step, ``floor(lam * k)`` are drawn in proportion to the weights and the remaining
    ``k - floor(lam * k)`` uniformly. ``replacement=True`` follows the paper and the release
    (``ray_trainer.py``: ``MixedCurriculumSampler(..., replacement=True)`` over
    ``WeightedRandomSampler``): the weighted part with replacement, the uniform part drawn
    independently, so a prompt can appear in several groups of a step. ``replacement=False``
    (the default) draws both without replacement and the uniform part from the prompts the
    weighted part left, so the ``k`` prompts stay distinct and each forms one complete GRPO group. The weighted
    part is an exact successive weighted draw without replacement (Efraimidis-Spirakis
    keys ``Exp(1) / w``); prompts of weight 0 enter it only if fewer than ``floor(lam*k)``
    prompts have positive weight, and then uniformly. The ``k`` prompts are shuffled
    together so that every process's share mixes both parts; ``draw(step)`` /
    ``last_draw`` say which came from the weighted part. The draw is a pure function of
    ``(seed, step, weights)``; ``sample(step)`` has ``GroupSampler.sample``'s contract
    and distributed split.

    Scoring. Deviation: the paper (Algorithm 1 lines 2-5 and 7-11) rolls out N responses
    for *every* prompt before training and again every ``T_update`` steps; here the
    scores come from the rollouts the trainer already made, handed to ``update``.
    Observations accumulate per prompt (pass counts pooled, TDS averaged over the groups
    seen) and are turned into scores only by a re-score, which ``update`` runs when
    ``(step + 1) % update_every == 0`` (so the weights change only between steps
    ``update_every * j - 1`` and ``update_every * j``); ``rescore()`` forces one (e.g.
    after an initial scoring sweep). A re-score sets, for each prompt observed since the
    last one, ``OVS <- m * OVS_old + (1 - m) * OVS_new`` and the same for TDS, with
    ``m = momentum`` (the authors' ``_update_curriculum_weights`` mixes
    ``m * old + (1 - m) * new`` on the normalised weights of the full sweep; we mix the
    raw scores, because only the observed prompts change and a min-max rescaling of the
    rest would otherwise leak into the average). A prompt's first observation replaces
    its prior outright. Prompts not observed keep their (stale) scores.

    Never-scored prompts: the paper scores every prompt before training, so it has no
    such prompts. We give them the optimistic prior ``OVS = init_ovs = 0.25`` (the
    maximum, P = 0.5) and ``TDS = init_tds = 1.0`` (the maximum), i.e. the largest VPS,
    so the weighted part visits unscored prompts first: a lazy version of the initial
    sweep. Without ``texts`` TDS is not measured and stays at its prior / last value.

    Defaults, from the paper and the authors' code (github.com/LengSicong/MMR1):
    ``lam = 0.5`` (App. hyper-parameter table "VAS mixture ratio 0.5"; ``examples/
    mmr1.yaml`` ``curriculum_mixture_ratio: 0.5``; §6.4 Table 4 finds 0.2-0.8 similar);
    ``a, b = 0.8, 0.2`` (§6.4 Table 4 best; App. table "learnability (OVS) 0.8,
    self_bleu_123 (TDS) 0.2"; these defaults follow the **paper**: the **release** scores
    learnability only, ``examples/mmr1.yaml`` ``curriculum_metrics: [learnability]``,
    ``curriculum_metric_weights: [1.0]``, i.e. ``a, b = 1, 0``, and draws with replacement;
    ``configs/qwen25vl/mmr1_sapo.yaml`` follows the release); ``momentum = 0.0`` (``examples/mmr1.yaml``
    ``curriculum_momentum: 0.0``, i.e. new scores replace old; ``verl/trainer/config.py``
    defaults to 1.0 with the comment "1 means no momentum", but under the code's formula
    1.0 would freeze the weights); ``update_every = 4`` (``examples/mmr1.yaml``
    ``curriculum_update_freq: 4``; the paper's App. table lists 56 steps for the final
    runs, while §6.4 / Table 4 calls 14-35 a good balance, 4-7 more adaptive but costly
    (a full re-roll-out) and 56 worse (stale scores); our re-score reuses the training
    rollouts and costs nothing extra, so the short interval). MMR1's TDS is self-BLEU over
    1-3-grams (``self_bleu_123``); our default ``diversity = "distinct-2"`` (the
    paper's other TDS measure) is cheaper, and ``"self-bleu-3"`` matches theirs. Note their code adds the raw
    self-BLEU (a similarity) into VPS, whereas §3.1 defines TDS as a diversity ("higher
    value reflects greater diversity"); we follow the paper (1 - self-BLEU).

    Passing: a rollout passes if ``rewards_or_correct`` is a bool tensor and True, or
    otherwise if its reward ``> pass_threshold`` (0.5; the paper's verifier is 0/1).

    Distributed use: ``update`` must get the *global* batch, i.e. the caller gathers the
    prompt indices, rewards and (if used) texts of all processes first, in the same
    order on every process. The sampler itself never communicates, so every process
    holds identical state and draws identical batches.
    """

    def __init__(
        self,
        *args,
        lam: float = 0.5,
        a: float = 0.8,
        b: float = 0.2,
        momentum: float = 0.0,
        update_every: int = 4,
        diversity: str = "distinct-2",
        pass_threshold: float = 0.5,
        init_ovs: float = 0.25,
        init_tds: float = 1.0,
        replacement: bool = False,
        **kwargs,
    ):
        """``args`` / ``kwargs``: ``GroupSampler``'s (``num_prompts, prompts_per_step, group_size,
        seed, num_processes, process_index``); the keywords here are VAS's own."""
        super().__init__(*args, **kwargs)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if a < 0 or b < 0 or a + b == 0:
            raise ValueError(f"a, b must be >= 0 and not both 0, got {a}, {b}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.lam, self.a, self.b, self.momentum = float(lam), float(a), float(b), float(momentum)
        self.update_every, self.diversity, self.pass_threshold = int(update_every), diversity, float(pass_threshold)
        self.init_ovs, self.init_tds = float(init_ovs), float(init_tds)
        self.replacement = bool(replacement)
        self._diversity = diversity_fn(diversity)
        self.n_weighted = math.floor(self.lam * self.k + 1e-9)
        N, f64 = self.num_prompts, torch.float64
        self._ovs = torch.full((N,), self.init_ovs, dtype=f64)
        self._tds = torch.full((N,), self.init_tds, dtype=f64)
        self._pass_rate = torch.full((N,), float("nan"), dtype=f64)  # of the latest window
        self._scored = torch.zeros(N, dtype=torch.bool)  # OVS measured at least once
        self._tds_scored = torch.zeros(N, dtype=torch.bool)  # TDS measured at least once
        self._n_pass = torch.zeros(N, dtype=f64)  # pending, since the last re-score
        self._n_total = torch.zeros(N, dtype=f64)
        self._tds_sum = torch.zeros(N, dtype=f64)
        self._tds_count = torch.zeros(N, dtype=f64)
        self._weights = torch.ones(N, dtype=f64)
        self.num_rescores = 0
        self.last_draw: Optional[dict[str, Any]] = None
        self._renormalise()

    # -- scores and weights ------------------------------------------------------------

    @property
    def weights(self) -> torch.Tensor:
        """Min-max normalised VPS per prompt, in [0, 1]; [num_prompts] float64 (a copy)."""
        return self._weights.clone()

    @property
    def scores(self) -> dict[str, torch.Tensor]:
        """Per prompt ([num_prompts] each, copies): ``ovs``, ``tds``, ``vps`` (priors for
        never-scored prompts), ``pass_rate`` (latest re-score window; NaN if never
        scored) and ``scored`` (bool: OVS measured at least once)."""
        return {
            "ovs": self._ovs.clone(),
            "tds": self._tds.clone(),
            "vps": self._vps(),
            "pass_rate": self._pass_rate.clone(),
            "scored": self._scored.clone(),
        }

    def _vps(self) -> torch.Tensor:
        return self.a * self._ovs + self.b * self._tds

    def _renormalise(self) -> None:
        v = self._vps()
        lo, hi = v.min(), v.max()
        self._weights = torch.ones_like(v) if hi - lo <= 1e-12 else (v - lo) / (hi - lo)

    # -- drawing -----------------------------------------------------------------------

    def draw(self, step: int, attempt: int = 0) -> dict[str, Any]:
        """The global draw of ``step``: ``prompts`` (the k prompts in group order) and
        ``weighted`` (per prompt, whether it came from the weighted part)."""
        gen = _step_generator(self.seed, step, attempt)
        N, k, n_w = self.num_prompts, self.k, self.n_weighted
        w = self._weights
        if self.replacement:  # MMR1's release: WeightedRandomSampler(replacement=True) + a uniform pool
            uniform_w = torch.ones_like(w) if float(w.sum()) <= 0 else w
            weighted = (
                torch.multinomial(uniform_w, n_w, replacement=True, generator=gen) if n_w else w.new_zeros(0).long()
            )
            uniform = torch.randperm(N, generator=gen)[: k - n_w]
            chosen = torch.cat([weighted, uniform])
            from_w = torch.cat([torch.ones(n_w, dtype=torch.bool), torch.zeros(k - n_w, dtype=torch.bool)])
            mix = torch.randperm(k, generator=gen)
            return {"step": step, "prompts": chosen[mix].tolist(), "weighted": from_w[mix].tolist()}
        u = torch.rand(N, generator=gen, dtype=torch.float64)
        e = -torch.log1p(-u)  # Exp(1), finite since u < 1
        pos = w > 0
        keys = torch.where(pos, e / torch.where(pos, w, torch.ones_like(w)), torch.full_like(w, math.inf))
        order = torch.argsort(keys, stable=True)
        n_pos = int(pos.sum())
        if n_pos >= n_w:
            weighted = order[:n_w]
        else:  # too few positive weights: fill the rest of the weighted part uniformly
            zero = torch.nonzero(~pos).flatten()
            zero = zero[torch.argsort(e[zero], stable=True)]
            weighted = torch.cat([order[:n_pos], zero[: n_w - n_pos]])
        rest = torch.ones(N, dtype=torch.bool)
        rest[weighted] = False
        rest = torch.nonzero(rest).flatten()
        uniform = rest[torch.randperm(rest.numel(), generator=gen)[: k - n_w]]
        chosen = torch.cat([weighted, uniform])
        from_w = torch.cat([torch.ones(n_w, dtype=torch.bool), torch.zeros(k - n_w, dtype=torch.bool)])
        mix = torch.randperm(k, generator=gen)
        return {"step": step, "prompts": chosen[mix].tolist(), "weighted": from_w[mix].tolist()}

    def _draw(self, step: int, attempt: int = 0) -> torch.Tensor:
        self.last_draw = self.draw(step, attempt)
        return torch.tensor(self.last_draw["prompts"], dtype=torch.long)

    # -- scoring -----------------------------------------------------------------------

    def update(self, prompt_indices, rewards_or_correct, texts: Optional[list[str]] = None, *, step: int) -> bool:
        """Record the rollouts of the *global* batch of ``step`` (gathered over all
        processes by the caller; [M] each): ``prompt_indices`` (any order, rollouts of
        one prompt grouped by index), ``rewards_or_correct`` (a bool tensor of
        correctness, or rewards compared with ``> pass_threshold``) and optionally the
        decoded ``texts`` for TDS. Re-scores when ``(step + 1) % update_every == 0``;
        returns whether it did.
        """
        idx = torch.as_tensor(prompt_indices, dtype=torch.long).flatten()
        r = torch.as_tensor(rewards_or_correct).flatten()
        if r.numel() != idx.numel():
            raise ValueError(f"{idx.numel()} prompt indices but {r.numel()} rewards")
        if texts is not None and len(texts) != idx.numel():
            raise ValueError(f"{idx.numel()} prompt indices but {len(texts)} texts")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_prompts):
            raise ValueError(f"prompt index out of range [0, {self.num_prompts})")
        correct = r if r.dtype == torch.bool else r.double() > self.pass_threshold
        self._n_pass.index_add_(0, idx, correct.double())
        self._n_total.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64))
        if texts is not None:
            for p in torch.unique(idx).tolist():
                group = [texts[j] for j in torch.nonzero(idx == p).flatten().tolist()]
                self._tds_sum[p] += self._diversity(group)
                self._tds_count[p] += 1
        if (step + 1) % self.update_every == 0:
            self.rescore()
            return True
        return False

    def rescore(self) -> None:
        """Turn the observations since the last re-score into scores (with momentum for
        prompts scored before) and re-normalise the weights."""
        m = self.momentum
        seen = self._n_total > 0
        if seen.any():
            p = self._n_pass[seen] / self._n_total[seen]
            self._pass_rate[seen] = p
            new = p * (1 - p)
            old = self._ovs[seen]
            self._ovs[seen] = torch.where(self._scored[seen], m * old + (1 - m) * new, new)
            self._scored |= seen
        measured = self._tds_count > 0
        if measured.any():
            new = self._tds_sum[measured] / self._tds_count[measured]
            old = self._tds[measured]
            self._tds[measured] = torch.where(self._tds_scored[measured], m * old + (1 - m) * new, new)
            self._tds_scored |= measured
        for t in (self._n_pass, self._n_total, self._tds_sum, self._tds_count):
            t.zero_()
        self.num_rescores += 1
        self._renormalise()

    # -- metrics and checkpoints ---------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """``vas/frac_scored`` (prompts scored at least once), ``vas/frac_informative``
        (scored prompts with 0 < pass rate < 1 in their latest window), ``vas/mean_ovs``,
        ``vas/mean_tds`` (over scored / TDS-measured prompts; NaN if none),
        ``vas/mean_weight``, ``vas/weight_entropy`` (nats, of weights / sum) and
        ``vas/weight_entropy_norm`` (divided by log num_prompts), ``vas/num_rescores``."""
        s, t = self._scored, self._tds_scored
        p = self._pass_rate[s]
        q = self._weights / self._weights.sum()
        ent = float(-(q[q > 0] * q[q > 0].log()).sum())
        nan = float("nan")
        return {
            "vas/frac_scored": float(s.double().mean()),
            "vas/frac_informative": float(((p > 0) & (p < 1)).double().mean()) if s.any() else nan,
            "vas/mean_ovs": float(self._ovs[s].mean()) if s.any() else nan,
            "vas/mean_tds": float(self._tds[t].mean()) if t.any() else nan,
            "vas/mean_weight": float(self._weights.mean()),
            "vas/weight_entropy": ent,
            "vas/weight_entropy_norm": ent / math.log(self.num_prompts) if self.num_prompts > 1 else 0.0,
            "vas/num_rescores": float(self.num_rescores),
        }

    _STATE = (
        "_ovs",
        "_tds",
        "_pass_rate",
        "_scored",
        "_tds_scored",
        "_n_pass",
        "_n_total",
        "_tds_sum",
        "_tds_count",
        "_weights",
    )

    def state_dict(self) -> dict[str, Any]:
        """Everything that determines future draws and scores (tensors and plain numbers,
        loadable with ``torch.load(weights_only=True)``)."""
        out: dict[str, Any] = {k.lstrip("_"): getattr(self, k).clone() for k in self._STATE}
        out.update(
            num_prompts=self.num_prompts,
            num_rescores=self.num_rescores,
            config=[
                self.lam,
                self.a,
                self.b,
                self.momentum,
                self.update_every,
                self.diversity,
                self.init_ovs,
                self.init_tds,
            ],
        )
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise ValueError(f"state is for {state['num_prompts']} prompts, sampler has {self.num_prompts}")
        for k in self._STATE:
            v = state[k.lstrip("_")]
            setattr(self, k, v.clone().to(getattr(self, k).dtype))
        self.num_rescores = int(state["num_rescores"])
