"""``task: preference_data``: winning samples from local files, for the preference trainer.

SePPO trains on ``(prompt, winning image)`` pairs only (arXiv 2410.05255: Pick-a-Pic v2's preferred
images); this task reads them from ``.jsonl`` / ``.json`` / ``.parquet`` rows (``genrl.tasks.rows``)
with a prompt column and an image column (a path relative to the data file or ``data.image_root``,
bytes, or a ``{"bytes": ..., "path": ...}`` record as Hugging Face stores images). For Pick-a-Pic v2,
keep per row the caption and the image its ``label_0`` / ``label_1`` prefers (ties dropped).

Every row is checked at start-up (columns present, every image decoded in full), so a bad row fails
before training, naming its file and row. A drawn winner is converted to RGB, centre-cropped to the
model's aspect ratio and resized to the model's sample size (bicubic). Evaluation samples the first
``data.max_eval_prompts`` prompts with fixed seeds (``genrl.evaluation.evaluate_images``); there is no
judge, so it reports only what the run's rewards measure (none in preference training) and writes
the samples for ``genrl gallery``. Videos are not read yet.
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional

import numpy as np
import torch

from genrl.registry import TASKS
from genrl.tasks.rows import describe_ref, expand_data_paths, image_refs, read_rows


def _open_rgb(ref, where: str):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
        im.load()
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{where}: image ({describe_ref(ref)}) cannot be read: {e}") from e
    return im.convert("RGB")


def fit_image(im, height: int, width: int) -> torch.Tensor:
    """PIL image -> ``[3, height, width]`` in ``[0, 1]``: centre crop to the aspect ratio, bicubic resize."""
    from PIL import Image

    w, h = im.size
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    im = im.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


@TASKS.register("preference_data", required=("data.train_files",))
class PreferenceDataTask:
    """Winning samples from local files (``data:`` section, ``PreferenceDataConfig``)."""

    name = "preference_data"

    def __init__(self, data_cfg):
        self.cfg = data_cfg
        self.rows: list[tuple[str, Any, str]] = []  # (prompt, image ref, where)
        for path in expand_data_paths(data_cfg.train_files):
            root = os.path.expanduser(data_cfg.image_root) if data_cfg.image_root else os.path.dirname(path)
            rows = read_rows(path)
            if not rows:
                raise ValueError(f"{path} (data.train_files) holds no rows")
            for r, row in enumerate(rows):
                where = f"{path} row {r}"
                prompt = row.get(data_cfg.prompt_key) if isinstance(row, dict) else None
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"{where}: no non-empty string column {data_cfg.prompt_key!r} (data.prompt_key)")
                refs = image_refs(row.get(data_cfg.image_key), root, where)
                if len(refs) != 1:
                    raise ValueError(f"{where}: column {data_cfg.image_key!r} (data.image_key) must hold one image")
                _open_rgb(refs[0], where)  # decoded in full now: a bad file fails before training
                self.rows.append((prompt.strip(), refs[0], where))
                if data_cfg.max_rows and len(self.rows) >= data_cfg.max_rows:
                    break

    @classmethod
    def from_config(cls, cfg) -> "PreferenceDataTask":
        if not cfg.data.train_files:
            raise ValueError("task preference_data needs data.train_files (.jsonl/.json/.parquet files or folders)")
        return cls(cfg.data)

    def preference_batch(
        self, n: int, generator: torch.Generator, size: Optional[tuple[int, int]] = None
    ) -> tuple[list[str], torch.Tensor]:
        """``n`` rows drawn uniformly with ``generator``: (prompts, images ``[n, 3, H, W]`` in
        ``[0, 1]`` at ``size = (H, W)``, the model's sample size)."""
        if size is None:
            raise ValueError("preference_data needs the model's sample size to fit its images to")
        idx = torch.randint(0, len(self.rows), (n,), generator=generator).tolist()
        images = [fit_image(_open_rgb(self.rows[i][1], self.rows[i][2]), *size) for i in idx]
        return [self.rows[i][0] for i in idx], torch.stack(images)

    # --- evaluation (PromptTask): fixed-seed samples of the first prompts, for the gallery
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(p for p, _, _ in self.rows))[: self.cfg.max_eval_prompts]

    def metadata(self, prompt: str) -> dict:
        return {}

    def train_prompts(self) -> list[tuple[str, dict]]:
        return [(p, {}) for p in dict.fromkeys(p for p, _, _ in self.rows)]

    def eval_rewards(self) -> dict:
        return {}

    def eval_metrics(self, images, prompts, metadata=None) -> dict[str, float]:
        return {}

    def evaluate(self, policy, rewards, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        from genrl.evaluation import evaluate_images

        return evaluate_images(policy, self, rewards, eval_cfg, run_dir, step)


__all__ = ["PreferenceDataTask", "fit_image"]
