"""Several rewards in one run: options per reward, weighted sums, MixGRPO-style advantage sums."""

import math

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


@pytest.mark.parametrize(
    "name,args,says",
    [  # each named no key, and came only from the build step
        (
            "clip",
            {"model": "task:moving_digits"},
            "reward_args.clip.model='task:moving_digits': task 'moving_digits' has ",
        ),
        (
            "videoalign",
            {"checkpoint": "task:digits"},
            "reward_args.videoalign.checkpoint='task:digits': task 'digits' has",
        ),
        ("clip", {"model": "task:prompts"}, "reward_args.clip.model='task:prompts': task 'prompts' owns no model"),
        # an SFT run was trained in full, then the reward could not load its model
        (
            "clip",
            {"model": "sft:configs/digit_sum/sft.yaml"},
            "reward_args.clip.model='sft:configs/digit_sum/sft.yaml':",
        ),
        ("videoalign", {"checkpoint": "sft:x.yaml"}, "reward_args.videoalign.checkpoint='sft:x.yaml': an sft: model"),
    ],
)
def test_a_task_model_the_task_does_not_own_is_refused_before_any_build(name, args, says):
    from genrl.registry import REWARDS
    from genrl.scoring import check_reward_args

    with pytest.raises(ValueError) as e:
        check_reward_args({name: REWARDS.get(name)}, {name: args})
    assert str(e.value).startswith(says), str(e.value)


@pytest.mark.parametrize(
    "config,reward,says",
    [  # each failed on every sample, masked as NaN: a run that trained nothing and exited 0
        ("moving_digits/flowgrpo.yaml", "digits", "rewards.digits=1.0: scores images, and policy.model='task:moving"),
        (
            "moving_digits/flowgrpo.yaml",
            "jpeg_compressibility",
            "scores images, and policy.model='task:moving_digits' ",
        ),
        ("digits/flowgrpo.yaml", "moving_digits_gold", "scores videos, and policy.model='task:digits' makes images"),
        ("digits/flowgrpo.yaml", "verifiable", "rewards.verifiable=1.0: scores text, and policy.model='task:digits' "),
        ("digit_sum/grpo.yaml", "clip", "rewards.clip=1.0: scores images, and policy.model='sft:configs/digit_sum/sf"),
    ],
)
def test_a_reward_for_other_samples_than_the_policy_makes_is_refused_with_the_config(config, reward, says):
    from conftest import recipe_refusal

    message = recipe_refusal(config, [f"rewards={{{reward}: 1.0}}", "reward_args={}"])
    assert message.startswith(f"rewards.{reward}=1.0: ") and says in message, message


def test_reward_options_and_the_tasks_judge_are_checked_with_the_config():
    """genrl compare loads every arm's config before any arm trains: a later arm's reward option typo,
    or an sft: reward model (trained first), and a task judging other samples than the policy makes
    (moving_digits' judge on the digits model: NaN at every evaluation, exit 0) are refused there."""
    from conftest import recipe_refusal

    typo = recipe_refusal("digits/flowgrpo.yaml", ["reward_args={digits: {nope: 1}}"])
    assert typo.startswith("reward_args.digits: unknown option(s) ['nope']"), typo
    judged = ["policy.model=task:digits", "rewards={digits: 1.0}", "reward_args={}"]
    message = recipe_refusal(
        "moving_digits/flowgrpo.yaml", [*judged, *(f"policy.{k}=0" for k in ("num_frames", "height", "width"))]
    )
    assert message.startswith(
        "task='moving_digits': its judge 'moving_digits_gold' scores videos, and policy.model='task:digits' makes images"
    ), message


