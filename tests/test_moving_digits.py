"""The moving-digits clips and their gold judge on constructed clips (issue 15's data side)."""

import pytest
import torch

from genrl.tasks.digits import digits_split
from genrl.tasks.moving_digits import (
    DIRECTIONS,
    VideoGoldJudge,
    centre_of_mass,
    make_clip,
    parse_prompt,
    prompt_for,
)


@pytest.fixture(scope="module")
def judge():
    return VideoGoldJudge()


def _digit(label: int, judge) -> torch.Tensor:
    """A proxy-half image of ``label`` that the gold classifier reads correctly as a still."""
    images, labels = digits_split()["proxy"]
    cands = images[labels == label][:20]
    ok = judge.classifier(cands).argmax(-1) == label
    return cands[int(ok.nonzero()[0])]


def test_prompts_round_trip_and_bad_ones_are_named():
    assert prompt_for(3, "left") == "a handwritten digit three moving left"
    assert parse_prompt("a handwritten digit three moving left") == (3, "left")
    with pytest.raises(ValueError, match="direction"):
        prompt_for(3, "sideways")
    with pytest.raises(ValueError, match="exactly one direction"):
        parse_prompt("a handwritten digit three moving left then right")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_a_clip_moves_one_pixel_per_frame_across_the_free_canvas(direction):
    image = torch.rand(1, 8, 8)
    clip = make_clip(image, direction)
    assert clip.shape == (9, 1, 16, 16) and (clip.shape[0] - 1) % 4 == 0  # Wan's 4k + 1 frames
    assert torch.allclose(clip.sum((1, 2, 3)), image.sum().expand(9))  # the whole digit in every frame
    com = centre_of_mass(clip[None])[0]  # [F, 2]
    steps = com[1:] - com[:-1]
    assert torch.allclose(steps, torch.tensor(DIRECTIONS[direction], dtype=torch.float32).expand(8, 2), atol=1e-5)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_a_digit_moving_left_is_judged_left(judge, direction):
    clip = make_clip(_digit(3, judge), direction)[None]
    prompts = [prompt_for(3, d) for d in DIRECTIONS]
    out = judge(clip.expand(4, -1, -1, -1, -1), prompts)
    want = torch.tensor([float(d == direction) for d in DIRECTIONS])
    assert torch.equal(out["direction_correct"], want) and torch.equal(out["ta_correct"], want)
    # the opposite direction is on the prompted axis: axis right, direction wrong
    axis = torch.tensor([float((DIRECTIONS[d][0] == 0) == (DIRECTIONS[direction][0] == 0)) for d in DIRECTIONS])
    assert torch.equal(out["axis_correct"], axis) and axis.sum() == 2
    assert torch.allclose(out["travel"], torch.full((4,), 8.0), atol=1e-4)
    assert out["straightness"].max() < 1e-4 and out["jerk"].max() < 1e-4  # straight, constant speed
    assert out["identity"].min() >= 0.5


def test_a_two_frame_clip_has_no_jerk(judge):
    """With 2 frames there is no second difference: the jerk was 0, the value of a constant speed."""
    clip = make_clip(_digit(3, judge), "right")[None, ::8]  # frames 0 and 8
    out = judge(clip, [prompt_for(3, "right")])
    assert clip.shape[1] == 2 and out["jerk"].isnan().all()
    assert out["ta_correct"].item() == 1.0 and torch.isfinite(out["straightness"]).all()


def test_static_wrong_digit_and_jerky_clips_fail_the_right_measures(judge):
    three, seven = _digit(3, judge), _digit(7, judge)
    moving = make_clip(three, "right")
    static = moving[:1].expand(9, -1, -1, -1)  # never moves
    wrong = make_clip(seven, "right")
    jerky = moving.clone()
    jerky[1::2] = torch.roll(moving[1::2], shifts=2, dims=-2)  # every other frame two pixels lower
    out = judge(torch.stack([moving, static, wrong, jerky]), [prompt_for(3, "right")] * 4)
    assert out["ta_correct"].tolist()[:3] == [1.0, 0.0, 0.0]
    assert out["direction_correct"][1] == 0 and out["axis_correct"][1] == 0 and out["travel"][1] < 1e-4  # static
    assert out["identity"][2] <= 0.5  # a seven is not the prompted three
    assert out["jerk"][3] > 1.0 and out["straightness"][3] > 0.5  # zig-zag: neither smooth nor straight
    with pytest.raises(ValueError, match="clips"):
        judge(moving, [prompt_for(3, "right")])
