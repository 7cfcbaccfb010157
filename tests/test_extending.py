"""README "Extending genrl": the objective, reward and task examples, run from the README's own
code blocks as a package outside the repository, by import path, in one short training run."""

import json
import os
import re
import shlex

import pytest

from genrl.config import OnlineConfig, load_config, load_trainer_config
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


def readme_train_commands() -> list[list[str]]:
    """The arguments after ``genrl train`` of every command in the README's code blocks (continued
    lines joined, ``&&`` / ``;`` split, comments dropped), those that name a config file."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line):
                m = re.search(r"(?:^|[\s/])genrl train (.*)", part.split(" #")[0].strip())
                args = [a for a in shlex.split(m.group(1)) if not a.startswith("--")] if m else []  # --help-config
                if args and args[0].endswith(".yaml"):
                    commands.append(args)
    return commands


def test_every_genrl_train_command_of_the_readme_passes_the_config_checks(tmp_path, monkeypatch):
    """Two README commands were refused as written (the SD1.5 SePPO one set policy.eta, which the
    preference trainer refuses; the plug-in one left rollout.batch_size at 160 for 5 x 16 samples):
    the tests ran their own overrides. Every command's config now loads as the user types it (the
    README's my_pkg on the path; a model or data file it names need not exist for these checks). The
    `accelerate launch ... -m genrl.cli train` lines are loaded by tests/test_recipes.py."""
    _readme_package(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    commands = readme_train_commands()
    assert len(commands) >= 10 and any("my_pkg.tasks:EvenDigits" in " ".join(c) for c in commands)
    for config, *overrides in commands:
        load_trainer_config(os.path.join(ROOT, config), overrides)


# ----------------------------------------------------------------------------- plug-ins that break their contract

BROKEN = """
import torch

NUMBER = 5

class PlainClass:
    pass

def two_args(samples, prompts):
    return torch.zeros(len(prompts))

def infinite(samples, prompts, metadata):
    return torch.full((len(prompts),), float("inf"))

class NoCall:
    pass

def with_kwargs(samples, prompts, metadata, **options):
    return torch.full((len(prompts),), float(options.get("value", 0.5)))

def needs_scale(samples, prompts, metadata, *, scale):  # an option without a default
    return torch.full((len(prompts),), float(scale))

def claims_total(samples, prompts, metadata):  # an auxiliary key named like the weighted sum
    return {"plugs.broken:claims_total": torch.zeros(len(prompts)), "total": torch.full((len(prompts),), 1000.0)}

def total_metric(lp, lp_old, adv, mask, step_info, config):
    return -(adv[:, None] * lp * mask).sum() / mask.sum(), {"reward/total_mean": -1.0}

def claims_digits(samples, prompts, metadata):  # an auxiliary key named like another reward
    return {"plugs.broken:claims_digits": torch.zeros(len(prompts)), "digits": torch.full((len(prompts),), 100.0)}

def vector_loss(lp, lp_old, adv, mask, step_info, config):
    return (lp * mask).sum(1), {}

def refuses(lp, lp_old, adv, mask, step_info, config):
    raise ValueError("my objective refuses")

def detached_loss(lp, lp_old, adv, mask, step_info, config):
    return (lp * mask).sum().detach(), {}

def raises_key_error(lp, lp_old, adv, mask, step_info, config):
    return {}["my_missing_key"]

def crashes(lp, lp_old, adv, mask, step_info, config):
    raise MemoryError("my objective crashes")  # a crash, not a fault of the plug-in: not a ValueError

def loss_only(lp, lp_old, adv, mask, step_info, config):
    return (lp * mask).mean()

def text_metric(lp, lp_old, adv, mask, step_info, config):
    return (lp * mask).mean(), {"my/note": "abc"}

def step_metric(lp, lp_old, adv, mask, step_info, config):
    return (lp * mask).mean(), {"step": 99}

def tensor_metric(lp, lp_old, adv, mask, step_info, config):
    loss = -(adv[:, None] * lp * mask).sum() / mask.sum()
    return loss, {"my/loss": loss, "my/count": mask.sum()}

def bare_advantages(rewards, group_ids, config):
    return rewards - rewards.mean()