@pytest.mark.parametrize(
    "rewards, args, says",
    [  # each went through to the reward: a TypeError inside it, or a wrong value silently used
        ("jpeg_compressibility", "{quality: high}", "reward_args.jpeg_compressibility.quality='high': expected int"),
        ("jpeg_compressibility", "{quality: 80.5}", "reward_args.jpeg_compressibility.quality=80.5: expected int"),
        ("digits_ink", "{ink_weight: heavy}", "reward_args.digits_ink.ink_weight='heavy': expected float"),
        ("digits_ink", "{device: 0}", "reward_args.digits_ink.device=0: expected str, got int"),
        ("digits_ink", "{ink_weight: .inf}", "reward_args.digits_ink.ink_weight=inf: expected a finite number"),
    ],
)
def test_a_reward_option_of_the_wrong_type_is_refused_with_the_config(rewards, args, says):
    """``reward_args`` values were not checked against the reward's annotations (found by a newcomer:
    ``quality: high`` failed inside the JPEG reward at the first step, masked, a run that trained nothing)."""
    from conftest import recipe_refusal

    message = recipe_refusal(
        "digits/flowgrpo.yaml", [f"rewards={{digits: 1.0, {rewards}: 0.1}}", f"reward_args={{{rewards}: {args}}}"]
    )
    assert message.startswith(says), message


def test_reward_options_are_normalised_by_their_annotations():
    """A plug-in function's options follow the config fields' rules: an int is a float for a ``float``
    option, text is not (``"1e-3"`` quoted; unquoted, genrl's YAML reads it as a float); options without an
    annotation pass as they are."""
    from genrl.scoring import build_rewards, typed_reward_args

    def brightness(samples, prompts, metadata, scale: float = 1.0, mode="mean"):
        return samples.mean((1, 2, 3)) * scale

    assert typed_reward_args("b", brightness, {"scale": 1e-3, "mode": 3}) == {"scale": 0.001, "mode": 3}
    assert typed_reward_args("b", brightness, {"scale": 2}) == {"scale": 2.0}
    assert build_rewards({"b": brightness}, {"b": {"scale": 2}})["b"].keywords == {"scale": 2.0}
    with pytest.raises(ValueError, match=r"^reward_args.b.scale='1e-3': expected float, got str$"):
        typed_reward_args("b", brightness, {"scale": "1e-3"})
    with pytest.raises(ValueError, match=r"^reward_args.b.scale=true: expected float, got bool$"):
        typed_reward_args("b", brightness, {"scale": True})


def test_reward_options_without_a_resolvable_annotation_are_typed_as_far_as_can_be():
    """An unannotated option with a float default received YAML 1.1's ``1e-3`` as text (README's own
    ``brightness``: every sample failed; it is typed by its default, and genrl's YAML now reads ``1e-3`` as
    a float); one annotation its module could not resolve (imported under
    ``TYPE_CHECKING``) switched every check off; a bare ``dict`` (``videoalign.weights``) was not checked."""
    from genrl.registry import REWARDS
    from genrl.scoring import check_reward_args, typed_reward_args

    def brightness(samples, prompts, metadata, scale=1.0, k=3, mode="mean"):
        return samples.mean((1, 2, 3)) * scale

    assert typed_reward_args("b", brightness, {"scale": 2, "k": 4, "mode": 3}) == {"scale": 2.0, "k": 4, "mode": 3}
    with pytest.raises(ValueError, match=r"^reward_args.b.scale='1e-3': expected float, got str$"):
        typed_reward_args("b", brightness, {"scale": "1e-3"})
    with pytest.raises(ValueError, match=r"^reward_args.b.k=2.5: expected int, got float$"):
        typed_reward_args("b", brightness, {"k": 2.5})

    def typed(samples, prompts, metadata, k=1):
        return samples.mean((1, 2, 3))

    typed.__annotations__ = {"samples": "NotImportedHere", "k": "int"}
    with pytest.raises(ValueError, match=r"^reward_args.t.k='many': expected int, got str$"):
        typed_reward_args("t", typed, {"k": "many"})
    videoalign = {"videoalign": REWARDS.get("videoalign")}
    with pytest.raises(ValueError, match=r"^reward_args.videoalign.weights='abc': expected a mapping"):
        check_reward_args(videoalign, {"videoalign": {"weights": "abc"}})
    assert check_reward_args(videoalign, {"videoalign": {"weights": {"VQ": 1}}}) == {
        "videoalign": {"weights": {"VQ": 1}}
    }


