"""What the embedded text-to-image and text-to-video tasks share to build their base models.

The digits task (an SD3 MMDiT on 8x8 images) and the moving_digits task (a Wan DiT on 9x16x16 clips) each
build a tiny real diffusers transformer and transformers text encoder in code and pretrain them here, on
this machine. They share:

* the word-level tokenizer and its special-token ids (:func:`word_level_tokenizer`, :func:`special_token_ids`);
* the rectified-flow pretraining loop (:func:`rectified_flow_pretrain`).

Written here rather than taken from a library: the tokenizer is assembled from ``tokenizers``' parts (a
word-level vocabulary of our own words has no hub checkpoint), and diffusers' training examples are
scripts, not functions one can import; this loop is the tasks' data recipe, a dozen lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"<pad>": 0, "<bos>": 1, "<unk>": 2, "<eos>": 3}  # eos is not 2: CLIP pools at the first eos
CAPTION_DROPOUT = 0.1  # of pretraining captions replaced by the null caption "", so CFG is available


def special_token_ids(*kinds: str) -> dict[str, int]:
    """The ``<kind>_token_id`` keyword arguments of a transformers text-model config for ``kinds`` (``"pad"``,
    ``"bos"``, ``"eos"``, ``"unk"``), matching :func:`word_level_tokenizer`'s ids. Raises ``KeyError`` on
    another kind."""
    return {f"{kind}_token_id": SPECIAL_TOKENS[f"<{kind}>"] for kind in kinds}


def word_vocabulary(words: Sequence[str]) -> dict[str, int]:
    """Token -> id of :func:`word_level_tokenizer` of ``words``: :data:`SPECIAL_TOKENS` (ids 0-3), then each
    new word of ``words`` in order."""
    vocab = dict(SPECIAL_TOKENS)
    for word in words:
        vocab.setdefault(word, len(vocab))
    return vocab


def vocabulary_size(words: Sequence[str]) -> int:
    """How many ids :func:`word_level_tokenizer` of ``words`` gives (a text encoder's ``vocab_size``)."""
    return len(word_vocabulary(words))


def word_level_tokenizer(
    words: Sequence[str], max_length: int, bos: bool = True, lowercase: bool = False
) -> "PreTrainedTokenizerFast":
    """A real word-level fast tokenizer (``tokenizers``' ``WordLevel``, split on whitespace), built in code.

    Its vocabulary is :func:`word_vocabulary`; any other word becomes ``<unk>``. Each text becomes ``<bos> ... <eos>`` (``... <eos>`` with ``bos=False``, as T5),
    padded on the right with ``<pad>`` to ``model_max_length = max_length``. Saves and loads with
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any hub tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = word_vocabulary(words)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>" if bos else "$A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=max_length,
        padding_side="right",
    )


@dataclass(frozen=True)
class PretrainSettings:
    """One pretraining run's settings, recorded in the built model's ``genrl_task.json`` (:meth:`record`)."""

    steps: int  # optimizer steps
    seed: int  # of every draw of the loop (the caller seeds the weight init with it too)
    batch_size: int  # samples per step
    lr: float  # AdamW learning rate

    def record(self) -> dict:
        return {"pretrain_steps": self.steps, "seed": self.seed, "batch_size": self.batch_size, "lr": self.lr}


def rectified_flow_pretrain(
    x0: torch.Tensor,
    captions: torch.Tensor,
    null_caption: int,
    velocity: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    params: Iterable[torch.nn.Parameter],
    run: PretrainSettings,
    desc: str,
    progress: bool = True,
    callback: Optional[Callable[[int], None]] = None,
) -> None:
    """Train ``velocity`` by rectified flow: AdamW on ``params``, ``run.steps`` steps of ``run.batch_size`` samples.

    Flow-matching convention of diffusers' ``FlowMatchEulerDiscreteScheduler`` (rectified flow, Liu et al.
    2022, arXiv 2209.03003; SD3, Esser et al. 2024, arXiv 2403.03206, §2): ``x_t = (1 - t) x0 + t noise`` and
    the model predicts ``v = noise - x0`` under an MSE loss, so a sampler step is ``x' = x + (s' - s) v``.
    ``t`` is logit-normal with mean 0 and std 1 (SD3's ``lognorm(0, 1)``, §3.1) and the model sees
    ``t * 1000``. :data:`CAPTION_DROPOUT` of the captions become ``null_caption``.

    Args:
        x0: ``[N, C, ...]`` the training images or clips in ``[-1, 1]``.
        captions: ``[N]`` long, each sample's caption index.
        null_caption: the caption index of ``""``.
        velocity: ``(x_t [B, C, ...], timestep [B] in [0, 1000], caption [B] long) -> v [B, C, ...]``.
        params: what AdamW trains (the models are in train mode already).
        run: steps, seed, batch size and learning rate. Every draw (batch, dropout, ``t``, noise, in that
            order each step) comes from a ``torch.Generator`` seeded with ``run.seed``, so a run is
            reproducible on a given machine (the weight init is the caller's).
        desc, progress: the tqdm bar's label, and whether it shows.
        callback: called with the step number (1-based) after every optimizer step.
    """
    from tqdm.auto import tqdm

    batch_size = run.batch_size
    gen = torch.Generator().manual_seed(run.seed)
    opt = torch.optim.AdamW(list(params), lr=run.lr)
    bar = tqdm(range(run.steps), desc=desc, disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(x0), (batch_size,), generator=gen)  # [B]
        x0_b = x0[idx]  # [B, C, ...]
        caption = captions[idx].clone()  # [B]
        caption[torch.rand(batch_size, generator=gen) < CAPTION_DROPOUT] = null_caption
        t = torch.sigmoid(torch.randn(batch_size, generator=gen))  # [B] logit-normal
        noise = torch.randn(x0_b.shape, generator=gen)  # [B, C, ...]
        tt = t.view(-1, *[1] * (x0.dim() - 1))
        v = velocity((1 - tt) * x0_b + tt * noise, t * 1000, caption)
        loss = F.mse_loss(v, noise - x0_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if callback is not None:
            callback(step + 1)
    bar.close()