def short_advantages(rewards, group_ids, config):
    return rewards[:2], {}

def two_arg_advantages(rewards, group_ids):
    return rewards - rewards.mean(), {}

class AdvantagesWithoutInit:
    def __call__(self, rewards, group_ids, config):
        return rewards - rewards.mean(), {}

def nan_advantages(rewards, group_ids, config):
    return torch.full_like(rewards, float("nan")), {}

class CountingAdvantages:  # keeps a count across steps, which no checkpoint carried
    def __init__(self, config):
        self.n = 0
    def __call__(self, rewards, group_ids, config):
        self.n += 1
        return (rewards - rewards.mean()) * self.n, {}

def none_stats(rewards, group_ids, config):
    return rewards - rewards.mean(), None

def text_stats(rewards, group_ids, config):
    return rewards - rewards.mean(), {"my/note": "s"}

def strings(cfg):
    return None

class StringPrompts:
    @classmethod
    def from_config(cls, cfg):
        return cls()
    def train_prompts(self):
        return ["a handwritten digit one", "a handwritten digit two"]
    def evaluate(self, *a, **k):
        return {}

from genrl.tasks.digits import DigitsTask

class TaskNeedsArgs(DigitsTask):
    def __init__(self, subset):
        super().__init__()

class TerminatedAtStart(DigitsTask):
    def evaluate(self, policy, rewards, cfg, run_dir, step, seed=0):
        import os, signal, time
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

class EvalFailsLater(DigitsTask):
    def evaluate(self, policy, rewards, cfg, run_dir, step, seed=0):
        if step > 0:
            raise ValueError("the evaluation after step 1 fails")
        return super().evaluate(policy, rewards, cfg, run_dir, step, seed=seed)

class EvalNone(DigitsTask):
    def evaluate(self, *a, **k):
        return None

class EvalText(DigitsTask):
    def evaluate(self, *a, **k):
        return {"eval/x": "text"}

class IntEvalPrompts(DigitsTask):  # evaluation prompts that are no text; the training ones are
    def prompts(self):
        return [1, 2]

    def train_prompts(self):
        return [(p, {"digit": i}) for i, p in enumerate(super().prompts())]

class NoneMetadata(DigitsTask):
    def metadata(self, prompt):
        return None if prompt.endswith("nine") else super().metadata(prompt)

    def train_prompts(self):
        return [(p, {"digit": i}) for i, p in enumerate(super().prompts())]

class NotAFamily:
    def __init__(self, pipe, cfg):
        pass

from genrl.families.digits import DigitsFamily

class ListDecode(DigitsFamily):
    def decode(self, x):
        return list(super().decode(x))

