"""``task: preference_data``: winning samples (images or videos) from local files, for the
preference trainer.

SePPO trains on ``(prompt, winning image or video)`` pairs only (arXiv 2410.05255: Pick-a-Pic v2's
preferred images for SD1.5); this task reads them from ``.jsonl`` / ``.json`` / ``.parquet`` rows
(``genrl.tasks.rows``) with a prompt column and one winner per row:

* ``data.image_key`` (default ``image``): a path relative to the data file or ``data.image_root``,
  bytes, or a ``{"bytes": ..., "path": ...}`` record as Hugging Face stores images;
* ``data.video_key`` (default ``video``): a video file (``.mp4`` ...; decord or PyAV), an animated
  GIF / WebP, or a list of frame images (two frames at least), for video families (Wan,
  HunyuanVideo-1.5); a row holding both columns gives its video;
* or the pair columns of a preference dataset: ``data.choice_keys`` names the candidates and
  ``data.label_keys`` their labels, and the winner is the candidate with the strictly highest label
  (Pick-a-Pic v2 as published: ``choice_keys: [jpg_0, jpg_1]``, ``label_keys: [label_0, label_1]``,
  ``prompt_key: caption``); ties are skipped, and counted in the start-up message.

Reading the files checks every row's columns and that its files exist; the trainer's start-up check
(:meth:`PreferenceDataTask.check_sample_shape`) decodes every image or video in full and checks its
kind (image or video) against the model's, so a bad row fails before training, naming its file and
row. ``genrl gallery`` reads the files as training does (a winner deleted since is refused, naming its
row, unless ``--prompts`` are given) but decodes nothing: it needs only the prompts. A drawn winner is converted to RGB (grayscale for a
one-channel model such as the digits one), centre-cropped to the model's aspect ratio and resized
to the model's sample size (bicubic); a video keeps the model's frame count at evenly spaced frames
(``genrl.media``). Evaluation samples
the first ``data.max_eval_prompts`` prompts with fixed seeds (``genrl.evaluation.evaluate_images``);
there is no judge, so it reports only what the run's rewards measure (none in preference training)
and writes the samples for ``genrl gallery``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import torch

from genrl.media import fit_image, fit_video, open_rgb, read_frames
from genrl.registry import TASKS
from genrl.tasks.rows import LOCATION, expand_data_paths, image_refs, read_rows


def _label(row: dict, key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: column {key!r} (data.label_keys) must hold a number (a finite one), got {value!r}")
    return float(value)


@TASKS.register("preference_data", required=("data.train_files",))
class PreferenceDataTask:
    """Winning samples from local files (``data:`` section, ``PreferenceDataConfig``)."""

    name = "preference_data"

    def __init__(self, data_cfg):
        self.cfg = data_cfg
        self.rows: list[tuple[str, Any, str, bool]] = []  # (prompt, image or video ref, where, is_video)
        ties = 0
        for path in expand_data_paths(data_cfg.train_files, key="data.train_files"):
            root = os.path.expanduser(data_cfg.image_root) if data_cfg.image_root else os.path.dirname(path)
            rows = read_rows(path)
            if not rows:
                raise ValueError(f"{path} (data.train_files) holds no rows")
            for where, row in rows:  # where: path:LINE (.jsonl) or path row N
                prompt = row.get(data_cfg.prompt_key)
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"{where}: no non-empty string column {data_cfg.prompt_key!r} (data.prompt_key)")
                winner = self._winner(row, root, where)
                if winner is None:
                    ties += 1
                    continue
                self.rows.append((prompt.strip(), *winner))
                if data_cfg.max_rows and len(self.rows) >= data_cfg.max_rows:
                    break
            if data_cfg.max_rows and len(self.rows) >= data_cfg.max_rows:
                break
        if not self.rows:
            raise ValueError(f"data.train_files: no winners ({ties} rows tied)")
        if ties:
            print(f"preference_data: {len(self.rows)} winners, {ties} tied rows skipped")

    def _winner(self, row: dict, root: str, where: str) -> Optional[tuple[Any, str, bool]]:
        """(ref, where, is_video) of the row's winner (not decoded: ``check_sample_shape`` does); None for a tie."""
        c = self.cfg
        if c.choice_keys:
            labels = [_label(row, k, where) for k in c.label_keys]
            best = max(labels)
            if labels.count(best) > 1:
                return None
            key, video = c.choice_keys[labels.index(best)], False
        elif row.get(c.video_key) is not None:
            key, video = c.video_key, True
        elif row.get(c.image_key) is not None:
            key, video = c.image_key, False
        else:
            raise ValueError(
                f"{where}: no column {c.image_key!r} (data.image_key) or {c.video_key!r} (data.video_key)"
            )
        entry = row.get(key)
        if video and isinstance(entry, (list, tuple)):  # frame images
            ref = image_refs(list(entry), root, where, "frame")
        else:
            refs = image_refs(entry, root, where, "video" if video else "image")
            if len(refs) != 1:
                raise ValueError(f"{where}: column {key!r} must hold one {'video' if video else 'image'}")
            ref = refs[0]
        return ref, where, video

    @classmethod
    def from_config(cls, cfg) -> "PreferenceDataTask":
        if not cfg.data.train_files:
            raise ValueError("task preference_data needs data.train_files (.jsonl/.json/.parquet files or folders)")
        return cls(cfg.data)

    def check_sample_shape(self, shape: tuple[int, ...]) -> None:
        """The trainer's start-up check against the model's sample shape (``(C, H, W)`` or
        ``(F, C, H, W)``): every winner is of the model's kind (image or video) and decodes in full, and
        the model samples RGB (C = 3) or grayscale (C = 1, e.g. the digits model) that winners can be
        converted to. ``ValueError`` naming the first row that does not fit or cannot be read."""
        model_video = len(shape) == 4
        if shape[-3] not in (1, 3):
            raise ValueError(f"preference_data fits winners to RGB or grayscale models; this one samples {shape}")
        for _, _, where, video in self.rows:
            if video != model_video:
                kind = "a video" if video else "an image"
                raise ValueError(
                    f"{where}: the winner is {kind}, but the model samples {'videos' if model_video else 'images'}"
                )
        for _, ref, where, video in self.rows:  # decoded in full once: a bad file fails before training
            if not video:
                open_rgb(ref, where)
            elif len(read_frames(ref, where)) < 2:  # a still image would teach the model a motionless clip
                raise ValueError(f"{where}: the video winner has one frame (a still image?); videos need 2 or more")

    def preference_batch(
        self, n: int, generator: torch.Generator, shape: Optional[tuple[int, ...]] = None
    ) -> tuple[list[str], torch.Tensor]:
        """``n`` rows drawn uniformly with ``generator``: (prompts, winners in ``[0, 1]`` fitted to
        ``shape``, the model's sample shape: images ``[n, C, H, W]`` for ``(C, H, W)``, videos
        ``[n, F, C, H, W]`` for ``(F, C, H, W)``; C = 1 converts to grayscale). ``ValueError`` as
        :meth:`check_sample_shape`, which the trainer runs on every row at start-up."""
        if shape is None:
            raise ValueError("preference_data needs the model's sample shape to fit its winners to")
        idx = torch.randint(0, len(self.rows), (n,), generator=generator).tolist()
        mode = "L" if shape[-3] == 1 else "RGB"
        out = []
        for i in idx:
            _, ref, where, video = self.rows[i]
            if video != (len(shape) == 4) or shape[-3] not in (1, 3):
                self.check_sample_shape(shape)
            out.append(
                fit_video(read_frames(ref, where), *shape[:1], *shape[-2:], mode=mode)
                if video
                else fit_image(open_rgb(ref, where, mode), *shape[-2:])
            )
        return [self.rows[i][0] for i in idx], torch.stack(out)

    # --- evaluation (PromptTask): fixed-seed samples of the first prompts, for the gallery
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(row[0] for row in self.rows))[: self.cfg.max_eval_prompts]

    def metadata(self, prompt: str) -> dict:
        return {}

    def train_prompts(self) -> list[tuple[str, dict]]:
        """Each distinct prompt once, with the file and line of its first row (``{LOCATION: "file:LINE"}``,
        named by start-up checks)."""
        first = {}
        for prompt, _, where, _ in self.rows:
            first.setdefault(prompt, where)
        return [(p, {LOCATION: where}) for p, where in first.items()]

    def eval_rewards(self) -> dict:
        return {}

    def eval_metrics(self, images, prompts, metadata=None) -> dict[str, float]:
        return {}

    def evaluate(self, policy, rewards, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        from genrl.evaluation import evaluate_images

        return evaluate_images(policy, self, rewards, eval_cfg, run_dir, step)


__all__ = ["PreferenceDataTask"]
