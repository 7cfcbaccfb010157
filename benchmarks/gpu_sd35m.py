"""The prepared GPU benchmark: full-size SD3.5-Medium architecture, random weights, 512 px.

    python benchmarks/gpu_sd35m.py --out benchmarks/RESULTS.md            # on a GPU machine
    python benchmarks/gpu_sd35m.py --preset tiny --iters 1 --out /tmp/x.md  # the same code on a CPU

Builds a real ``StableDiffusion3Pipeline`` with the published SD3.5-Medium component configs
(MMDiT-X 24 layers x 1536 wide with dual attention in layers 0-12, the 16-channel VAE, CLIP-L,
CLIP-G and T5-XXL encoders) and random weights made directly on the device in bf16, so no
download is needed. Tokenizers are word-level stand-ins of the real lengths (77 / 77 / 256
tokens): they change which token ids are fed, not the cost. For each variant (``genrl.bench``'s
``VARIANTS``: as configured, ``cfg_grad=cond``, regional ``policy.compile``, gradient checkpointing, SDE
window of 2, fused AdamW, full ``policy.compile``), in its own process, the pipeline is built
and ``genrl.bench.measure`` times the flow policy's rollouts (images/s), the trainer's update
(seconds per iteration) and peak GPU memory, with the Flow-GRPO recipe's settings
(``configs/sd35m/flowgrpo_pickscore.yaml`` if present, else the same values inline): 10 SDE
steps, CFG 4.5, LoRA r32/alpha64. Ratios are to the first variant, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _clip(vocab: int, hidden: int, layers: int, heads: int, positions: int, act: str = "quick_gelu") -> dict:
    """A ``CLIPTextConfig``'s size fields (MLP width 4x hidden, projection = hidden, as in SD3's CLIPs)."""
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=positions,
        projection_dim=hidden,
        hidden_act=act,
    )


def _mmdit(sample, channels, layers, head_dim, heads, joint, caption, pooled, pos) -> dict:
    """An ``SD3Transformer2DModel`` config (patch 2, output channels = input, RMS QK-norm as SD3.5)."""
    return dict(
        sample_size=sample,
        patch_size=2,
        in_channels=channels,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=joint,
        caption_projection_dim=caption,
        pooled_projection_dim=pooled,
        out_channels=channels,
        pos_embed_max_size=pos,
        qk_norm="rms_norm",
    )


def _vae(blocks: tuple, layers: int, latent: int, sample: int) -> dict:
    """An ``AutoencoderKL`` config with SD3's latent scaling and no quant convolutions."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=layers,
        latent_channels=latent,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
        sample_size=sample,
    )


# SD3.5-Medium's published component configs (model_index.json's subfolders).
PRESETS = {
    "sd35m": dict(
        transformer=_mmdit(
            sample=128, channels=16, layers=24, head_dim=64, heads=24, joint=4096, caption=1536, pooled=2048, pos=384
        )
        | dict(dual_attention_layers=tuple(range(13))),
        vae=_vae(blocks=(128, 256, 512, 512), layers=2, latent=16, sample=1024),
        clip_l=_clip(vocab=49408, hidden=768, layers=12, heads=12, positions=77, act="quick_gelu"),
        clip_g=_clip(vocab=49408, hidden=1280, layers=32, heads=20, positions=77, act="gelu"),
        t5=dict(
            vocab_size=32128,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=32,
        ),
        t5_tokens=256,
        clip_tokens=77,
        resolution=512,
        dtype=torch.bfloat16,
    ),
    # the same code path at toy size, to check the script on a CPU
    "tiny": dict(
        transformer=_mmdit(
            sample=16, channels=4, layers=2, head_dim=8, heads=2, joint=32, caption=16, pooled=64, pos=16
        )
        | dict(dual_attention_layers=(0,)),
        vae=_vae(blocks=(8, 8), layers=1, latent=4, sample=32) | dict(norm_num_groups=4),
        clip_l=_clip(vocab=64, hidden=32, layers=2, heads=2, positions=16),
        clip_g=_clip(vocab=64, hidden=32, layers=2, heads=2, positions=16),
        t5=dict(
            vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, relative_attention_num_buckets=8
        ),
        t5_tokens=8,
        clip_tokens=8,
        resolution=32,
        dtype=torch.float32,
    ),
}


def _tokenizer(max_length: int, vocab_size: int, bos: bool):
    """A word-level fast tokenizer (ids within ``vocab_size``), padding to ``max_length``."""
    from genrl.tasks.base_models import SPECIAL_TOKENS, word_level_tokenizer

    words = "a photo of cat dog red blue car in the park on table".split()
    assert len(SPECIAL_TOKENS) + len(words) <= vocab_size
    return word_level_tokenizer(words, max_length, bos=bos)