raise_on_import = False
"""


@pytest.fixture(scope="module")
def broken_pkg(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugins")
    (src / "plugs").mkdir()
    (src / "plugs" / "__init__.py").write_text("")
    (src / "plugs" / "broken.py").write_text(BROKEN)
    (src / "plugs" / "explodes.py").write_text("raise RuntimeError('the plug-in is broken')\n")
    return src


def _tiny(tmp_path, base, *extra):
    from conftest import TINY_ONLINE

    return load_config(
        OnlineConfig,
        os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"),
        [
            f"output_dir={tmp_path / 'run'}",
            f"policy.model={base}",
            *TINY_ONLINE,
            "max_steps=1",
            "eval.every=0",
            *extra,
        ],
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (['rewards={"plugs.broken:two_args": 1.0}'], r"rewards.plugs.broken:two_args: two_args cannot be called as"),
        (['rewards={"plugs.broken:NoCall": 1.0}'], r"rewards.plugs.broken:NoCall: class NoCall has no __call__"),
        (
            ["objective.name=plugs.broken:vector_loss"],
            r"objective.name='plugs.broken:vector_loss': the loss must be a 0-d",
        ),
        (["objective.name=plugs.broken:refuses"], r"objective.name='plugs.broken:refuses': my objective refuses"),
        (
            ["objective.name=plugs.broken:detached_loss"],
            r"objective.name='plugs.broken:detached_loss': the loss does not depend on the trained weights",
        ),
        (
            ["objective.name=plugs.broken:raises_key_error"],
            r"objective.name='plugs.broken:raises_key_error' raised KeyError: 'my_missing_key'",
        ),
        (
            ["objective.name=plugs.broken:loss_only"],
            r"returned a 'Tensor' object; an objective returns \(loss, metrics\)",
        ),
        (["objective.name=plugs.broken:text_metric"], r"metric 'my/note' is a str; metrics are numbers"),
        (["objective.name=plugs.broken:step_metric"], r"metric name 'step' is not a name it may log"),
        # found by a newcomer: it replaced the trainer's weighted reward in metrics.jsonl and the progress bar
        (
            ["objective.name=plugs.broken:total_metric"],
            r"total_metric': metric name 'reward/total_mean' is the trainer's own \(reward/, time/, train/, grad/norm",
        ),
        # an option without a default was refused although reward_args gave it
        (
            ['rewards={digits: 1.0, "plugs.broken:needs_scale": 0.5}'],
            r"rewards.plugs.broken:needs_scale: needs the option\(s\) scale, which have no default: give them in "
            r"reward_args.plugs.broken:needs_scale$",
        ),
        (
            ["advantages.estimator=plugs.broken:bare_advantages"],
            r"advantages.estimator='plugs.broken:bare_advantages' returned a 'Tensor' object",
        ),
        (
            ["advantages.estimator=plugs.broken:short_advantages"],
            r"must be a tensor of shape \(8,\), got shape \(2,\)",
        ),
        (
            ["task=plugs.broken:TaskNeedsArgs"],
            r"task='plugs.broken:TaskNeedsArgs' raised TypeError: .*missing 1 required positional argument: 'subset'",
        ),
        (
            ["advantages.estimator=plugs.broken:two_arg_advantages"],
            r"advantages.estimator='plugs.broken:two_arg_advantages' raised TypeError: two_arg_advantages\(\) takes 2",
        ),
        (
            ["advantages.estimator=plugs.broken:AdvantagesWithoutInit"],
            r"advantages.estimator='plugs.broken:AdvantagesWithoutInit' raised TypeError: AdvantagesWithoutInit\(\)",
        ),
        (
            ["advantages.estimator=plugs.broken:nan_advantages"],
            r"nan_advantages': 8 of 8 advantages are NaN or inf where the rewards are finite",
        ),
        (
            ["task=plugs.broken:StringPrompts"],
            r"task='plugs.broken:StringPrompts': train_prompts\(\)\[0\] is 'a handwritten",
        ),
        (["task=plugs.broken:IntEvalPrompts"], r"task='plugs.broken:IntEvalPrompts': prompts\(\)\[0\] is 1; expected"),
        (
            ["task=plugs.broken:NoneMetadata"],
            r"task='plugs.broken:NoneMetadata': metadata\('a handwritten digit nine'\) is a NoneType, not a dict",
        ),
        (
            ["policy.family=plugs.broken:NotAFamily"],
            r"policy.family='plugs.broken:NotAFamily': not a model family \(a subclass of genrl.families.base.Family",
        ),
        (
            ["policy.family=plugs.broken:ListDecode"],
            r"policy.family='plugs.broken:ListDecode': decode\(\) of one sample returned list; expected a float tensor",
        ),
        # found by trying plug-ins: a stateful estimator resumed inexactly, silently; stats and evaluation
        # results of the wrong type were dropped, or failed after the run had trained (a None: a traceback)
        (
            ["advantages.estimator=plugs.broken:CountingAdvantages"],
            r"CountingAdvantages' is a class without state_dict\(\) and load_state_dict\(\): what it keeps",
        ),
        (
            ["advantages.estimator=plugs.broken:none_stats"],
            r"none_stats': the stats must be a dict of name -> number, got a NoneType",
        ),
        (["advantages.estimator=plugs.broken:text_stats"], r"text_stats': metric 'my/note' is a str; metrics are"),
        (["task=plugs.broken:EvalNone"], r"task='plugs.broken:EvalNone': evaluate\(\): the evaluation metrics must"),
        (["task=plugs.broken:EvalText"], r"task='plugs.broken:EvalText': evaluate\(\): metric 'eval/x' is a str"),
        # a plug-in of the wrong kind: TypeErrors of issubclass / inspect.signature at config load
        (['rewards={"plugs.broken:NUMBER": 1.0}'], r"reward 'plugs.broken:NUMBER' is an int, not a function or class"),
        (["policy.name=plugs.broken:NUMBER"], r"policy 'plugs.broken:NUMBER' is an int, not a class \(a subclass"),
        (["policy.name=plugs.broken:two_args"], r"policy 'plugs.broken:two_args' is a function, not a class"),
        (
            ["policy.name=plugs.broken:PlainClass"],
            r"PlainClass': is not a policy class \(a subclass of genrl.policies",
        ),
        (["task=plugs.broken:two_args"], r"task 'plugs.broken:two_args' is a function, not a class"),
        (["advantages.estimator=plugs.broken:NUMBER"], r"estimator 'plugs.broken:NUMBER' is an int, not a function"),
        (
            ["objective.name=plugs.explodes:loss"],
            r"importing module 'plugs.explodes' raised RuntimeError: the plug-in is broken",
        ),
    ],
)
def test_a_plug_in_that_breaks_its_contract_is_named_in_one_error(
    tmp_path, monkeypatch, broken_pkg, base_model, overrides, message
):
    """Found by trying broken plug-ins: these were tracebacks deep in the update, rewards masked on every
    sample, or prompts indexed into single characters. Those found at the first update (after the step-0
    evaluation was written) left a run folder behind, as no other bad input does: it is removed."""
    from genrl.trainers import run_trainer

    monkeypatch.syspath_prepend(str(broken_pkg))
    with pytest.raises(ValueError, match=message):
        run_trainer(_tiny(tmp_path, base_model, *overrides), "online")
    assert not (tmp_path / "run").exists()


def test_plug_in_metrics_and_reward_options_reach_the_run(tmp_path, monkeypatch, broken_pkg, base_model):
    """Tensor metrics were dropped from the logs; options for a function reward taking **kwargs were
    refused; an auxiliary key named like another reward replaced that reward's values in training."""
    monkeypatch.syspath_prepend(str(broken_pkg))
    train(
        _tiny(
            tmp_path,
            base_model,
            "objective.name=plugs.broken:tensor_metric",
            'rewards={digits: 1.0, "plugs.broken:with_kwargs": 0.5, "plugs.broken:claims_digits": 0.0, '
            '"plugs.broken:needs_scale": 0.0, "plugs.broken:claims_total": 0.0}',
            'reward_args={"plugs.broken:with_kwargs": {value: 0.25}, "plugs.broken:needs_scale": {scale: 0.75}}',
        )
    )
    (row,) = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "reward/total_mean" in line]
    assert "my/loss" in row and row["my/count"] > 0
    assert row["reward/plugs.broken:with_kwargs_mean"] == 0.25
    assert row["reward/plugs.broken:needs_scale_mean"] == 0.75
    assert row["reward/total_mean"] < 2  # the weighted sum, not the 1000 of claims_total's "total" key
    assert 0 <= row["reward/digits_mean"] <= 1  # the digits reward's own values, not the 100s


