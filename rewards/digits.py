"""Proxy reward and held-out gold judge for the embedded ``digits`` task.

Why two classifiers: RL optimises the proxy, and a proxy can be fooled. The gold judge is a
*different model family* (RBF SVM vs a neural net) trained on the *other half* of the data,
so climbing the proxy without climbing gold is visible as over-optimisation rather than
hidden. Both train in a few seconds on CPU from scikit-learn's bundled digits; the proxy is
cached under ``<cache root>/digits-rewards-seed0/`` (a ``torch.save`` of tensors, read back
with ``weights_only=True``), the gold judge is retrained at each start (no pickles).

Contract (README.md, "Rewards"): ``reward(samples, prompts, metadata) -> dict[str, Tensor[B]]`` with
``samples`` images ``[B, 1, 8, 8]`` in [0, 1] and ``metadata[i]["digit"]`` the prompted
digit. A sample with non-finite pixels scores NaN (the trainer masks and counts it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from genrl.io import atomic_path, cache_root
from genrl.registry import REWARDS
from genrl.tasks.digits import SPLIT_SEED, digits_split, prompted_digit

SAMPLE_SHAPE = (1, 8, 8)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or tuple(samples.shape[1:]) != SAMPLE_SHAPE:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"digits rewards expect images of shape [B, 1, 8, 8] in [0, 1], got {got}")
    return samples


def _prompted_digits(prompts: Sequence[str], metadata: Sequence[dict] | None, batch: int) -> torch.Tensor:
    """``[B]`` prompted digits (``genrl.tasks.digits.prompted_digit``: ``metadata[i]["digit"]``, else parsed from
    the prompt)."""
    if len(prompts) != batch or (metadata is not None and len(metadata) != batch):
        raise ValueError(
            f"got {batch} samples, {len(prompts)} prompts and "
            f"{'no' if metadata is None else len(metadata)} metadata entries"
        )
    return torch.tensor([prompted_digit(p, m) for p, m in zip(prompts, metadata or [None] * batch)])


class _DigitsJudge:
    """Shared plumbing: cache location, input checks, NaN for non-finite samples."""

    key: str

    @staticmethod
    def check_samples(shape: tuple[int, ...]) -> None:
        """Start-up check (``genrl.scoring.check_rewards_take``): ``ValueError`` unless one sample is 1x8x8."""
        if tuple(shape) != SAMPLE_SHAPE:
            raise ValueError(f"scores the digits task's 1x8x8 images; the policy's model samples {tuple(shape)}")

    @staticmethod
    def check_prompts(prompts: Sequence[tuple[str, dict]]) -> None:
        """Start-up check: ``ValueError`` naming the first ``(prompt, metadata)`` with no prompted digit
        (``metadata["digit"]`` or one digit in the text)."""
        for prompt, metadata in prompts:
            try:
                _prompted_digits([prompt], [metadata], 1)
            except ValueError as e:
                raise ValueError(f"needs the prompted digit of every prompt: {e}") from None

    def __init__(self, cache_dir: str | None = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.cache = cache_root(cache_dir) / f"digits-rewards-seed{SPLIT_SEED}"
        self._load_or_train()

    def _load_or_train(self) -> None:
        raise NotImplementedError

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, 10]`` for finite images ``[B, 1, 8, 8]`` on CPU."""
        raise NotImplementedError

    def _load_cached(self, path: Path, load: Callable[[Path], None]) -> bool:
        """Try ``load(path)``; a missing file means train, a corrupt one is reported and retrained."""
        if not path.is_file():
            return False
        try:
            load(path)
            return True
        except Exception as err:  # corrupt, truncated or from an incompatible version
            warnings.warn(f"could not load cached digits classifier {path} ({err!r}); retraining")
            return False

    @torch.no_grad()
    def probs(self, samples: torch.Tensor) -> torch.Tensor:
        """``[B, 10]`` class probabilities for images ``[B, 1, 8, 8]`` in [0, 1]; NaN rows for non-finite samples."""
        samples = _check_samples(samples).detach().float().cpu()
        finite = torch.isfinite(samples).flatten(1).all(-1)  # [B]
        out = torch.full((len(samples), 10), float("nan"))
        if finite.any():
            out[finite] = self._probs(samples[finite])
        return out

    def _score(self, samples, prompts, metadata) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        samples = _check_samples(samples)
        digits = _prompted_digits(prompts, metadata, len(samples))  # [B]
        p = self.probs(samples)  # [B, 10]
        return p, digits, p[torch.arange(len(digits)), digits]


# ----------------------------------------------------------------------------- proxy


