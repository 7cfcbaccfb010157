"""The ``vlm_data`` task: RL prompts for a vision-language policy from local data files.

Rows follow the format of EasyR1 and MMR1 (``verl/utils/dataset.py`` in LengSicong/MMR1,
read for the facts only): a prompt column (``problem``) in which ``<image>`` marks where
each image goes, a gold-answer column (``answer``) and an image-list column (``images``).
An image entry is a file path (relative paths resolve against ``data.image_root``, or the
data file's folder), a ``{"bytes": ..., "path": ...}`` record (how Hugging Face datasets
store images in parquet) or raw bytes. As in MMR1, each image is rescaled into
``[min_pixels, max_pixels]`` keeping its aspect ratio, converted to RGB, and the system
prompt is joined before the question with one space.

Files: ``.jsonl`` (one row per line), ``.json`` (a list of rows), ``.parquet`` (needs
pyarrow: ``pip install 'genrl[vlm]'``), or folders holding such files. Everything is checked
at start-up (columns, placeholders vs images, every image decoded in full and checked against
the Qwen-VL processor's own size rule) so a bad row fails before any training, naming its file
and row. Only the checks run up front: the pixels are decoded again when a prompt is drawn, so
a large pool costs no memory.

Evaluation answers ``data.val_files`` with greedy decoding (and one sampled response per
question when ``eval.sample_temperature > 0``) through the policy's own sampler, scored by
the ``accuracy`` and ``format`` rewards, and writes the same ``eval/step-XXXXXX/`` files
as ``digit_sum`` (``genrl.tasks.response``). With ``data.response_key`` set, each row's target
response is read too, and the task serves SFT (``trainer: sft``, ``task: vlm_data``): the MMR1
cold start on chain-of-thought answers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from genrl.media import describe_ref, open_image
from genrl.registry import TASKS
from genrl.tasks.response import ResponseTask
from genrl.tasks.rows import LOCATION, expand_data_paths, image_refs, read_rows
from genrl.vlm_batching import user_message
from rewards.verifiable import ANSWER_TYPES

# ----------------------------------------------------------------------------- images


def resize_into(image, min_pixels: int, max_pixels: int):
    """MMR1/EasyR1's rescaling: shrink above ``max_pixels``, grow below ``min_pixels``
    (aspect ratio kept), then RGB."""
    for limit, too_far in ((max_pixels, lambda a: a > max_pixels), (min_pixels, lambda a: a < min_pixels)):
        area = image.width * image.height
        if too_far(area):
            f = math.sqrt(limit / area)
            image = image.resize((max(1, int(image.width * f)), max(1, int(image.height * f))))
    return image if image.mode == "RGB" else image.convert("RGB")


def check_processor_size(height: int, width: int) -> None:
    """The Qwen-VL image processors' own size rule, checked by calling their own function
    (``transformers``' Qwen2-VL ``smart_resize``, which Qwen2.5-VL and Qwen3-VL use too): an
    absolute aspect ratio of 200 or more is a ``ValueError``. The factor and pixel bounds passed
    do not change what it refuses."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    if min(height, width) < 1:
        raise ValueError(f"image of {width}x{height} pixels is empty")
    smart_resize(height, width)


class RowImages(Sequence):
    """The images of one row, decoded on access (a ``Sequence`` of PIL images)."""

    def __init__(self, refs: list, where: str, min_pixels: int, max_pixels: int):
        self.refs, self.where = refs, where
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.sizes: list[tuple[int, int]] | None = None  # (height, width) of each image as fed, set by check()

    def __len__(self) -> int:
        return len(self.refs)

    def check(self) -> None:
        """Decode every image in full and run the size rule the Qwen-VL image processors apply
        later (:func:`check_processor_size`), so a file that would stop training at a random later
        step stops it now; raises ``ValueError`` naming the row, the image and the file."""
        sizes = []
        for i in range(len(self)):
            im = self[i]  # full decode + resize_into, as a rollout would
            sizes.append((im.height, im.width))
            try:
                check_processor_size(im.height, im.width)
            except ValueError as e:
                raise ValueError(
                    f"{self.where}: image {i} ({describe_ref(self.refs[i])}, {im.width}x{im.height} after "
                    f"data.min_pixels / max_pixels) cannot be fed to the Qwen-VL processor: {e}"
                ) from None
        self.sizes = sizes

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return resize_into(open_image(self.refs[i], f"{self.where}: image {i}"), self.min_pixels, self.max_pixels)


# ----------------------------------------------------------------------------- row values


def _text(row: dict, column: str, option: str, where: str) -> str:
    """A column that must hold non-empty text (the question, a target response)."""
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        got = "empty text" if isinstance(value, str) else "null" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"{where}: column {column!r} ({option}) must hold non-empty text, got {got}")
    return value


def _answer(value, column: str, where: str, listed: bool = False) -> str | list[str]:
    """The gold answer as text, or a list of accepted answers (the verifiable rewards take any of
    them): text, a finite number, or a non-empty list of those. ``ValueError`` naming the row for
    anything else (null, NaN, empty text, a mapping), which ``str()`` would turn into a wrong answer."""
    if isinstance(value, (list, tuple)) and not listed:
        if not value:
            raise ValueError(f"{where}: column {column!r} (data.answer_key) is an empty list")
        return [_answer(v, column, where, listed=True) for v in value]
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise ValueError(
        f"{where}: column {column!r} (data.answer_key) must hold the gold answer as text, a finite number "
        f"or a list of them, got {'null' if value is None else repr(value)}"[:300]
    )