def test_a_plug_in_failing_at_its_first_use_keeps_what_the_folder_held(tmp_path, monkeypatch, broken_pkg, base_model):
    """Into an existing folder: the run's files go (config.yaml, metrics, eval/, tb/), the user's stay."""
    from genrl.trainers import run_trainer

    monkeypatch.syspath_prepend(str(broken_pkg))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="the loss must be a 0-d"):
        run_trainer(_tiny(tmp_path, base_model, "objective.name=plugs.broken:vector_loss"), "online")
    assert os.listdir(tmp_path / "run") == ["notes.txt"]


def test_a_bad_input_error_after_a_training_step_keeps_the_run(tmp_path, monkeypatch, broken_pkg, base_model):
    """The clean-up of a failed start removed a run whose later evaluation failed, training done included.
    The plug-in task's own ValueError now names the setting (it named nothing)."""
    from genrl.trainers import run_trainer

    monkeypatch.syspath_prepend(str(broken_pkg))
    with pytest.raises(ValueError, match="^task='plugs.broken:EvalFailsLater': the evaluation after step 1 fails"):
        run_trainer(_tiny(tmp_path, base_model, "task=plugs.broken:EvalFailsLater", "eval.every=1"), "online")
    assert {"config.yaml", "metrics.jsonl", "eval"} <= set(os.listdir(tmp_path / "run"))


