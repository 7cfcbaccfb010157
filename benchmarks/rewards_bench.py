"""Reward throughput and asynchronous scoring, measured in one run (issue 4).

    .venv/bin/python benchmarks/rewards_bench.py [--device cpu|cuda] [--out benchmarks/rewards.md]

1. Scoring throughput (samples/s) of each image reward on the same batch: the embedded
   digits rewards (classifier, gold SVM, digits CLIP), and CLIPScore / PickScore on full-size
   CLIP ViT-B/32 architectures with random weights (nothing is downloaded; real checkpoints
   of the same architecture cost the same). Ratios are against the digits classifier.
2. Asynchronous scoring: digits rollouts in 4 chunks, each scored by the reward while the next
   chunk is generated, against the same chunks scored in line. Reported: seconds per step
   both ways and the share of the scoring time hidden behind the rollout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def _full_size_pickscore(tmp: str, device: str, prompts: list[str]):
    """A transformers CLIP ViT-B/32 (random weights) with the tests' processor built in code
    (a character-level tokenizer: text cost is not what this measures)."""
    from conftest import get_dummy_clip_processor  # tests/ is on sys.path (see main)
    from transformers import CLIPConfig, CLIPModel

    from rewards.pickscore import PickScoreReward

    processor = get_dummy_clip_processor(prompts, image_size=224)
    vocab = len(processor.tokenizer.get_vocab())
    CLIPModel(
        CLIPConfig(
            text_config={"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
            vision_config={"patch_size": 32},
        )
    ).save_pretrained(f"{tmp}/m")
    processor.save_pretrained(f"{tmp}/p")
    return PickScoreReward(model=f"{tmp}/m", processor=f"{tmp}/p", device=device)


def throughput(device: str, batch: int, repeats: int) -> list[tuple[str, float]]:
    import tempfile

    from genrl.models import prepare_model
    from genrl.registry import REWARDS

    images = torch.rand(batch, 1, 8, 8)
    big = torch.rand(batch, 3, 512, 512)  # what SD3.5-M at 512 px hands the reward
    prompts = ["a handwritten digit seven"] * batch
    rows = []
    digits, gold = REWARDS.get("digits")(), REWARDS.get("digits_gold")()
    rows.append(("digits (classifier, 8x8)", batch / _time(lambda: digits(images, prompts), repeats)))
    rows.append(("digits_gold (SVM, 8x8)", batch / _time(lambda: gold(images, prompts), repeats)))
    prepare_model("task:digits", kind="clip")  # the embedded digits CLIP, trained (logged) if missing
    clip_digits = REWARDS.get("clip")(model="task:digits", device=device)
    rows.append(("clip, embedded digits CLIP (8x8)", batch / _time(lambda: clip_digits(images, prompts), repeats)))
    clip_b32 = REWARDS.get("clip")(model="ViT-B-32", pretrained=None, device=device)
    rows.append(("clip, ViT-B-32 architecture (512 px in)", batch / _time(lambda: clip_b32(big, prompts), repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        pick = _full_size_pickscore(tmp, device, prompts)
        rows.append(
            ("pickscore, CLIP ViT-B/32 architecture (512 px in)", batch / _time(lambda: pick(big, prompts), repeats))
        )
    return rows


def async_overlap(steps: int) -> dict[str, float]:
    """Seconds per digits step (rollout in 4 chunks + scoring), scored in line vs in a thread."""
    from genrl.config import OnlineConfig, config_from_dict
    from genrl.models import prepare_model, prepare_models
    from genrl.policies.flow import FlowPolicy
    from genrl.registry import REWARDS
    from genrl.scoring import ChunkScorer

    cfg = config_from_dict(OnlineConfig, {})
    prepare_models(cfg)
    prepare_model("task:digits", kind="clip")
    policy = FlowPolicy.from_pretrained(cfg.policy)
    reward = {
        "clip": REWARDS.get("clip")(model="task:digits", device="cpu"),
        "digits_gold": REWARDS.get("digits_gold")(),
    }
    prompts = [f"a handwritten digit {w}" for w in ("zero", "one", "two", "three")] * 40  # 160 samples
    meta = [{"digit": i % 4} for i in range(len(prompts))]
    out = {}
    for asynchronous in (False, True):
        scorer = ChunkScorer(reward, asynchronous)
        busy, t0 = 0.0, time.perf_counter()
        for step in range(steps):
            g = torch.Generator().manual_seed(step)
            for i in range(0, len(prompts), 40):
                part = policy.rollout(
                    prompts[i : i + 40], meta[i : i + 40], list(range(i, i + 40)), g, policy.window(g)
                )
                scorer.submit(part.samples, part.prompts, part.metadata)
            busy += scorer.collect()[2]
        out["async" if asynchronous else "inline"] = (time.perf_counter() - t0) / steps
        out[("async" if asynchronous else "inline") + "_busy"] = busy / steps
        scorer.close()
    return out


def main() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    args = ap.parse_args()
    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    rows = throughput(args.device, args.batch, args.repeats)
    base = rows[0][1]
    lines = [
        f"# Reward throughput and asynchronous scoring ({machine}, torch {torch.__version__})",
        "",
        f"Regenerate: `.venv/bin/python benchmarks/rewards_bench.py --out benchmarks/rewards.md` "
        f"(batch {args.batch}, {args.repeats} timed repeats after a warm-up).",
        "",
        "| reward | samples/s | ratio to the digits classifier |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {v:.1f} | {v / base:.3g} |" for name, v in rows]
    a = async_overlap(args.steps)
    hidden = (a["inline"] - a["async"]) / a["inline_busy"] if a["inline_busy"] > 0 else float("nan")
    lines += [
        "",
        "Digits rollout of 160 samples in 4 chunks of 40, rewards: embedded digits CLIP + gold SVM "
        f"(mean of {args.steps} steps, CPU):",
        "",
        "| scoring | s/step | reward s/step (busy) |",
        "|---|---:|---:|",
        f"| in line | {a['inline']:.3f} | {a['inline_busy']:.3f} |",
        f"| worker thread | {a['async']:.3f} | {a['async_busy']:.3f} |",
        "",
        f"Step time ratio async / in line: {a['async'] / a['inline']:.3f}; share of the in-line scoring time "
        f"hidden by the thread: {hidden:.2f}.",
    ]
    if a["async"] > a["inline"]:
        lines += [
            "",
            "Here the worker thread makes the step slower, not faster: the reward and the sampler "
            "compete for the same CPU cores (the scoring itself takes longer in the thread too), so "
            "`rollout.async_rewards: auto` leaves it off without a GPU. The overlap this is built for "
            "(sampler on the GPU while the reward runs) could not be measured on this machine.",
        ]
    else:
        lines += ["", "The worker thread hides that share of the scoring time behind the next chunk's rollout."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
