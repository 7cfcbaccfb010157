"""SAGE-GRPO: the moving anchor (every anchor_period optimizer steps, restored on resume), the
anchor forward that leaves the gradient graph intact, and the sage_grpo objective in a run."""

import json

import pytest
import torch

from genrl.checkpoint import latest_checkpoint, load_checkpoint
from genrl.config import ObjectiveConfig
from genrl.ema import Anchor
from genrl.registry import OBJECTIVES


def test_anchor_moves_exactly_every_period():
    lin = torch.nn.Linear(2, 1)
    anchor = Anchor(dict(lin.named_parameters()), period=3)
    history = {}
    for step in range(1, 8):
        with torch.no_grad():
            lin.weight += 1.0
        anchor.step()
        history[step] = lin.weight.detach().clone()
        expected = 3 * (step // 3)
        assert anchor.moved_at == expected
        want = history[expected] if expected else torch.zeros_like(lin.weight) + (lin.weight - step)
        torch.testing.assert_close(anchor.weights["weight"], want)


def test_anchor_forward_uses_the_anchor_weights_and_keeps_the_graph():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    anchor = Anchor(dict(lin.named_parameters()), period=1)
    x = torch.randn(4, 3)
    y = lin(x).sum()  # a gradient forward first ...
    with torch.no_grad():
        lin.weight += 1.0  # (the live weights now differ from the anchor copy)
    x2 = torch.randn(4, 3)
    ref = anchor.view(lin)(x2)  # ... then the anchor forward, as the policies do
    torch.testing.assert_close(ref, x2 @ anchor.weights["weight"].T + anchor.weights["bias"])
    y.backward()  # no in-place change to saved tensors: backward still works
    torch.testing.assert_close(lin.weight.grad, x.sum(0, keepdim=True))


def test_sage_grpo_needs_the_equaliser_scale():
    with pytest.raises(ValueError, match="grad_scale"):
        OBJECTIVES.get("sage_grpo")(
            torch.zeros(2, 3),
            torch.zeros(2, 3),
            torch.ones(2),
            torch.ones(2, 3),
            {},
            ObjectiveConfig(name="sage_grpo"),
        )


def test_dual_trust_region_run_resumes_with_its_anchor(tmp_path):
    """sage steps, sage_grpo with the anchor KL: 3 steps straight vs 2 + 1 resumed give the same
    weights and the same anchor (2 optimizer steps per RL step, anchor every 3)."""
    from test_train_e2e import _cfg

    from genrl.tasks.digits import pretrain
    from genrl.trainers.online import train

    base = pretrain(tmp_path / "base", steps=5, progress=False)
    extra = [
        "policy.sde=sage",
        "policy.eta=0.5",
        "objective.name=sage_grpo",
        "objective.beta=0.1",
        "objective.anchor_period=3",
        "eval.every=0",
        "checkpoint.every=1",
    ]
    train(_cfg(tmp_path / "straight", base, "max_steps=3", *extra))
    train(_cfg(tmp_path / "resumed", base, "max_steps=2", *extra))
    train(_cfg(tmp_path / "resumed", base, "max_steps=3", *extra))
    a = load_checkpoint(latest_checkpoint(str(tmp_path / "straight" / "checkpoints")))
    b = load_checkpoint(latest_checkpoint(str(tmp_path / "resumed" / "checkpoints")))
    assert a["anchor"]["optimizer_steps"] == 6 and a["anchor"]["moved_at"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["anchor"]["weights"][k], b["anchor"]["weights"][k]) for k in a["anchor"]["weights"])
    assert all(torch.equal(a["anchor"]["weights"][k], a["model"][k]) for k in a["model"])  # moved at the last step
    rows = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl") if "loss/kl_step" in line]
    assert [r["train/anchor_moved_at"] for r in rows] == [0, 3, 6]
    assert rows[0]["loss/kl"] >= 0 and rows[0]["grad/scale_mean"] > 0


def test_flow_policy_reports_the_output_gradient_of_each_step():
    from conftest import get_dummy_pipeline

    from genrl.config import PolicyConfig
    from genrl.policies.flow import FlowPolicy

    policy = FlowPolicy(PolicyConfig(model="unused", sde="sage", eta=0.5, num_steps=4), get_dummy_pipeline())
    traj = policy.rollout(
        ["a handwritten digit one"] * 2, [{}, {}], [0, 0], torch.Generator().manual_seed(0), [0, 1, 2]
    )
    lp, _ = policy.log_prob(traj, slice(0, 3))
    lp[:, 1].sum().backward()  # only step 1 in the loss
    norms = policy.output_grad_norms()
    assert set(norms) == {0, 1, 2} and norms[0] == 0 and norms[2] == 0 and norms[1] > 0
    assert policy.output_grad_norms() == {}  # read once per backward
    assert torch.equal(traj.step_info["grad_scale"][0], traj.step_info["grad_scale"][1])  # per step, same per sample