def _snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder``, relative path -> contents."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


@pytest.mark.parametrize("objective, error", [("refuses", ValueError), ("crashes", MemoryError)])
def test_starting_over_that_completes_no_step_puts_the_earlier_run_back(
    tmp_path, monkeypatch, broken_pkg, base_model, capsys, objective, error
):
    """``resume=false`` removed the earlier run at start-up, so a launch that then stopped at its first
    update (bad input, or a crash) left the folder without the run it was asked to replace, and without
    a new one: now the earlier run is set aside until the first step and put back, file for file."""
    from genrl.trainers import run_trainer
    from genrl.trainers.common import EARLIER_RUN

    monkeypatch.syspath_prepend(str(broken_pkg))
    train(_tiny(tmp_path, base_model, "eval.every=1", "log.report_to=[]"))  # no tb/: the failed launch's must go
    run = tmp_path / "run"
    before = _snapshot(run)
    assert any(name.startswith("checkpoints") for name in before) and "eval/step-000001/samples.jsonl" in before
    assert not (run / "tb").exists()
    capsys.readouterr()
    with pytest.raises(error, match=f"my objective {objective}"):
        run_trainer(_tiny(tmp_path, base_model, "resume=false", f"objective.name=plugs.broken:{objective}"), "online")
    out = capsys.readouterr().out
    assert f"set aside in {EARLIER_RUN}/" in out and "put back the earlier run's" in out
    assert _snapshot(run) == before and not (run / EARLIER_RUN).exists()


def test_a_launch_killed_before_its_first_step_leaves_the_earlier_run_to_the_next(tmp_path, base_model, capsys):
    """A launch killed (SIGKILL) after setting the earlier run aside left it in .genrl-earlier-run: the next
    launch, a resume by default, trained from step 0 and removed it after its first step. Now the next launch
    first puts it back (the killed launch's outputs removed) and resumes it; a set-aside killed midway (part
    of the run moved) is put back as well."""
    from genrl.trainers import run_trainer
    from genrl.trainers.common import EARLIER_RUN, PARTIAL, set_aside_earlier_run

    run_trainer(_tiny(tmp_path, base_model, "checkpoint.keep_last=5"), "online")
    run = tmp_path / "run"
    earlier = _snapshot(run)
    names = ["checkpoints", "eval", "final_metrics.json", "config.yaml", "metrics.jsonl", "tb"]
    assert set_aside_earlier_run(str(run)) == names
    assert _snapshot(run / EARLIER_RUN) == earlier and os.listdir(run) == [EARLIER_RUN]
    (run / "config.yaml").write_text("trainer: online\n")  # what the killed launch wrote
    (run / "eval").mkdir()
    capsys.readouterr()
    run_trainer(_tiny(tmp_path, base_model, "checkpoint.keep_last=5", "max_steps=2"), "online")
    out = capsys.readouterr().out
    assert f"put back the earlier run's {', '.join(sorted(names))} in {run}: a launch stopped" in out
    assert f"resuming from {run / 'checkpoints' / 'step-000001'} (step 1)" in out
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000001", "step-000002"]
    assert not (run / EARLIER_RUN).exists()
    # killed while moving: checkpoints moved, the rest still in place
    os.makedirs(run / PARTIAL)
    os.replace(run / "checkpoints", run / PARTIAL / "checkpoints")
    before = _snapshot(run / PARTIAL)
    run_trainer(_tiny(tmp_path, base_model, "checkpoint.keep_last=5", "max_steps=3"), "online")
    assert "put back the earlier run's checkpoints" in capsys.readouterr().out
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000001", "step-000002", "step-000003"]
    assert all(_snapshot(run)[k] == v for k, v in before.items()) and not (run / PARTIAL).exists()


