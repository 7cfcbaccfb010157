"""``task: prompts``: text-to-image / text-to-video prompts from local files, for real models.

Formats (``data:`` section, ``PromptDataConfig``): ``.txt`` with one prompt per line (Flow-GRPO's
``dataset/pickscore/train.txt`` and ``test.txt``), or ``.jsonl`` rows with a prompt key whose
other keys become that prompt's metadata (passed to rewards, e.g. GenEval's object specs, with the
row's file and line under ``genrl.tasks.rows.LOCATION``, which start-up refusals name), or
folders of such files (read in name order); UTF-8, a byte-order mark allowed.
Evaluation samples the first ``max_eval_prompts`` test prompts with fixed seeds through the
ODE sampler and scores them with the run's own rewards (``genrl.evaluation``).
"""

from __future__ import annotations

from typing import Any

from genrl.registry import TASKS
from genrl.tasks.rows import LOCATION, expand_data_paths, loads_json

PROMPT_SUFFIXES = (".txt", ".jsonl")


def read_prompts(paths: list[str], prompt_key: str = "prompt", key: str = "") -> list[tuple[str, dict]]:
    """``(prompt, metadata)`` rows of ``.txt`` / ``.jsonl`` files (or folders of them), in order.
    Files are UTF-8 (a byte-order mark is skipped); empty lines are skipped; a missing file, an
    unknown extension, text that is not UTF-8, a JSON line that ``loads_json`` refuses (invalid, a
    repeated key, nested too deeply) or a row without ``prompt_key`` is an error naming the file (and
    line); ``key``, the config key listing ``paths``, begins the message of a path that is missing or of
    another type."""
    rows: list[tuple[str, dict]] = []
    for path in expand_data_paths(paths, PROMPT_SUFFIXES, "prompt", key):
        try:
            rows += _read_prompt_file(path, prompt_key)
        except UnicodeDecodeError as e:
            raise ValueError(f"prompt file {path!r}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if not rows:
        raise ValueError(f"no prompts in {paths}")
    return rows


def _read_prompt_file(path: str, prompt_key: str) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []
    txt = path.lower().endswith(".txt")
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first prompt
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if txt:
                rows.append((line.strip(), {LOCATION: f"{path}:{n}"}))
                continue
            row = loads_json(line, path, n)
            if not isinstance(row, dict) or not isinstance(row.get(prompt_key), str) or not row[prompt_key].strip():
                raise ValueError(f"{path}:{n}: expected an object with a non-empty string {prompt_key!r}")
            if LOCATION in row:
                raise ValueError(f"{path}:{n}: the key {LOCATION!r} is genrl's (a prompt's file and line); rename it")
            rows.append((row.pop(prompt_key).strip(), {**row, LOCATION: f"{path}:{n}"}))
    return rows


@TASKS.register("prompts", required=("data.train_files",))
class PromptsTask:
    """Prompts from files; evaluation by the run's own rewards (no held-out judge)."""

    name = "prompts"
    data_suffixes = PROMPT_SUFFIXES  # what a folder in data.train_files contributes (resume fingerprints)

    def __init__(self, data):
        self.data = data
        self._train = read_prompts(data.train_files, data.prompt_key, "data.train_files")
        test = read_prompts(data.test_files, data.prompt_key, "data.test_files") if data.test_files else self._train
        self._test = test[: data.max_eval_prompts]
        self._meta = dict(self._train + self._test)

    @classmethod
    def from_config(cls, cfg) -> "PromptsTask":
        if not cfg.data.train_files:
            raise ValueError("task prompts needs data.train_files (.txt or .jsonl prompt files)")
        return cls(cfg.data)

    def prompts(self) -> list[str]:
        """Evaluation prompts."""
        return [p for p, _ in self._test]

    def metadata(self, prompt: str) -> dict:
        return dict(self._meta.get(prompt, {}))

    def train_prompts(self) -> list[tuple[str, dict]]:
        return list(self._train)

    def evaluate(self, policy, rewards, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        from genrl.evaluation import evaluate_images

        return evaluate_images(policy, self, rewards, eval_cfg, run_dir, step)

    def eval_rewards(self) -> dict[str, Any]:
        return {}

    def eval_metrics(self, images, prompts, metadata=None) -> dict[str, float]:
        return {}