def _check_images_only(row: dict, question: str, where: str) -> None:
    """Video prompts are not read: a ``<video>`` placeholder or a ``videos`` column would otherwise
    train on the text alone."""
    if "<video>" in question or row.get("videos") or row.get("video"):
        raise ValueError(
            f"{where}: the row holds a video (a <video> placeholder or a videos column); vlm_data reads "
            "images only: give its frames as images, or drop the row"
        )


# ----------------------------------------------------------------------------- the task


@TASKS.register("vlm_data", required=("data.train_files",))
class VLMDataTask(ResponseTask):
    """Prompts, gold answers and images from local files (``data:`` config section)."""

    name = "vlm_data"

    def __init__(self, data_cfg):
        self.cfg = data_cfg
        self._train = self._load(data_cfg.train_files, "data.train_files")
        if data_cfg.max_rows:
            self._train = self._train[: data_cfg.max_rows]
        self._val = self._load(data_cfg.val_files, "data.val_files") if data_cfg.val_files else []

    @classmethod
    def from_config(cls, cfg) -> "VLMDataTask":
        if not cfg.data.train_files:
            raise ValueError("task vlm_data needs data.train_files (local .jsonl/.json/.parquet files or folders)")
        return cls(cfg.data)

    def _load(self, paths: Sequence[str], key: str) -> list[dict]:
        c = self.cfg
        items = []
        for path in expand_data_paths(paths, key=key):
            root = os.path.expanduser(c.image_root) if c.image_root else os.path.dirname(os.path.abspath(path))
            rows = read_rows(path)
            for where, row in rows:  # where: path:LINE (.jsonl) or path row N
                targets = [c.response_key] if c.response_key and key == "data.train_files" else []
                needed = (c.prompt_key, c.answer_key, *targets)
                missing = [k for k in needed if k not in row]
                if missing:
                    raise ValueError(
                        f"{where}: missing column(s) {missing} ({key}); the row has {sorted(row)} "
                        f"(set data.prompt_key / data.answer_key / data.response_key)"
                    )
                question = _text(row, c.prompt_key, "data.prompt_key", where)
                images = RowImages(image_refs(row.get(c.image_key), root, where), where, c.min_pixels, c.max_pixels)
                _check_images_only(row, question, where)
                try:  # the policy's own message builder checks placeholders against images
                    user_message(question, len(images))
                except ValueError as e:
                    hint = [k for k in ("image", "images", "img") if k != c.image_key and row.get(k)]
                    hint = f" (the row has a column {hint[0]!r}: set data.image_key={hint[0]})" if hint else ""
                    raise ValueError(f"{where}: {e}{hint}") from None
                images.check()
                answer_type = c.answer_type or row.get("answer_type") or None
                if answer_type not in (None, *ANSWER_TYPES):
                    raise ValueError(
                        f"{where}: column 'answer_type' is {answer_type!r}; valid: {', '.join(ANSWER_TYPES)} "
                        "(or set data.answer_type for every row)"
                    )
                choices = row.get("choices")
                if choices is not None and not isinstance(choices, (dict, list, tuple)):
                    raise ValueError(f"{where}: column 'choices' must be a list or a letter -> option mapping")
                items.append(
                    {
                        "question": question,
                        "prompt": f"{c.system_prompt.strip()} {question}" if c.system_prompt.strip() else question,
                        "answer": _answer(row[c.answer_key], c.answer_key, where),
                        "answer_type": answer_type,
                        "choices": choices,
                        "images": images,
                        "source": where,
                        "response": _text(row, c.response_key, "data.response_key", where) if targets else None,
                    }
                )
            if not rows:
                raise ValueError(f"{path} ({key}) holds no rows")
        return items

    def item_metadata(self, item: dict) -> dict:
        m = {"answer": item["answer"], "images": item["images"], LOCATION: item["source"]}
        if item["answer_type"]:
            m["answer_type"] = item["answer_type"]
        if item["choices"]:
            m["choices"] = item["choices"]
        return m

    def train_prompts(self) -> list[tuple[str, dict]]:
        return [(it["prompt"], self.item_metadata(it)) for it in self._train]

    def eval_examples(self, n: int) -> list[tuple[str, dict, dict]]:
        """The first ``n`` validation rows (none without ``data.val_files``)."""
        return [
            (
                it["prompt"],
                self.item_metadata(it),
                {"source": it["source"], "question": it["question"], "answer": it["answer"]},
            )
            for it in self._val[:n]
        ]

    def sft_rows(self) -> list[tuple[str, dict, str]]:
        """Every training row with its ``data.response_key`` target: what the SFT trainer checks at start-up
        (``genrl.vlm_batching.check_vlm_prompts``)."""
        return [
            (it["prompt"], self.item_metadata(it), it["response"]) for it in self._train if it["response"] is not None
        ]

    def sft_examples(self, n: int, generator: torch.Generator) -> list[tuple[str, dict, str]]:
        """``n`` training rows drawn uniformly with ``generator``, with their ``data.response_key`` column."""
        if not self.cfg.response_key:
            raise ValueError(
                "SFT on task vlm_data needs data.response_key: the column holding each row's target response"
            )
        picks = torch.randint(0, len(self._train), (n,), generator=generator).tolist()
        return [
            (self._train[i]["prompt"], self.item_metadata(self._train[i]), self._train[i]["response"]) for i in picks
        ]


__all__ = ["RowImages", "VLMDataTask", "resize_into"]