@pytest.mark.parametrize(
    "config", [None, "lr: 1e-4\n", "trainer: my_own\n"], ids=["no config.yaml", "another YAML", "not a trainer"]
)
def test_a_folder_of_the_users_own_files_named_like_a_runs_is_refused(tmp_path, base_model, config):
    """A folder holding the user's own ``eval/`` and ``metrics.jsonl`` (no genrl run's ``config.yaml``) was
    taken for an earlier run: its files were set aside and removed after the first step. Now the launch is
    refused before it writes anything, naming the folder and the files."""
    from genrl.trainers import run_trainer

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "notes.txt").write_text("mine\n")
    (run / "metrics.jsonl").write_text('{"mine": 1}\n')
    if config is not None:
        (run / "config.yaml").write_text(config)
    before = _snapshot(run)
    with pytest.raises(
        ValueError,
        match=r"^output_dir '.*run' holds eval, .*metrics.jsonl, not a genrl run's \(no config.yaml that a run saved\)",
    ):
        run_trainer(_tiny(tmp_path, base_model), "online")
    assert _snapshot(run) == before


def test_sigterm_before_the_first_step_puts_the_earlier_run_back(
    tmp_path, monkeypatch, broken_pkg, base_model, capsys
):
    """SIGTERM (a scheduler's stop) during start-up or the step-0 evaluation ended the process at once (Python's
    default action): a resume=false launch left the earlier run in .genrl-earlier-run. Now it is raised as
    Ctrl-C is, the earlier run is put back and genrl exits 143 with one line."""
    from conftest import TINY_ONLINE

    from genrl.cli import main as cli_main

    monkeypatch.syspath_prepend(str(broken_pkg))
    train(_tiny(tmp_path, base_model, "eval.every=1"))
    run = tmp_path / "run"
    before = _snapshot(run)
    capsys.readouterr()
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    overrides = [f"output_dir={run}", f"policy.model={base_model}", *TINY_ONLINE, "max_steps=1", "eval.every=1"]
    rc = cli_main(["train", config, *overrides, "resume=false", "task=plugs.broken:TerminatedAtStart"])
    out, err = capsys.readouterr()
    assert (
        rc == 143
        and err
        == "genrl train: interrupted (signal 15); a rerun resumes from the newest checkpoint, if there is one\n"
    )
    assert "put back the earlier run's" in out and _snapshot(run) == before


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C while ``genrl`` imported its subcommands' modules (torch: seconds) printed a traceback."""
    import genrl.bench
    from genrl.cli import main as cli_main

    def interrupted(sub):
        raise KeyboardInterrupt

    monkeypatch.setattr(genrl.bench, "add_parser", interrupted)
    monkeypatch.delenv("GENRL_TRACEBACK", raising=False)
    assert cli_main(["train", "--help-config"]) == 130
    assert capsys.readouterr().err == "genrl: interrupted (Ctrl-C) while starting; nothing was run\n"


def test_resuming_a_run_of_another_trainer_is_refused(tmp_path, base_model):
    """An online launch into a folder holding a preference run resumed its checkpoints (the saved config could
    not be read as an online config, so nothing was compared): metrics of two trainers in one file."""
    from genrl.trainers import run_trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("trainer: preference\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss/seppo": 0.5}\n')
    before = _snapshot(run)
    with pytest.raises(ValueError, match=r"holds a trainer: preference run; this config is trainer: online, which"):
        run_trainer(_tiny(tmp_path, base_model), "online")
    assert _snapshot(run) == before


def test_one_folder_through_a_symlink_is_locked_once(tmp_path):
    """The run lock keyed on the absolute path: a second run reaching the folder through a symlink was not
    refused, and removed the first run's files."""
    from genrl.io import run_lock

    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with run_lock(tmp_path / "real"):
        with pytest.raises(ValueError, match="is in use by another run on this machine"):
            with run_lock(tmp_path / "link"):
                pass


