"""The recipes in configs/ and the launch lines that run them.

* every YAML under configs/ (but configs/accelerate/) loads and validates with the config class
  `genrl train` picks for it (its `trainer:` key), and names a policy, model family, objective,
  task and rewards that exist, with options each reward's constructor takes;
* the paper recipes carry their header: paper and arXiv id, what is kept and changed, data,
  status, and an `accelerate launch` line for that very file;
* every accelerate config parses with accelerate's own config class and launcher validation and
  has the keys a launch needs;
* every `accelerate launch` line in README.md and in the configs' headers parses with
  accelerate's launcher parser, names files that exist, loads its recipe with its overrides, and
  the recipe's batch divides evenly over the launcher's processes.

No model is loaded: these are checks of files, not runs (the recipes need GPUs and real weights).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from genrl.config import TRAINER_CONFIGS, load_config, trainer_kind

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
# paper settings on real models (issue 6): each has the full header and a README table row
PAPER_DIRS = ("sd35m", "flux", "wan", "hunyuanvideo15", "sd15")
PAPER_RECIPES = [p for p in RECIPES if p.parent.name in PAPER_DIRS]
STATUS = "Status: not run at full size by us (no GPU on the reference machine)"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _load(path: Path, overrides=()):
    kind = trainer_kind(str(path), list(overrides))
    assert kind in TRAINER_CONFIGS, f"{_rel(path)}: trainer {kind!r} is not one of {list(TRAINER_CONFIGS)}"
    return load_config(TRAINER_CONFIGS[kind], path, list(overrides))


def _header(path: Path) -> str:
    """The leading comment block of a YAML file, without the '#' marks."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return "\n".join(lines)


def launch_lines(text: str) -> list[str]:
    """`accelerate launch ...` commands of a text (markdown or a YAML header): backslash
    continuations joined; a command ends at the end of its line or at a closing backtick.
    Only commands that run genrl count (prose may mention the bare words)."""
    text = re.sub(r"\\\n\s*#?\s*", " ", text)  # continuation lines, also inside comment blocks
    found = [" ".join(m.group(0).split()) for m in re.finditer(r"accelerate launch[^`\n]*", text)]
    return [line for line in found if "genrl" in line]


def _parse_launch(line: str):
    from accelerate.commands.launch import launch_command_parser

    argv = shlex.split(line)
    assert argv[:2] == ["accelerate", "launch"], line
    return launch_command_parser().parse_args(argv[2:])


def _cluster_config(path: Path):
    from accelerate.commands.config.config_args import ClusterConfig

    return ClusterConfig.from_yaml_file(str(path))


def check_launch_line(line: str, expect_config: Path | None = None) -> None:
    """Parse with accelerate's launcher, check the files it names, load the recipe with its
    overrides, and check that the recipe's batch divides over the processes."""
    args = _parse_launch(line)
    world = 1
    if args.config_file is not None:
        config_file = ROOT / args.config_file
        assert config_file.is_file(), f"{line!r}: --config_file {args.config_file} does not exist"
        world = _cluster_config(config_file).num_processes
    if args.num_processes is not None:
        world = args.num_processes
    assert args.module and args.training_script == "genrl.cli", f"{line!r}: expected `-m genrl.cli`"
    script_args = list(args.training_script_args)
    assert script_args[:1] == ["train"] and len(script_args) >= 2, f"{line!r}: expected `train CONFIG [key=value ...]`"
    recipe = ROOT / script_args[1]
    assert recipe.is_file(), f"{line!r}: recipe {script_args[1]} does not exist"
    if expect_config is not None:
        assert recipe == expect_config, f"{line!r} launches {script_args[1]}, not {_rel(expect_config)}"
    cfg = _load(recipe, script_args[2:])
    if not hasattr(cfg, "rollout"):  # SFT: no rollout batch to split
        return
    r, t = cfg.rollout, cfg.train
    total = r.prompts_per_step * r.group_size
    assert total % world == 0, f"{line!r}: {total} samples per step over {world} processes"
    local = total // world
    assert r.batch_size >= local or local % r.batch_size == 0, (
        f"{line!r}: {local} samples per process in rollout chunks of {r.batch_size}"
    )
    per_step = t.batch_size * t.gradient_accumulation_steps
    assert local % per_step == 0, (
        f"{line!r}: {local} samples per process do not make whole optimizer steps of {t.batch_size} x {t.gradient_accumulation_steps}"
    )


# ----------------------------------------------------------------------------- recipes