def test_reward_options_are_kept_normalised_so_a_resume_compares_values():
    """``ink_weight=1e-4`` was kept as the text ``'1e-4'``: a resume with ``0.0001`` was refused as a change."""
    import os

    from genrl.config import config_differences, load_config

    base = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "digits", "flowgrpo.yaml"
    )
    one, two = (
        load_config(
            OnlineConfig, base, ["rewards={digits: 1.0, digits_ink: 0.1}", f"reward_args.digits_ink.ink_weight={w}"]
        )
        for w in ("1e-4", "0.0001")
    )
    assert one.reward_args == {"digits_ink": {"ink_weight": 0.0001}} and config_differences(one, two) == []


def test_a_reward_class_that_refuses_its_options_is_one_line_naming_them():
    """``quality=500`` named another reward and no key; ``device=<bad>`` was a RuntimeError traceback."""
    from genrl.registry import REWARDS
    from genrl.scoring import build_rewards

    jpeg = {"jpeg_incompressibility": REWARDS.get("jpeg_incompressibility")}
    with pytest.raises(
        ValueError, match=r"^reward_args.jpeg_incompressibility: .*quality must be in \[1, 100\], got 500"
    ):
        build_rewards(jpeg, {"jpeg_incompressibility": {"quality": 500}})
    ink = {"digits_ink": REWARDS.get("digits_ink")}
    with pytest.raises(ValueError, match=r"^reward_args.digits_ink: RuntimeError: .*nonsense"):
        build_rewards(ink, {"digits_ink": {"device": "nonsense"}})


def test_rewards_that_do_not_say_what_they_score_are_not_checked():
    from genrl.registry import REWARDS
    from genrl.scoring import check_reward_samples

    check_reward_samples({"scaled": Scaled}, "videos", "policy.model='x'")  # a user's reward: no samples meta
    check_reward_samples({"digits": REWARDS.get("digits")}, None, "policy.model='org/x'")  # known once loaded
    with pytest.raises(ValueError, match=r"^rewards.digits: scores images, and policy.model='org/x' makes videos"):
        check_reward_samples({"digits": REWARDS.get("digits")}, "videos", "policy.model='org/x'")

    def typo(samples, prompts, metadata=None):
        return {"typo": samples.mean()}

    REWARDS.register("test_typo_samples", samples="image")(typo)  # "images"
    with pytest.raises(
        ValueError, match=r"^rewards.typo: registered with samples='image'; valid: images, videos, text"
    ):
        check_reward_samples({"typo": typo}, None, "policy.model='org/x'")


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


def _faulty(samples, prompts, metadata=None):
    """A reward with an auxiliary key that cannot score a prompt saying "corrupt" (as a decoder on a
    corrupt video) and raises for the whole call then, like any batched reward."""
    if any("corrupt" in p for p in prompts):
        raise RuntimeError("cannot decode")
    return {"r": samples.sum(1), "r_aux": samples.mean(1)}


@pytest.mark.parametrize("bad_chunk", [0, 1])
def test_a_fault_costs_exactly_its_samples_in_every_key_and_chunk(bad_chunk):
    """Issue 16, 8: an auxiliary key of a reward that failed on one chunk crashed the run (KeyError) or
    was dropped; one corrupt video made the whole call NaN."""
    import warnings

    from genrl.scoring import ChunkScorer

    chunks = [torch.arange(6.0).view(3, 2) + 10 * i for i in range(2)]
    prompts = [["p"] * 3, ["p"] * 3]
    prompts[bad_chunk][1] = "corrupt"
    for asynchronous in (True, False):
        scorer = ChunkScorer({"r": _faulty}, asynchronous)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for c, p in zip(chunks, prompts):
                scorer.submit(c, p, [{}] * 3)
            values, failures, _ = scorer.collect()
        scorer.close()
        bad = 3 * bad_chunk + 1
        want = torch.cat([c.sum(1) for c in chunks])
        want[bad] = float("nan")
        torch.testing.assert_close(values["r"], want, equal_nan=True)
        assert set(values) == {"r", "r_aux"} and values["r_aux"][bad].isnan() and values["r_aux"].isnan().sum() == 1
        assert failures == {"r": 1} and any("1 of 3 samples" in str(w.message) for w in caught)