def test_an_sft_runs_model_folder_is_its_output(tmp_path):
    """SFT writes ``model/`` into output_dir: a start-over left the earlier run's model beside the new run (an
    ``sft:`` name would load the stale one), and a user's own ``model/`` in the folder was replaced."""
    from genrl.trainers.common import EARLIER_RUN, RUN_CONFIG_HEADER, set_aside_earlier_run

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_text("mine")
    assert set_aside_earlier_run(str(tmp_path), "online") == []  # not an online run's output: left alone
    with pytest.raises(ValueError, match=r"holds model, not a genrl run's"):
        set_aside_earlier_run(str(tmp_path), "sft")
    (tmp_path / "config.yaml").write_text(RUN_CONFIG_HEADER + "trainer: sft\n")
    assert set_aside_earlier_run(str(tmp_path), "sft") == ["config.yaml", "model"]
    assert sorted(os.listdir(tmp_path / EARLIER_RUN)) == ["config.yaml", "model"]
    # which names go aside follows the earlier run's trainer too: an online start-over in an SFT run's folder
    online = tmp_path / "online"
    online.mkdir()
    os.replace(tmp_path / EARLIER_RUN / "model", online / "model")
    (online / "config.yaml").write_text(RUN_CONFIG_HEADER + "trainer: sft\n")
    assert set_aside_earlier_run(str(online), "online") == ["config.yaml", "model"]
    # and an SFT start-over beside an online run's folder holding a model/ of the user's: refused
    (online / "mine").mkdir()
    (online / "mine" / "model").mkdir()
    (online / "mine" / "config.yaml").write_text(RUN_CONFIG_HEADER + "trainer: online\n")
    with pytest.raises(ValueError, match=r"holds model, which a trainer: online run does not write: a run there"):
        set_aside_earlier_run(str(online / "mine"), "sft")


