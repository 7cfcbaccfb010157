"""README "Extending genrl": the objective, reward and task examples, run from the README's own
code blocks as a package outside the repository, by import path, in one short training run."""

import json
import os
import re

import pytest

from genrl.config import OnlineConfig, load_config
from genrl.registry import OBJECTIVES, REWARDS, TASKS, import_object
from genrl.tasks.digits import pretrain
from genrl.trainers.online import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_package(tmp_path) -> dict[str, str]:
    """Write every ```python block of the README section that starts with '# my_pkg/<file>.py'."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Extending genrl", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        name = re.fullmatch(r"# (my_pkg/\w+\.py)", first.strip()).group(1)
        files[name] = body
    (tmp_path / "my_pkg").mkdir(parents=True)
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    return files


def test_objective_reward_and_task_from_your_own_package(tmp_path, monkeypatch):
    files = _readme_package(tmp_path / "src")
    assert set(files) == {"my_pkg/losses.py", "my_pkg/rewards.py", "my_pkg/tasks.py"}
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    objective = OBJECTIVES.get("my_pkg.losses:reinforce_capped")
    assert objective is import_object("my_pkg.losses:reinforce_capped") and OBJECTIVES.meta(objective) == {}
    assert "my_pkg.rewards:brightness" in REWARDS and TASKS.get("my_pkg.tasks:EvenDigits").__name__ == "EvenDigits"
    with pytest.raises(ValueError, match="my_pkg.losses:nope.*has no attribute"):
        OBJECTIVES.get("my_pkg.losses:nope")
    with pytest.raises(ValueError, match="reward 'no_such_pkg.x:y': cannot import module 'no_such_pkg.x'"):
        REWARDS.get("no_such_pkg.x:y")

    base = pretrain(tmp_path / "base", steps=5, progress=False)
    run = tmp_path / "run"
    cfg = load_config(
        OnlineConfig,
        os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"),
        [
            f"output_dir={run}",
            f"policy.model={base}",
            "max_steps=2",
            "policy.num_steps=4",
            "rollout.group_size=4",
            "rollout.batch_size=20",
            "train.batch_size=10",
            "eval.seeds_per_prompt=1",
            "eval.every=0",
            "log.progress_bar=false",
            "objective.name=my_pkg.losses:reinforce_capped",
            "task=my_pkg.tasks:EvenDigits",
            "rollout.prompts_per_step=5",
            'rewards={digits: 1.0, "my_pkg.rewards:brightness": 0.1}',
            'reward_args={"my_pkg.rewards:brightness": {scale: 2.0}}',
        ],
    )
    train(cfg)
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert (
            0 < r["reward/my_pkg.rewards:brightness_mean"] <= 2.0 and r["reward/my_pkg.rewards:brightness_failed"] == 0
        )
        assert r["grad/norm"] > 0 and "loss/policy" in r
    prompts = {json.loads(line)["prompt"] for line in open(run / "eval" / "step-000002" / "samples.jsonl")}
    assert len(prompts) == 10  # evaluation on all ten digits; training drew the even ones only
