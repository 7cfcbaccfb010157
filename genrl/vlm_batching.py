"""Chat prompts, batches, generation and model folders for vision-language models.

One home for what the VLM policy (``genrl.policies.vlm``), the SFT trainer (``genrl.trainers.sft``)
and the VLM tasks share. A prompt is ``(text, metadata)`` as everywhere in genrl: the images of a
prompt are ``metadata["images"]`` (a sequence of PIL images) or ``metadata["image"]`` (one);
``<image>`` in the text marks where each image goes (EasyR1/MMR1 data), else the images come first.

* :func:`encode_prompts`: chat-templated, left-padded model inputs for generation;
* :func:`encode_sft`: prompt + response, right padded, with ``labels`` on the response only;
* :func:`generate`: responses with ``model.generate`` (greedy, or sampled from the global RNG);
* :func:`model_answerer` / :func:`policy_answerer`: the ``answer`` callable of
  ``genrl.evaluation.evaluate_responses`` for a bare model or a ``VLMPolicy``;
* :func:`save_model_dir` / :func:`load_model_dir`: a model + processor folder, written atomically.

Qwen2-VL in transformers 5.x needs ``mm_token_type_ids`` whenever ``image_grid_thw`` is given;
the processor produces it (``return_mm_token_type_ids``) and every function here passes it on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from genrl.io import atomic_dir
from genrl.models import write_task_info

IMAGE_PLACEHOLDER = "<image>"  # where an image goes in a prompt (EasyR1/MMR1 data convention)
# Tokens that must never be sampled: a generated <|image_pad|> makes the next forward look
# for image features that do not exist (and crashes), the others are meaningless in a reply.
NEVER_SAMPLE_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_pad|>", "<|vision_start|>", "<|vision_end|>")
END_TOKENS = ("<|im_end|>",)  # a chat turn's end: ends a response whatever the tokenizer's eos_token is


def user_message(question: str, n_images: int) -> list[dict]:
    """One chat turn with ``n_images`` images. ``<image>`` in the question marks where each image
    goes (EasyR1/MMR1 data); without placeholders the images come first.

    Raises ``ValueError`` when the placeholder count differs from ``n_images``."""
    parts = question.split(IMAGE_PLACEHOLDER)
    if len(parts) == 1:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    elif len(parts) - 1 != n_images:
        raise ValueError(
            f"the prompt has {len(parts) - 1} {IMAGE_PLACEHOLDER} placeholders but {n_images} images: "
            f"{question[:120]!r}"
        )
    else:
        content = []
        for i, text in enumerate(parts):
            if i:
                content.append({"type": "image"})
            if text:
                content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def check_next_token_scores(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` [B, V] unchanged, or ``RunFailed`` (exit code 1) when any is NaN or ``+inf`` (``softmax``
    makes a ``+inf`` row NaN): weights that diverged (steps skipped for a non-finite loss, too few in a row
    to stop the run) made sampling fail with torch's "probability tensor contains either inf, nan or
    element < 0" traceback. ``-inf`` (a suppressed token) is a valid score."""
    if bool((torch.isnan(scores) | torch.isposinf(scores)).any()):
        from genrl.preemption import RunFailed

        raise RunFailed(
            "the model's next-token scores are NaN or inf: its weights diverged (see train/nonfinite_steps_skipped); "
            "lower train.lr or clip harder (a lower train.max_grad_norm), and resume from an earlier checkpoint "
            "or start over"
        )
    return scores