def test_a_set_aside_stopped_at_any_moment_is_settled(tmp_path, capsys):
    """Three windows a newcomer widened with a slowed file system: Ctrl-C or SIGTERM while the earlier run
    was being moved aside left it half moved (no put back); SIGKILL while it was being removed after the
    first step left a half-removed aside that every later launch refused; a run that completed steps without
    logging a row (SFT's log.every) kept the aside after it stopped."""
    from genrl.trainers import discarded_on_bad_input
    from genrl.trainers.common import DROPPED, EARLIER_RUN, PARTIAL, RUN_CONFIG_HEADER, recover_earlier_run

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "config.yaml").write_text(RUN_CONFIG_HEADER + "trainer: online\n")
    before = _snapshot(run)
    with pytest.raises(KeyboardInterrupt), discarded_on_bad_input(str(run)):
        (run / PARTIAL).mkdir()
        os.replace(run / "checkpoints", run / PARTIAL / "checkpoints")  # stopped after the first rename
        raise KeyboardInterrupt
    assert _snapshot(run) == before and "put back the earlier run's checkpoints" in capsys.readouterr().out
    (run / DROPPED).mkdir()  # killed while removing the earlier run: its config already gone
    (run / DROPPED / "final_metrics.json").write_text("{}")
    assert recover_earlier_run(str(run)) == [] and not (run / DROPPED).exists() and _snapshot(run) == before
    with discarded_on_bad_input(str(run)):  # a step done, no row logged: the aside goes when the launch ends
        (run / EARLIER_RUN).mkdir()
        (run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert (run / EARLIER_RUN).exists()  # nothing completed: kept for the next launch to put back
    with discarded_on_bad_input(str(run)):
        (run / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')  # step 1's row (or its checkpoint)
    assert not (run / EARLIER_RUN).exists()


def test_export_and_gallery_name_a_run_set_aside(tmp_path):
    """After a killed start-over, export and gallery said "nothing trained to show yet"."""
    from genrl.run_dir import RunDirError, check_run
    from genrl.trainers.common import EARLIER_RUN

    (tmp_path / EARLIER_RUN).mkdir()
    with pytest.raises(RunDirError, match=r"left the earlier run set aside in .genrl-earlier-run/; rerun genrl train"):
        check_run(str(tmp_path))


def test_rewards_that_return_inf_are_said_so(tmp_path, monkeypatch, broken_pkg, base_model):
    """A reward returning inf (it raised nothing, so no warning) stopped the run with "(the warnings above say
    why ...)", and no warning was above."""
    from genrl.preemption import RunFailed
    from genrl.trainers import run_trainer

    monkeypatch.syspath_prepend(str(broken_pkg))
    with pytest.raises(
        RunFailed,
        match=r"this step failed: 'plugs.broken:infinite' on 8 of 8 \(a reward that raised is named in a warning "
        r"above, with its error; one that returned NaN or inf is not;",
    ):
        run_trainer(_tiny(tmp_path, base_model, 'rewards={"plugs.broken:infinite": 1.0}'), "online")


def test_a_recipe_copied_into_the_output_dir_is_not_taken_for_a_run(tmp_path, base_model):
    """A recipe (a ``trainer:`` key and all) saved as ``RUN/config.yaml`` and trained into RUN was taken for an
    earlier run's config: set aside, then removed, its comments lost. A run's own config.yaml opens with a
    header line; a folder that holds neither that nor a completed step is refused before any model loads."""
    from genrl.trainers import run_trainer

    run = tmp_path / "run"
    run.mkdir()
    recipe = "# my recipe\ntrainer: online\n" + open(os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")).read()
    (run / "config.yaml").write_text(recipe)
    with pytest.raises(ValueError, match=r"^output_dir '.*run' holds config.yaml, not a genrl run's"):
        run_trainer(_tiny(tmp_path, base_model), "online")
    assert (run / "config.yaml").read_text() == recipe and os.listdir(run) == ["config.yaml"]
    (run / ".genrl-earlier-run").mkdir()  # not one genrl set aside: refused, not emptied into the folder
    with pytest.raises(ValueError, match=r"holds .genrl-earlier-run/, which is not an earlier run that genrl set"):
        run_trainer(_tiny(tmp_path, base_model), "online")
    assert (run / "config.yaml").read_text() == recipe


@pytest.mark.parametrize(
    "config", ["configs/digits/flowgrpo.yaml", pytest.param("configs/digits/seppo.yaml", marks=pytest.mark.slow)]
)
def test_an_evaluation_error_on_the_main_process_stops_every_process_in_one_line(
    tmp_path, broken_pkg, base_model, config
):
    """Two processes: the main process's evaluation raised after step 1 and it exited with its one line, while
    the other waited at the next collective and then died with a gloo traceback ("Connection closed by peer")."""
    import subprocess

    from conftest import TINY_ONLINE, TINY_PREFERENCE, two_process_launch

    tiny = TINY_ONLINE if "flowgrpo" in config else TINY_PREFERENCE
    cmd = [*two_process_launch(29861), "-m", "genrl.cli", "train", os.path.join(ROOT, config), *tiny]
    cmd += [f"policy.model={base_model}", "task=plugs.broken:EvalFailsLater", "eval.every=1", "max_steps=2"]
    cmd += ["log.progress_bar=false", f"output_dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, str(broken_pkg)])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("genrl train:")]
    assert proc.returncode != 0 and "Connection closed by peer" not in proc.stderr, proc.stderr[-3000:]
    assert lines == ["genrl train: task='plugs.broken:EvalFailsLater': the evaluation after step 1 fails"], lines


def test_rewards_equal_within_every_group_for_three_steps_are_said_once(tmp_path, monkeypatch, broken_pkg, base_model):
    """A reward constant by construction (VLM policy.max_new_tokens=1 never fits the answer format) gave
    reward/frac_zero_std 1 at every step, zero advantages and no update, with exit 0 and no word."""
    monkeypatch.syspath_prepend(str(broken_pkg))
    with pytest.warns(UserWarning, match=r"equal rewards for 3 steps in a row \(reward/frac_zero_std 1\)") as seen:
        train(_tiny(tmp_path, base_model, "max_steps=4", 'rewards={"plugs.broken:with_kwargs": 1.0}'))
    assert sum("equal rewards for" in str(w.message) for w in seen) == 1  # once per streak, not every step after
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "reward/frac_zero_std" in line]
    assert [r["reward/frac_zero_std"] for r in rows] == [1.0] * 4


def test_a_name_registered_twice_names_both_entries():
    """A plug-in registering a built-in name was told only "objective 'grpo' is registered twice"."""
    from genrl.registry import OBJECTIVES

    def grpo(*args):
        return None

    with pytest.raises(ValueError, match=r"^objective 'grpo' is registered twice: test_extending\..*grpo takes the "):
        OBJECTIVES.register("grpo")(grpo)
    assert "genrl.objectives" in OBJECTIVES.get("grpo").__module__  # the built-in keeps its name
