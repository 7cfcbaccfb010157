"""Every registered task and reward implements the written-down interfaces (genrl.protocols)."""

import inspect

import pytest

from genrl.protocols import EmbeddedTask, PromptTask, Reward, Task
from genrl.registry import REWARDS, TASKS


def _members(protocol) -> set[str]:
    return {n for n in protocol.__dict__ if not n.startswith("_")} - {"name"} | (
        set().union(*(_members(b) for b in protocol.__bases__ if b.__name__.endswith("Task")))
    )


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_implements_the_task_protocol(name):
    cls = TASKS.get(name)
    assert cls.name == name
    for member in _members(Task):
        assert callable(getattr(cls, member, None)), (name, member)


@pytest.mark.parametrize(
    "name, protocols",
    [
        ("digits", (PromptTask, EmbeddedTask)),
        ("prompts", (PromptTask,)),
        ("digit_sum", (EmbeddedTask,)),
        ("vlm_data", ()),
    ],
)
def test_tasks_implement_the_protocols_they_are_used_through(name, protocols):
    cls = TASKS.get(name)
    for protocol in protocols:
        missing = [m for m in _members(protocol) if not callable(getattr(cls, m, None))]
        assert not missing, (name, protocol.__name__, missing)
    if PromptTask not in protocols:  # VLM tasks: items are dicts, not prompt strings
        assert not hasattr(cls, "prompts") and not hasattr(cls, "metadata")


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_reward_is_a_callable_class(name):
    cls = REWARDS.get(name)
    assert inspect.isclass(cls) and callable(getattr(cls, "__call__", None))
    params = list(inspect.signature(cls.__call__).parameters)[1:4]
    assert len(params) == 3, (name, params)  # (samples, prompts, metadata)
    from genrl.scoring import SAMPLE_KINDS

    if cls.__module__.startswith("rewards."):  # built-in (tests register their own): what it scores, declared
        assert REWARDS.meta(name).get("samples") in SAMPLE_KINDS, name


def test_isinstance_checks_instances():
    from genrl.tasks.digits import DigitsTask

    task = DigitsTask()
    assert isinstance(task, Task) and isinstance(task, PromptTask) and isinstance(task, EmbeddedTask)
    assert isinstance(lambda samples, prompts, metadata: None, Reward)