def test_infinite_rewards_are_counted_and_left_out_of_the_means():
    from genrl.scoring import finite_mean, score_samples

    values, failures = score_samples(
        {"r": lambda s, p, m: torch.tensor([1.0, float("inf"), 2.0, float("-inf")])}, None, ["p"] * 4, [{}] * 4
    )
    assert failures == {"r": 2} and finite_mean(values["r"]) == 1.5
    assert math.isnan(finite_mean(torch.tensor([float("nan"), float("inf")])))


def test_the_mean_of_large_finite_rewards_does_not_overflow():
    """float32 holds 3e38: eight rewards of 1e38 summed in float32 overflowed the logged mean to inf
    (written as null)."""
    from genrl.scoring import finite_mean

    assert finite_mean(torch.full((8,), 1e38)) == pytest.approx(1e38, rel=1e-6)


def test_a_non_finite_sample_is_nan_in_every_key_whatever_the_reward_returns():
    """The kind of fault: a reward that converts to uint8 or clamps scores a diverged sample like a
    valid one. Scoring masks such samples itself; the reward sees them as zeros."""
    from genrl.scoring import score_samples

    seen = []

    def brightness(samples, prompts, metadata):
        seen.append(samples.clone())
        return {"brightness": samples.clamp(0, 1).nan_to_num(0.0).mean((1, 2, 3)), "aux": torch.ones(len(samples))}

    x = torch.rand(3, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    x[2, 0, 0, 0] = float("-inf")
    values, failures = score_samples({"brightness": brightness}, x, ["p"] * 3, [{}] * 3)
    assert failures == {"brightness": 2}
    assert values["brightness"][[0, 2]].isnan().all() and values["aux"][[0, 2]].isnan().all()
    assert values["brightness"][1] == pytest.approx(x[1].mean().item()) and values["aux"][1] == 1.0
    assert torch.isfinite(seen[0]).all() and seen[0][0].abs().sum() == 0


@pytest.mark.parametrize(
    "returned", [lambda s: s[:1].mean((1, 2, 3)), lambda s: s.mean((2, 3)), lambda s: {"other": s.mean((1, 2, 3))}]
)
def test_a_reward_that_breaks_the_contract_is_masked_once_not_retried_per_sample(returned):
    """A reward scoring only the first sample (shape [1] for B samples) was retried sample by sample,
    where it passed: ten calls a batch, and the warning said 'failed on 0 of 3 samples ... masked'. A
    wrong shape (or no own key) is the reward's bug: one call, every sample masked, said so."""
    from genrl.scoring import score_samples

    calls = []

    def reward(samples, prompts, metadata):
        calls.append(len(prompts))
        return returned(samples)

    with pytest.warns(UserWarning, match=r"breaks its contract.*all 3 samples masked"):
        values, failures = score_samples({"reward": reward}, torch.rand(3, 1, 4, 4), ["p"] * 3, [{}] * 3)
    assert calls == [3] and failures == {"reward": 3} and values["reward"].isnan().all()


def test_a_batch_that_fails_where_no_sample_alone_does_is_scored_per_sample_and_says_so():
    """E.g. out of memory for the batch: the samples are scored one at a time and none is masked; the
    warning no longer reads 'failed on 0 of 3 samples ...; masked'."""
    from genrl.scoring import score_samples

    def reward(samples, prompts, metadata):
        if len(prompts) > 1:
            raise RuntimeError("out of memory")
        return samples.mean((1, 2, 3))

    x = torch.rand(3, 1, 4, 4)
    with pytest.warns(UserWarning, match=r"failed on the batch of 3 .*none masked"):
        values, failures = score_samples({"reward": reward}, x, ["p"] * 3, [{}] * 3)
    assert failures == {"reward": 0} and torch.allclose(values["reward"], x.mean((1, 2, 3)))


def test_a_contract_error_after_a_failed_batch_is_not_retried_per_sample():
    """A reward that raised on the batch, then returned a 0-d value for one sample, was called once per
    sample, and the warning named the batch's error, never the shape."""
    from genrl.scoring import score_samples

    calls = []

    def reward(samples, prompts, metadata):
        calls.append(len(prompts))
        if len(prompts) > 1:
            raise RuntimeError("batch too big")
        return samples.mean()  # 0-d: the contract wants [1]

    with pytest.warns(UserWarning, match=r"shape \(\) for 1 samples.*breaks its contract.*all 4 samples masked"):
        values, failures = score_samples({"reward": reward}, torch.rand(4, 1, 4, 4), ["p"] * 4, [{}] * 4)
    assert calls == [4, 1] and failures == {"reward": 4} and values["reward"].isnan().all()


def test_a_failing_reward_of_weight_zero_masks_no_sample():
    """A monitor-only reward (weight 0) that failed made every total NaN (0 * NaN), so every sample was masked
    and the run stopped with 'every reward was NaN or failed'; it now takes no part in either combination."""
    from genrl.advantages.common import weighted_advantages
    from genrl.scoring import combine

    values = {"digits": torch.tensor([0.1, 0.9, 0.2, 0.8]), "monitor": torch.full((4,), float("nan"))}
    weights = {"digits": 1.0, "monitor": 0.0}
    assert torch.equal(combine(values, weights), values["digits"])
    groups = torch.tensor([0, 0, 1, 1])
    adv = weighted_advantages(values, weights, groups)
    assert torch.isfinite(adv).all() and torch.equal(adv, weighted_advantages(values, {"digits": 1.0}, groups))
    assert (adv != 0).all()


def test_the_judges_say_what_samples_and_prompts_they_need():
    """The start-up check (``check_rewards_take``) holds the rewards' declared needs against the model's
    sample shape and the task's prompts; before, these failed on every sample and were masked."""
    from genrl.registry import REWARDS
    from genrl.scoring import check_rewards_take
    from genrl.tasks.moving_digits import prompt_for

    gold = {"moving_digits_gold": REWARDS.get("moving_digits_gold")}
    clip_prompts = [(prompt_for(3, "left"), {}), (prompt_for(7, "up"), {})]
    check_rewards_take(gold, (9, 3, 16, 16), clip_prompts)  # the task's own clips
    check_rewards_take(gold, None, clip_prompts)  # no shape known: the prompts only
    with pytest.raises(
        ValueError, match=r"^rewards.moving_digits_gold: scores clips of 2 or more frames .*\(3, 32, 32\)"
    ):
        check_rewards_take(gold, (3, 32, 32), clip_prompts)
    with pytest.raises(
        ValueError, match=r"^rewards.moving_digits_gold: needs a digit and a direction in every prompt"
    ):
        check_rewards_take(gold, (9, 3, 16, 16), [*clip_prompts, ("a handwritten digit seven", {})])
    digits = {"digits": REWARDS.get("digits")}
    check_rewards_take(digits, (1, 8, 8), [("a cat", {"digit": 4})])  # the digit from metadata
    with pytest.raises(ValueError, match=r"^rewards.digits: needs the prompted digit of every prompt"):
        check_rewards_take(digits, (1, 8, 8), [("a cat", {})])


@pytest.mark.parametrize(
    "digit, shown",
    [(None, "None"), (True, "True"), (7.9, "7.9"), ("7", "'7'"), (10, "10"), (-1, "-1"), ([7], r"\[7\]")],
)
def test_a_prompted_digit_that_is_no_integer_0_to_9_is_refused_naming_the_prompt(digit, shown):
    """``task: prompts`` .jsonl metadata: ``"digit": null`` was refused naming no prompt, and ``true`` and
    ``7.9`` were read as digits 1 and 7 (``int()``), silently; the gold metrics read them the same way."""
    import numpy as np

    from genrl.registry import REWARDS
    from genrl.scoring import check_rewards_take
    from genrl.tasks.digits import prompted_digit

    digits = {"digits": REWARDS.get("digits")}
    with pytest.raises(
        ValueError, match=rf"^rewards.digits: .*prompt 'a cat': metadata 'digit' is {shown}; expected an integer 0..9"
    ):
        check_rewards_take(digits, (1, 8, 8), [("a dog", {"digit": 3}), ("a cat", {"digit": digit})])
    assert [prompted_digit("a cat", {"digit": d}) for d in (0, 9, np.int64(4), torch.tensor(5))] == [0, 9, 4, 5]
    assert prompted_digit("a handwritten digit seven", {}) == prompted_digit("a 7", None) == 7
