"""Several rewards in one run: options per reward, weighted sums, MixGRPO-style advantage sums."""

import pytest
import torch

from genrl.advantages import group_advantages, weighted_advantages
from genrl.config import ConfigError, OnlineConfig, config_from_dict
from genrl.scoring import build_rewards, combine


class Scaled:
    """A plain callable reward with one option."""

    def __init__(self, factor: float = 1.0):
        self.factor = factor

    def __call__(self, samples, prompts, metadata=None):
        return {"scaled": self.factor * samples.flatten(1).mean(1)}


def test_reward_args_reach_the_constructor_and_unknown_options_fail():
    rewards = build_rewards({"scaled": Scaled}, {"scaled": {"factor": 3.0}})
    assert rewards["scaled"].factor == 3.0
    with pytest.raises(ValueError, match=r"reward_args.scaled: unknown option\(s\) \['fator'\]; valid: factor"):
        build_rewards({"scaled": Scaled}, {"scaled": {"fator": 3.0}})


def test_reward_args_config_and_dotted_overrides():
    cfg = config_from_dict(
        OnlineConfig,
        {"rewards": {"digits": 1.0, "clip": 0.5}},
        ["reward_args.clip.model=ViT-B-32", "reward_args.clip.pretrained=openai", "advantages.combine=advantages"],
    )
    assert cfg.reward_args == {"clip": {"model": "ViT-B-32", "pretrained": "openai"}}
    assert cfg.advantages.combine == "advantages"
    with pytest.raises(ConfigError, match="reward_args.pickscore"):
        config_from_dict(OnlineConfig, {"reward_args": {"pickscore": {"scale": 26}}})
    with pytest.raises(ConfigError, match="advantages.combine"):
        config_from_dict(OnlineConfig, {"advantages": {"combine": "sum"}})


def test_weighted_advantages_ignore_each_rewards_scale():
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    a = torch.tensor([1.0, 2.0, 3.0, 0.0, 1.0, 0.0])
    b = torch.tensor([5.0, 1.0, 2.0, 2.0, 2.0, 4.0])
    mixed = weighted_advantages({"a": a, "b": b}, {"a": 1.0, "b": 0.5}, groups)
    expected = group_advantages(a, groups)[0] + 0.5 * group_advantages(b, groups)[0]
    torch.testing.assert_close(mixed, expected)
    # multiplying one reward by 1000 changes the summed-reward advantages, not the mixed ones
    big = {"a": a, "b": 1000 * b}
    torch.testing.assert_close(weighted_advantages(big, {"a": 1.0, "b": 0.5}, groups), mixed, atol=1e-3, rtol=1e-4)
    summed = group_advantages(combine(big, {"a": 1.0, "b": 0.5}), groups)[0]
    assert not torch.allclose(summed, mixed, atol=0.1)
    # a sample whose reward failed contributes nothing
    a_nan = a.clone()
    a_nan[1] = float("nan")
    out = weighted_advantages({"a": a_nan, "b": b}, {"a": 1.0, "b": 0.5}, groups)
    assert out[1] == 0 and torch.isfinite(out).all()


def test_chunk_scorer_scores_in_a_worker_thread_in_submission_order():
    import threading

    from genrl.scoring import ChunkScorer

    threads = []

    def reward(samples, prompts, metadata=None):
        threads.append(threading.current_thread().name)
        return {"r": samples.sum(1)}

    chunks = [torch.arange(6.0).view(3, 2) + 10 * i for i in range(3)]
    results = {}
    for asynchronous in (True, False):
        scorer = ChunkScorer({"r": reward}, asynchronous)
        for c in chunks:
            scorer.submit(c, ["p"] * 3, [{}] * 3)
        results[asynchronous] = scorer.collect()
        scorer.close()
    torch.testing.assert_close(results[True][0]["r"], torch.cat([c.sum(1) for c in chunks]))
    torch.testing.assert_close(results[True][0]["r"], results[False][0]["r"])
    assert results[True][1] == results[False][1] == {"r": 0}
    assert threads[:3] == ["genrl-reward_0"] * 3 and threads[3:] == [threading.current_thread().name] * 3


def test_the_hackable_digits_proxy_pays_for_ink():
    from genrl.registry import REWARDS

    reward = REWARDS.get("digits_ink")(ink_weight=2.0)
    images = torch.rand(4, 1, 8, 8)
    prompts = ["a handwritten digit three"] * 4
    out = reward(images, prompts)
    plain = REWARDS.get("digits")()(images, prompts)["digits"]
    torch.testing.assert_close(out["digits"], plain)
    torch.testing.assert_close(out["ink"], images.flatten(1).mean(1))
    torch.testing.assert_close(out["digits_ink"], plain + 2.0 * out["ink"])
    brighter = reward((images + 0.5).clamp(0, 1), prompts)
    assert (brighter["ink"] > out["ink"]).all()
    with pytest.raises(ValueError, match="ink_weight"):
        REWARDS.get("digits_ink")(ink_weight=-1.0)