def test_recipes_found():
    assert len(RECIPES) >= 10 and {p.parent.name for p in PAPER_RECIPES} == set(PAPER_DIRS)
    assert len(ACCELERATE) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_recipe_loads_and_validates(path):
    cfg = _load(path)
    assert type(cfg) is TRAINER_CONFIGS[trainer_kind(str(path), [])]


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_recipe_names_are_registered(path):
    from genrl.registry import FAMILIES, OBJECTIVES, POLICIES, REWARDS, TASKS
    from genrl.scoring import check_reward_args

    cfg = _load(path)
    assert cfg.task in TASKS, f"task {cfg.task!r}; registered: {TASKS.names()}"
    if not hasattr(cfg, "policy"):  # SFT
        return
    assert cfg.policy.name in POLICIES, f"policy {cfg.policy.name!r}; registered: {POLICIES.names()}"
    family = getattr(cfg.policy, "family", "auto")
    assert family == "auto" or family in FAMILIES, f"family {family!r}; registered: {FAMILIES.names()}"
    assert cfg.objective.name in OBJECTIVES, f"objective {cfg.objective.name!r}; registered: {OBJECTIVES.names()}"
    for name in getattr(cfg, "rewards", {}):  # a preference recipe trains with none
        assert name in REWARDS, f"reward {name!r}; registered: {REWARDS.names()}"
        check_reward_args({name: REWARDS.get(name)}, cfg.reward_args)  # options known, of their types


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=_rel)
def test_paper_recipe_header(path):
    head = _header(path)
    assert re.search(r"arXiv \d{4}\.\d{4,5}", head), "header names no arXiv id"
    for word in ("Kept", "Changed", "Data:", STATUS):
        assert word in head, f"header lacks {word!r}"
    lines = launch_lines(head)
    assert lines, "header has no `accelerate launch` line"
    for line in lines:
        check_launch_line(line, expect_config=path)


# ----------------------------------------------------------------------------- accelerate configs


@pytest.mark.parametrize("path", ACCELERATE, ids=_rel)
def test_accelerate_config(path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in (
        "compute_environment",
        "distributed_type",
        "num_processes",
        "num_machines",
        "machine_rank",
        "mixed_precision",
        "use_cpu",
    ):
        assert key in raw, f"{_rel(path)} lacks {key}"
    cfg = _cluster_config(path)  # accelerate's own config class: unknown keys and bad enums fail here
    assert cfg.use_cpu is False and cfg.num_processes >= cfg.num_machines >= 1
    assert 0 <= cfg.machine_rank < cfg.num_machines
    if cfg.num_machines > 1:
        assert cfg.main_process_ip and cfg.main_process_port, "a multi-node config needs the main node's address"
        assert cfg.num_processes % cfg.num_machines == 0
    if cfg.distributed_type == DistributedType.NO:
        assert cfg.num_processes == 1
    if cfg.distributed_type == DistributedType.FSDP:
        assert cfg.fsdp_config["fsdp_version"] == 2  # README, "Scaling out": FSDP2, as genrl's own sharding
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        assert cfg.deepspeed_config["zero_stage"] in (1, 2, 3)
    # what `accelerate launch --config_file` does with it before starting any process
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "genrl.cli", "train", "x.yaml"])
    args = _validate_launch_command(args)[0]
    assert args.num_processes == cfg.num_processes and args.num_machines == cfg.num_machines
    assert args.multi_gpu == (cfg.distributed_type == DistributedType.MULTI_GPU)
    assert args.use_fsdp == (cfg.distributed_type == DistributedType.FSDP)  # sets ACCELERATE_USE_FSDP: train.fsdp
    assert args.use_fsdp == (cfg.distributed_type == DistributedType.FSDP)
    assert args.use_deepspeed == (cfg.distributed_type == DistributedType.DEEPSPEED)


@pytest.mark.parametrize("path", ACCELERATE, ids=_rel)
def test_accelerate_header_launch_lines(path):
    for line in launch_lines(_header(path)):
        check_launch_line(line)


# ----------------------------------------------------------------------------- README


README_LINES = launch_lines((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_covers_every_paper_recipe():
    launched = {_parse_launch(line).training_script_args[1] for line in README_LINES}
    missing = [_rel(p) for p in PAPER_RECIPES + [ROOT / "configs/qwen25vl/mmr1_sapo.yaml"] if _rel(p) not in launched]
    assert not missing, f"README.md has no `accelerate launch` line for {missing}"


@pytest.mark.parametrize("line", README_LINES)
def test_readme_launch_line(line):
    check_launch_line(line)


def test_launch_line_checks_catch_mistakes():
    good = "accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m genrl.cli train configs/sd35m/flowgrpo_pickscore.yaml"
    check_launch_line(good)
    with pytest.raises(AssertionError, match="does not exist"):
        check_launch_line(good.replace("multi_gpu.yaml", "multi_gpus.yaml"))
    with pytest.raises(AssertionError, match="does not exist"):
        check_launch_line(good.replace("flowgrpo_pickscore", "flowgrpo_pickscor"))
    with pytest.raises(AssertionError, match="optimizer steps"):  # 1152 / 8 = 144 per process < 9 x 32
        check_launch_line(good + " train.gradient_accumulation_steps=32")
    assert launch_lines(
        "run `accelerate launch` like this:\n```\naccelerate launch --config_file a.yaml \\\n"
        "  -m genrl.cli train b.yaml\n```"
    ) == ["accelerate launch --config_file a.yaml -m genrl.cli train b.yaml"]