def build_pipeline(preset: str, device: str):
    """A ``StableDiffusion3Pipeline`` of ``preset``'s sizes, random weights made on ``device``."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    p = PRESETS[preset]
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=3)
    torch.manual_seed(0)
    with torch.device(device):
        parts = dict(
            transformer=SD3Transformer2DModel(**p["transformer"]),
            vae=AutoencoderKL(**p["vae"]),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**p["clip_l"], **ids)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**p["clip_g"], **ids)),
            text_encoder_3=T5EncoderModel(
                T5Config(**p["t5"], pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)
            ),
        )
    for m in parts.values():
        m.to(p["dtype"])
    return StableDiffusion3Pipeline(
        **parts,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        tokenizer=_tokenizer(p["clip_tokens"], p["clip_l"]["vocab_size"], True),
        tokenizer_2=_tokenizer(p["clip_tokens"], p["clip_g"]["vocab_size"], True),
        tokenizer_3=_tokenizer(p["t5_tokens"], p["t5"]["vocab_size"], False),
    )


def config(preset: str, prompt_file: str, overrides: list[str]):
    """Flow-GRPO's SD3.5-M settings (10 SDE steps, eta 0.7, CFG 4.5, LoRA r32/alpha64) on ``preset``."""
    from genrl.config import OnlineConfig, load_config

    p = PRESETS[preset]
    base = [
        "task=prompts",
        f"data.train_files=[{prompt_file}]",
        "policy.model=random",
        "policy.family=sd3",
        "policy.num_steps=10",
        "policy.eta=0.7",
        "policy.guidance_scale=4.5",
        "policy.lora.rank=32",
        "policy.lora.alpha=64",
        f"policy.height={p['resolution']}",
        f"policy.width={p['resolution']}",
        f"policy.max_sequence_length={p['t5_tokens']}",
        f"policy.dtype={'bfloat16' if p['dtype'] == torch.bfloat16 else 'float32'}",
        "rollout.prompts_per_step=2",  # one iteration: 2 prompts x 4 = 8 samples, one rollout batch
        "rollout.group_size=4",
        "rollout.batch_size=8",
        # 2 samples x 10 trained steps x 2 CFG branches = 40 sequences of 1024 + 333 tokens in one
        # forward/backward, ~2.45 GiB of bf16 activations each (benchmarks/RESULTS.md): 80 would not fit an H200
        "train.batch_size=2",
        "train.gradient_accumulation_steps=1",
        "train.mixed_precision=" + ("bf16" if p["dtype"] == torch.bfloat16 else "'no'"),
        "log.progress_bar=false",
    ]
    return load_config(OnlineConfig, None, base + overrides)


def measure_one(preset: str, variant: str, iters: int, warmup: int, overrides: list[str]) -> dict:
    """One variant measured in this process: ``measure``'s figures, or ``{"error": ...}`` out of GPU memory."""
    from genrl.bench import VARIANTS, measure

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "prompts.txt")
        with open(prompts, "w") as f:
            f.write("a photo of a cat\na red car in the park\na blue dog on the table\n")
        cfg = config(preset, prompts, overrides + VARIANTS[variant])
        try:
            return measure(cfg, iters, warmup, pipe=build_pipeline(preset, device))
        except torch.OutOfMemoryError as e:  # said in the report; the other variants still run
            return {"error": "out of memory: " + str(e).splitlines()[0][:160]}


def main(argv=None) -> int:
    from genrl.bench import VARIANTS, child_result, publish, report
    from genrl.io import atomic_file

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sd35m")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["default", "cfg_grad_cond", "compile", "grad_ckpt", "window", "fused_adamw", "compile_full"],
        choices=sorted(VARIANTS),
        help="the first is the baseline; in priority order (the report is rewritten after each one)",
    )
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--json", default="", help="also write the figures as JSON here (after each variant)")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra genrl config overrides")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: this variant, JSON on stdout
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure_one(a.preset, a.one, a.iters, a.warmup, a.overrides)))
        return 0
    results = []
    for v in a.variants:
        # each variant in its own process, as `genrl bench` does, so that peak memory is its own (measured
        # in one process on the H200, the peaks of later variants were 4.7 and 9.3 GiB too high)
        cmd = [sys.executable, os.path.abspath(__file__), "--one", v, "--preset", a.preset]
        cmd += ["--iters", str(a.iters), "--warmup", str(a.warmup), "--set", *a.overrides]
        t0 = time.perf_counter()
        try:
            results.append({"variant": v, **child_result(cmd, f"variant {v!r}")})
        except (ValueError, RuntimeError) as e:
            results.append({"variant": v, "error": str(e).strip().splitlines()[-1][:200]})
        shown = {k: x for k, x in results[-1].items() if k != "rollout_log_probs"}
        print(f"{v}: {time.perf_counter() - t0:.0f} s, {shown}", flush=True)
        # rewritten after each variant: what was measured survives a run cut short
        text = report(f"SD3.5-Medium architecture ({a.preset}), random weights", results, a.overrides, a.iters)
        publish(text, a.out)
        if a.json:
            with atomic_file(a.json) as f:
                json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