def context_length(model) -> Optional[int]:
    """The longest token sequence, prompt and response together, that ``model``'s text config states it
    takes (``max_position_embeddings``: 128 for the digit_sum model, 128000 for Qwen2.5-VL); ``None``
    when it states none."""
    conf = model.config
    text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    n = getattr(text, "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def check_response_length(model, max_new_tokens: int, key: str, prompt_tokens: int = 1, where: str = "") -> None:
    """``ValueError`` naming ``key`` when ``prompt_tokens`` plus ``max_new_tokens`` exceed
    :func:`context_length` (a huge ``max_new_tokens`` ran out of memory in the attention mask, after the
    run had started); ``where`` names the prompt (its row) when ``prompt_tokens`` is a real prompt's."""
    n = context_length(model)
    if n is not None and prompt_tokens + max_new_tokens > n:
        prompt = f"{where}: a prompt of {prompt_tokens} tokens" if where else "a prompt"
        raise ValueError(
            f"{key}={max_new_tokens}: {prompt} and the response would exceed the model's context of {n} tokens "
            f"(max_position_embeddings); lower {key}"
        )


def prompt_lengths(processor, prompts: Sequence[str], metadata: Sequence[dict]) -> list[int]:
    """Tokens each prompt takes after the chat template and the processor's image expansion
    (what :func:`encode_prompts` makes of it, before padding), without preprocessing pixels: the
    template's tokens plus, per image, the image processor's own patch count for its size
    (``get_number_of_image_patches``, the function vLLM uses for the same count) over
    ``merge_size**2``, less the one ``<|image_pad|>`` the template holds. An image's size comes from
    ``metadata["images"].sizes`` when the task measured it (``vlm_data``), else from the image."""
    ip = processor.image_processor
    texts, sizes = [], []
    for q, meta in zip(prompts, metadata):
        ims = meta.get("images")
        if ims is None:
            ims = [meta["image"]] if meta.get("image") is not None else []
        known = getattr(ims, "sizes", None)
        sizes.append(list(known) if known is not None else [(im.height, im.width) for im in ims])
        texts.append(chat_text(processor, q, len(ims)))  # the images are not decoded
    ids = processor.tokenizer(texts, verbose=False)["input_ids"]  # counted to be checked: no length warning
    return [
        len(t) + sum(ip.get_number_of_image_patches(h, w, {}) // ip.merge_size**2 - 1 for h, w in hw)
        for t, hw in zip(ids, sizes)
    ]


def response_ids(tokenizer, response: str) -> list[int]:
    """The target tokens of one SFT response: the response's tokens, then the end-of-sequence token's id
    (what :func:`encode_sft` appends to the prompt and trains on), as a chat template renders an assistant
    turn, ``{content}<|im_end|>``. The text ``response + " " + eos_token`` made a byte-level BPE tokenizer
    (Qwen's) emit a lone space token before ``<|im_end|>``, which SFT then taught the model to generate."""
    # verbose=False: no "longer than the specified maximum sequence length" warning; the lengths are checked
    return [*tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"], tokenizer.eos_token_id]


def unknown_words(tokenizer, texts: Sequence[str]) -> dict[int, list[str]]:
    """``{index: [word, ...]}`` of the ``texts`` that ``tokenizer`` reads (in part) as its unknown token, with
    those words (``IMAGE_PLACEHOLDER`` aside): a closed vocabulary, as the word-level tokenizer of the
    embedded digit_sum model, which read "Quelle est la somme ?" as four ``<unk>`` and a "?", silently.
    Byte-level BPE tokenizers (Qwen's) represent any text and find none; nor is a text that holds the
    unknown token's own string counted."""
    unk = tokenizer.unk_token_id
    if unk is None or not texts:
        return {}
    plain = [t.replace(IMAGE_PLACEHOLDER, " ") for t in texts]
    found = {}
    if not getattr(tokenizer, "is_fast", False):  # a Python tokenizer gives no offsets: word by word
        for i, t in enumerate(plain):
            if tokenizer.unk_token in t:
                continue
            words = [w for w in dict.fromkeys(t.split()) if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
            if words:
                found[i] = words
        return found
    enc = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    for i, (t, ids, spans) in enumerate(zip(plain, enc["input_ids"], enc["offset_mapping"])):
        if unk in ids and tokenizer.unk_token not in t:
            found[i] = list(dict.fromkeys(t[a:b] for k, (a, b) in zip(ids, spans) if k == unk))
    return found


def refuse_unknown_words(tokenizer, texts: Sequence[str], where, what: str = "prompt") -> None:
    """``ValueError`` naming the first of ``texts`` with :func:`unknown_words` (``where(i)``: its row), up to
    three of its words, and how many texts hold some. Words every text holds are named as such, not as the
    first row's: text joined to each prompt (``data.system_prompt``) was blamed on row 1."""
    found = unknown_words(tokenizer, texts)
    if not found:
        return

    def shown(words: list[str]) -> str:
        return ", ".join(map(repr, words[:3])) + (", ..." if len(words) > 3 else "")

    i, words = next(iter(found.items()))
    common = [w for w in words if all(w in ws for ws in found.values())]
    if len(texts) > 1 and len(found) == len(texts) and common:
        such = (
            ": text joined to every prompt, such as an instruction (data.system_prompt)?" if what == "prompt" else ""
        )
        raise ValueError(
            f"all {len(texts)} {what}s hold words the model's vocabulary lacks ({shown(common)}), read as "
            f"{tokenizer.unk_token}{such}; use the model's own words"
        )
    raise ValueError(
        f"{where(i)}: the {what} holds words the model's vocabulary lacks ({shown(words)}), read as "
        f"{tokenizer.unk_token} ({len(found)} of {len(texts)} {what}s do); use the model's own words"
    )


def check_vlm_prompts(
    model,
    processor,
    prompts: Sequence[tuple[str, dict]],
    max_new_tokens: int = 0,
    key: str = "",
    max_prompt_length: int = 0,
    responses: Optional[Sequence[str]] = None,
) -> None:
    """Start-up check of the ``[(prompt, metadata)]`` a vision-language ``model`` (with ``processor``) will
    take: a ``ValueError`` naming the first prompt that fails (``prompt_location``: its file and row, where
    the task gives one) and how many do, for a prompt

    * holding text UTF-8 cannot encode (``genrl.policies.base.check_encodable``);
    * holding one of the model's vision tokens as text (``<|image_pad|>``: a chat template rendered into the
      data; the processor counted it as an image and refused the batch that drew it);
    * holding words a closed vocabulary lacks (:func:`unknown_words`), or whose response does;
    * over ``max_prompt_length`` tokens (0: no limit), counted by :func:`prompt_lengths`;
    * leaving no room for ``max_new_tokens`` (the setting ``key``) in the model's context
      (:func:`check_response_length`); with ``responses`` (SFT's targets, one per prompt) instead, prompt and
      response together over it (a 5000-word target trained silently past the model's positions).

    Without it a bad row stopped the run at the random step that drew it. With a model that states its
    context (they all do) every prompt is counted: one tokenizer pass over the data at start-up."""
    from genrl.policies.base import check_encodable, prompt_location  # lazy: genrl.policies imports this module

    check_encodable(prompts)  # a lone surrogate: the tokenizer's TypeError below, naming nothing
    if max_new_tokens:
        check_response_length(model, max_new_tokens, key)  # any prompt takes at least a token
    if not prompts:
        return

    def where(i: int) -> str:
        return prompt_location(prompts, i)

    tok = processor.tokenizer
    vision = [t for t in NEVER_SAMPLE_TOKENS if t in tok.get_vocab()]
    marked = [i for i, (p, _) in enumerate(prompts) if any(t in p for t in vision)]
    if marked:
        i = marked[0]
        token = next(t for t in vision if t in prompts[i][0])
        raise ValueError(
            f"{where(i)}: the prompt holds {token} as text, one of the model's vision tokens ({len(marked)} of "
            f"{len(prompts)} prompts do); give the plain question, with {IMAGE_PLACEHOLDER} where an image goes"
        )
    refuse_unknown_words(tok, [p for p, _ in prompts], where)  # a closed vocabulary's <unk>
    if responses is not None:
        refuse_unknown_words(tok, responses, where, "target response")
    n = context_length(model)
    if max_prompt_length <= 0 and n is None:
        return
    lengths = prompt_lengths(processor, [p for p, _ in prompts], [m for _, m in prompts])
    over = [i for i, k in enumerate(lengths) if 0 < max_prompt_length < k]
    if over:
        i = over[0]
        raise ValueError(
            f"{where(i)}: the prompt takes {lengths[i]} tokens (text and images) > policy.max_prompt_length="
            f"{max_prompt_length} ({len(over)} of {len(prompts)} prompts do); raise policy.max_prompt_length or "
            "drop those rows"
        )
    if responses is None:
        longest = max(range(len(prompts)), key=lambda i: lengths[i])
        check_response_length(model, max_new_tokens, key, lengths[longest], where(longest))
        return
    if n is None:
        return
    total = [k + len(response_ids(tok, r)) for k, r in zip(lengths, responses)]
    over = [i for i, k in enumerate(total) if k > n]
    if over:
        i = over[0]
        raise ValueError(
            f"{where(i)}: the prompt and its target response take {total[i]} tokens, over the model's context of {n} "
            f"(max_position_embeddings; {len(over)} of {len(prompts)} examples are); shorten or drop those rows"
        )


def images_of(meta: Optional[dict]) -> list:
    """The PIL images of one prompt: ``meta["images"]`` (a sequence) or ``meta["image"]``."""
    if not meta:
        return []
    if meta.get("images") is not None:
        return list(meta["images"])
    return [meta["image"]] if meta.get("image") is not None else []


def chat_text(processor, question: str, n_images: int) -> str:
    """One prompt with ``n_images`` images in the processor's chat template, ending with the assistant turn."""
    return processor.apply_chat_template(user_message(question, n_images), add_generation_prompt=True, tokenize=False)


def chat_prompts(processor, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple[list[str], list[list]]:
    """``(texts, images)``: each prompt in the processor's chat template (:func:`chat_text`) and each
    prompt's images."""
    images = [images_of(m) for m in metadata]
    return [chat_text(processor, q, len(ims)) for q, ims in zip(prompts, images)], images


def encode_prompts(processor, prompts: Sequence[str], metadata: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Prompts -> model inputs for generation, left padded to the batch's longest.

    ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids [B, L]``; with images also
    ``pixel_values [N_patches, D]`` and ``image_grid_thw [N_images, 3]`` (all images of the batch,
    in order)."""
    texts, images = chat_prompts(processor, prompts, metadata)
    flat = [im for ims in images for im in ims]
    enc = processor(
        text=texts,
        images=flat or None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        return_mm_token_type_ids=True,
    )
    return dict(enc)


def encode_sft(
    processor, prompts: Sequence[str], metadata: Sequence[dict], responses: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Prompt + response sequences for teacher forcing, right padded, with ``labels``.

    ``labels [B, L]`` holds the response tokens (and the closing end-of-sequence token) and -100 on
    prompt and padding positions, so a causal-LM loss trains on response tokens only. The other
    keys are :func:`encode_prompts`' with the prompt padding removed."""
    tok = processor.tokenizer
    enc = encode_prompts(processor, prompts, metadata)  # left padded [B, Lp]
    resp = [response_ids(tok, r) for r in responses]
    rows, types, labels = [], [], []
    for b, r in enumerate(resp):
        keep = enc["attention_mask"][b].bool()
        p_ids, p_types = enc["input_ids"][b][keep].tolist(), enc["mm_token_type_ids"][b][keep].tolist()
        rows.append(p_ids + r)
        types.append(p_types + [0] * len(r))
        labels.append([-100] * len(p_ids) + r)
    L = max(map(len, rows))
    input_ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros((len(rows), L), dtype=torch.long)
    mm_types = torch.zeros((len(rows), L), dtype=torch.long)
    lab = torch.full((len(rows), L), -100, dtype=torch.long)
    for b in range(len(rows)):
        n = len(rows[b])
        input_ids[b, :n] = torch.tensor(rows[b])
        attention_mask[b, :n] = 1
        mm_types[b, :n] = torch.tensor(types[b])
        lab[b, :n] = torch.tensor(labels[b])
    vision = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": mm_types,
        **vision,
        "labels": lab,
    }


class _CheckedScores:
    """``model.generate``'s logits processor running :func:`check_next_token_scores` on every step."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return check_next_token_scores(scores)


def end_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a response, sorted: the model's ``generation_config.eos_token_id`` (one or a list),
    the tokenizer's ``eos_token_id`` and ``END_TOKENS`` where the vocabulary has them (the VLM policy's
    sampling and :func:`generate` stop at the same set). ``ValueError`` when there are none."""
    unk, config = tokenizer.unk_token_id, getattr(model, "generation_config", None)
    eos = set()
    for src in (config.eos_token_id if config is not None else None, tokenizer.eos_token_id):
        eos.update(src if isinstance(src, (list, tuple)) else [src] if src is not None else [])
    for t in END_TOKENS:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is not None and i != unk:
            eos.add(i)
    if not eos:
        raise ValueError("the tokenizer and generation config define no end-of-sequence token")
    return sorted(eos)


@torch.no_grad()
def generate(
    model,
    processor,
    prompts: Sequence[str],
    metadata: Sequence[dict],
    *,
    suppress_tokens: Sequence[str] = (),
    do_sample: bool = False,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    batch_size: int = 256,
) -> list[str]:
    """Responses (decoded, special tokens dropped, whitespace collapsed) for the prompts, in
    batches of ``batch_size``; greedy unless ``do_sample`` (plain sampling at ``temperature``), each
    ending at the VLM policy's end tokens (:func:`end_token_ids`).

    ``suppress_tokens`` are never generated (a sampled ``<|image_pad|>`` would crash the model's
    next forward). Sampling uses the global torch RNG: seed it for reproducibility. Decoding follows a
    ``GenerationConfig`` of these settings alone, not the model's ``generation_config``: the Qwen Instruct
    checkpoints ship ``repetition_penalty`` 1.05 and ``top_k`` / ``top_p``, which made "greedy" evaluation
    other than the argmax the RL policy decodes with. transformers fills every setting a given config leaves
    unset from ``model.generation_config``, so a blank one stands in for it during the call."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    tok = processor.tokenizer
    blocked = [tok.convert_tokens_to_ids(t) for t in suppress_tokens]
    out: list[str] = []
    was_training = model.training
    model.eval()
    sampling = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {}
    config = GenerationConfig(
        do_sample=do_sample,
        max_new_tokens=max_new_tokens,
        suppress_tokens=blocked or None,
        pad_token_id=tok.pad_token_id,
        eos_token_id=end_token_ids(model, tok),
        **sampling,
    )
    shipped, model.generation_config = model.generation_config, GenerationConfig()
    try:
        for i in range(0, len(prompts), batch_size):
            enc = encode_prompts(processor, prompts[i : i + batch_size], metadata[i : i + batch_size])
            enc = {k: v.to(device) for k, v in enc.items()}
            ids = model.generate(
                **enc,
                generation_config=config,
                logits_processor=[_CheckedScores()],  # NaN scores (diverged weights): RunFailed, not a traceback
            )  # [b, Lp + T]
            out += processor.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        model.generation_config = shipped
    model.train(was_training)
    return [" ".join(s.split()) for s in out]


def model_answerer(model, processor, eval_cfg, suppress_tokens: Sequence[str] = NEVER_SAMPLE_TOKENS):
    """``answer(prompts, metadata, sample_seed)`` for ``genrl.evaluation.evaluate_responses`` by
    :func:`generate`: greedy when ``sample_seed`` is None, else sampled at
    ``eval_cfg.sample_temperature`` from the global RNG seeded with ``sample_seed`` (the caller's
    RNG state is restored afterwards)."""

    def answer(prompts: Sequence[str], metadata: Sequence[dict], sample_seed: Optional[int] = None) -> list[str]:
        kw = {
            "suppress_tokens": suppress_tokens,
            "max_new_tokens": eval_cfg.max_new_tokens,
            "batch_size": eval_cfg.batch_size,
        }
        if sample_seed is None:
            return generate(model, processor, prompts, metadata, **kw)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return generate(
                model, processor, prompts, metadata, do_sample=True, temperature=eval_cfg.sample_temperature, **kw
            )

    return answer


def policy_answerer(policy, eval_cfg):
    """``answer(prompts, metadata, sample_seed)`` by a ``VLMPolicy``'s own decoding (``sample``), in
    batches of ``eval_cfg.batch_size``: greedy when ``sample_seed`` is None, else sampled at
    ``eval_cfg.sample_temperature`` with a generator seeded with ``sample_seed``."""

    def answer(prompts: Sequence[str], metadata: Sequence[dict], sample_seed: Optional[int] = None) -> list[str]:
        greedy = sample_seed is None
        generator = None if greedy else torch.Generator().manual_seed(sample_seed)
        out: list[str] = []
        for i in range(0, len(prompts), eval_cfg.batch_size):
            out += policy.sample(
                prompts[i : i + eval_cfg.batch_size],
                metadata[i : i + eval_cfg.batch_size],
                greedy=greedy,
                generator=generator,
                max_new_tokens=eval_cfg.max_new_tokens,
                temperature=None if greedy else eval_cfg.sample_temperature,
            )
        return out

    return answer


def save_model_dir(model, processor, out_dir: str | os.PathLike, info: Optional[dict] = None) -> str:
    """Write model + processor (+ ``genrl_task.json`` holding ``info``) into ``out_dir`` atomically
    (``genrl.io.atomic_dir``); returns the folder."""
    out_dir = Path(out_dir).expanduser()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_task_info(tmp, info or {})
    return str(out_dir)


def load_model_dir(path: str | os.PathLike, device: Any = "cpu", key: str = "model"):
    """``(model, processor)`` in float32 and eval mode from a model folder (one written by
    :func:`save_model_dir`, or any folder of a supported model type, ``genrl.policies.vlm``) or hub id;
    ``key``: the config key naming it, for errors."""
    from genrl.policies.vlm import load_components

    parts = load_components(os.fspath(Path(path).expanduser()), torch.float32, key)
    return parts["model"].to(device).eval(), parts["processor"]


__all__ = [
    "IMAGE_PLACEHOLDER",
    "NEVER_SAMPLE_TOKENS",
    "chat_prompts",
    "check_vlm_prompts",
    "encode_prompts",
    "encode_sft",
    "generate",
    "images_of",
    "load_model_dir",
    "model_answerer",
    "policy_answerer",
    "prompt_lengths",
    "refuse_unknown_words",
    "response_ids",
    "save_model_dir",
    "unknown_words",
    "user_message",
]