class DigitsMLP(nn.Module):
    """Pixel MLP 64-256-128-10 (51k params)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),  # [B, 64]
            nn.Linear(64, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, 8, 8] -> logits [B, 10]
        return self.layers(x)


def train_proxy(images: torch.Tensor, labels: torch.Tensor, epochs: int = 50, seed: int = 0) -> DigitsMLP:
    """Train :class:`DigitsMLP` on pixels with Gaussian-noise augmentation (std 0.2).

    Why this model: on samples of the weak base model, a pixel-space proxy agrees with the
    pixel-space SVM judge far better than a shift-augmented CNN (argmax agreement 0.88 vs
    0.57 at the calibrated base, reward correlation 0.78 vs 0.40), although both score
    ~0.99 on real digits; the noise makes it tolerant of a weak generator's speckle.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsMLP()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    net.train()
    with torch.enable_grad():  # callers may be inside no_grad (lazy training from eval code)
        for _ in range(epochs):
            for idx in torch.randperm(len(labels), generator=gen).split(64):
                x = images[idx]  # [b, 1, 8, 8]
                x = x + 0.2 * torch.randn(x.shape, generator=gen)
                loss = F.cross_entropy(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return net.eval()


@REWARDS.register("digits", samples="images")
class DigitsReward(_DigitsJudge):
    """Proxy reward: probability of the prompted digit under an MLP trained on split A.

    Returns ``{"digits": Tensor[B]}``.
    """

    key = "digits"
    FORMAT = 1

    def _load_or_train(self) -> None:
        path = self.path = self.cache / "proxy.pt"
        self.net = DigitsMLP()

        def load(p: Path) -> None:
            blob = torch.load(p, map_location="cpu", weights_only=True)
            if blob.get("format") != self.FORMAT or blob.get("split_seed") != SPLIT_SEED:
                raise ValueError("format or split seed mismatch")
            self.net.load_state_dict(blob["state_dict"])

        if not self._load_cached(path, load):
            print(f"genrl: training the digits proxy classifier into {path} (once, seconds)", flush=True)
            images, labels = digits_split()["proxy"]
            self.net = train_proxy(images, labels)
            blob = {"format": self.FORMAT, "split_seed": SPLIT_SEED, "state_dict": self.net.state_dict()}
            _write_atomically(path, lambda tmp: torch.save(blob, tmp))
        self.net.eval().to(self.device)

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.to(self.device)).softmax(-1).cpu()

    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        _, _, reward = self._score(samples, prompts, metadata)
        return {self.key: reward.to(samples.device)}


@REWARDS.register("digits_ink", samples="images")
class DigitsInkReward(DigitsReward):
    """A proxy that can be gamed (issue 5's over-optimisation setting): the classifier's
    probability of the prompted digit plus ``ink_weight`` times the image's mean brightness.

    Brighter, thicker strokes pay whatever they do to legibility, so the proxy can keep rising
    while the held-out judge's accuracy and the diversity fall. Returns
    ``{"digits_ink": proxy, "digits": the classifier term, "ink": mean brightness}``."""

    key = "digits_ink"

    def __init__(self, cache_dir: str | None = None, device: str = "cpu", ink_weight: float = 1.0):
        if not ink_weight >= 0:
            raise ValueError(f"digits_ink: ink_weight must be >= 0, got {ink_weight}")
        super().__init__(cache_dir=cache_dir, device=device)
        self.ink_weight = float(ink_weight)

    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        _, _, prob = self._score(samples, prompts, metadata)
        ink = samples.detach().float().flatten(1).mean(1).cpu()
        ink = torch.where(torch.isfinite(prob), ink, torch.full_like(ink, float("nan")))
        return {
            self.key: (prob + self.ink_weight * ink).to(samples.device),
            "digits": prob.to(samples.device),
            "ink": ink.to(samples.device),
        }


# ----------------------------------------------------------------------------- gold


def train_gold(images: torch.Tensor, labels: torch.Tensor):
    """RBF SVM with sigmoid-calibrated probabilities (the non-deprecated form of
    ``SVC(probability=True)``), on flattened [0, 1] pixels."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    clf = CalibratedClassifierCV(SVC(C=3.0, kernel="rbf", gamma="scale"), ensemble=False)
    return clf.fit(images.reshape(len(images), -1).numpy(), labels.numpy())


@REWARDS.register("digits_gold", samples="images")
class DigitsGoldReward(_DigitsJudge):
    """Held-out judge: an RBF SVM trained on split B, never optimised, only reported.

    Returns ``{"digits_gold": p(prompted digit), "digits_gold_correct": 1.0 if argmax is it}``.
    """

    key = "digits_gold"

    def _load_or_train(self) -> None:
        """Trained in memory at every start (0.2 s on a laptop CPU, and deterministic: libsvm and the
        unshuffled 5-fold calibration draw nothing at random), never cached: an sklearn model can
        only be stored as a pickle, and genrl loads no file in a way that can run code."""
        self.path = None
        images, labels = digits_split()["gold"]
        self.clf = train_gold(images, labels)

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(len(images), -1).double().numpy()  # [B, 64]
        p = self.clf.predict_proba(flat)  # [B, n_classes], classes 0..9 in order
        return torch.from_numpy(p).float()

    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None):
        p, digits, reward = self._score(samples, prompts, metadata)
        correct = (p.argmax(-1) == digits).float()
        correct[reward.isnan()] = float("nan")
        return {self.key: reward.to(samples.device), "digits_gold_correct": correct.to(samples.device)}
