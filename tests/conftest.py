"""Shared fixtures: tiny real components (diffusers-style ``get_dummy_components``)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from state_compare import assert_same_state, metrics_rows  # noqa: F401 (the tests import them from here)

# Under pytest-xdist (``-n 2``, what .ci/run uses) each worker gets one thread, so two workers fill
# the two cores without oversubscribing them; a plain ``pytest`` run keeps up to two threads.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))

# Overrides that shrink an online digits recipe to seconds (2 steps of 2 prompts x 4 samples);
# a test appends its own, and later overrides win.
TINY_ONLINE = [
    "max_steps=2",
    "policy.num_steps=4",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.batch_size=8",
    "train.batch_size=4",
    "eval.seeds_per_prompt=2",
    "eval.every=1",
    "checkpoint.every=1",
    "log.progress_bar=false",
]


def two_process_launch(port: int) -> list[str]:
    """``python -m accelerate.commands.launch`` for two CPU processes (gloo DDP; README, "Scaling out"),
    rendezvous on ``port``: the script and its arguments follow."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]


# The same for the preference (SePPO) digits recipe: 4 steps of 8 winners, a snapshot every step.
TINY_PREFERENCE = [
    "max_steps=4",
    "policy.num_steps=4",
    "reference.num_steps=4",
    "reference.snapshot_every=1",
    "train.batch_size=8",
    "eval.seeds_per_prompt=2",
    "eval.every=2",
    "checkpoint.every=2",
    "log.progress_bar=false",
]


def tiny_preference(objective: str = "seppo", mode: str = "replay") -> list[str]:
    """``TINY_PREFERENCE`` for ``objective.name=<objective>`` and ``reference.mode=<mode>`` on
    ``configs/digits/seppo.yaml`` (both included), less what they leave unread, which is refused: sft reads
    no ``reference.*`` and no ``objective.beta`` (the recipe's is set back to the default); mode fixed
    no ``snapshot_every``."""
    from genrl.config import PreferenceObjectiveConfig

    def unread(o: str) -> bool:
        return o.startswith("reference.") and (objective == "sft" or (mode == "fixed" and "snapshot_every" in o))

    out = [o for o in TINY_PREFERENCE if not unread(o)] + [f"objective.name={objective}"]
    if objective == "sft":
        return out + [f"objective.beta={PreferenceObjectiveConfig().beta}"]
    return out + [f"reference.mode={mode}"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test writes caches into one session-wide temp folder, never into ~/.cache.

    Session-scoped so that it is set before any module- or session-scoped fixture runs: a
    function-scoped one came too late for those, which then trained and read the digits
    reward in ~/.cache while the test body read the temp folder's (a proxy trained under
    another thread count scores differently)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENRL_CACHE", str(tmp_path_factory.getbasetemp() / "genrl-cache"))
        yield


def get_dummy_components():
    """The digits task's real classes from code: SD3Transformer2DModel, CLIP text encoder,
    a fast tokenizer and the flow-matching scheduler (random weights)."""
    from genrl.tasks import digits

    torch.manual_seed(0)
    return {
        "transformer": digits.build_transformer(),
        "scheduler": digits.build_scheduler(),
        "text_encoder": digits.build_text_encoder(),
        "tokenizer": digits.build_tokenizer(),
    }


def get_dummy_pipeline():
    """``DigitsPipeline`` around :func:`get_dummy_components` (what ``FlowPolicy`` takes)."""
    from pipelines.digits import DigitsPipeline

    return DigitsPipeline(**get_dummy_components())


# ----------------------------------------------------------------------------- tiny Qwen-VL models

VLM_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# the words of the tests' VLM data: a closed vocabulary, so genrl refuses other words (a real Qwen tokenizer takes any)
VLM_WORDS = ["user", "assistant", "\n", "what", "is", "the", "sum", "?", "+", "answer", "\\frac{1}{2}"] + [
    str(i) for i in range(19)
]
VLM_VOCAB = {t: i for i, t in enumerate(VLM_SPECIAL + VLM_WORDS + ["<unk>"])}
VLM_VISION_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
VLM_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} \n {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}{{ c['text'] }} {% endif %}"
    "{% endfor %}<|im_end|> \n {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant \n {% endif %}"
)
VLM_PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}  # an image of 2p x 4p pixels -> 2 image tokens


def get_dummy_vlm_components(model_type: str = "qwen2_vl", seed: int = 0) -> dict:
    """A tiny real Qwen-VL (``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``): 2 text layers
    (hidden 64, 4 heads, 2 KV heads, mrope [2, 3, 3]), a 1-2 layer vision tower, and the
    family's processor around a word-level tokenizer; an image of 2p x 4p pixels (p = the
    patch size, 14 or 16) gives 8 patches that merge into 2 image tokens."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(VLM_VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=VLM_SPECIAL[1:],
        chat_template=VLM_CHAT_TEMPLATE,
    )
    p = VLM_PATCH[model_type]
    image_processor = tf.Qwen2VLImageProcessor(
        size={"shortest_edge": 4 * p * p, "longest_edge": 8 * p * p}, patch_size=p, merge_size=2, temporal_patch_size=2
    )
    text = dict(
        vocab_size=len(VLM_VOCAB),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        pad_token_id=VLM_VOCAB["<|endoftext|>"],
        eos_token_id=VLM_VOCAB["<|im_end|>"],
        bos_token_id=None,
    )
    ids = dict(
        image_token_id=VLM_VOCAB["<|image_pad|>"],
        video_token_id=VLM_VOCAB["<|video_pad|>"],
        vision_start_token_id=VLM_VOCAB["<|vision_start|>"],
        vision_end_token_id=VLM_VOCAB["<|vision_end|>"],
    )
    if model_type == "qwen2_vl":
        vision = dict(
            depth=1,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=p,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        )
        config_cls, model_cls, processor_cls, video_cls = (
            tf.Qwen2VLConfig,
            tf.Qwen2VLForConditionalGeneration,
            tf.Qwen2VLProcessor,
            tf.Qwen2VLVideoProcessor,
        )
    elif model_type == "qwen2_5_vl":  # windowed attention in block 0, full attention in block 1
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=p,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        config_cls, model_cls, processor_cls, video_cls = (
            tf.Qwen2_5_VLConfig,
            tf.Qwen2_5_VLForConditionalGeneration,
            tf.Qwen2_5_VLProcessor,
            tf.Qwen2VLVideoProcessor,
        )
    elif model_type == "qwen3_vl":  # deepstack features from vision block 0 into the text model
        text["head_dim"] = 16
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=p,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )
        config_cls, model_cls, processor_cls, video_cls = (
            tf.Qwen3VLConfig,
            tf.Qwen3VLForConditionalGeneration,
            tf.Qwen3VLProcessor,
            tf.Qwen3VLVideoProcessor,
        )
    else:
        raise ValueError(f"no tiny config for {model_type!r}")
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_cls(),
        chat_template=VLM_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    model = model_cls(config_cls(text_config=text, vision_config=vision, **ids))
    return {"model": model, "processor": processor}


# ----------------------------------------------------------------------------- tiny CLIP processor


def get_dummy_clip_processor(texts, image_size: int = 32):
    """A real ``CLIPProcessor``: CLIP's image processor at ``image_size`` and a ``CLIPTokenizerFast``
    over a character-level BPE (no merges, CLIP's ``</w>`` word ends) covering ``texts``, built
    in code, wrapping each text in ``<|startoftext|> ... <|endoftext|>`` (ids 0 and 1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizerFast

    chars = sorted({c for t in texts for c in t.replace(" ", "")})
    words = ["<|startoftext|>", "<|endoftext|>", "<unk>"] + chars + [c + "</w>" for c in chars]
    tok = Tokenizer(models.BPE({w: i for i, w in enumerate(words)}, [], unk_token="<unk>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    tokenizer = CLIPTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def forget_trained_settings(run_dir, config_yaml: bool = True) -> None:
    """Make ``run_dir`` a run of genrl before checkpoints recorded their settings and base model: each
    checkpoint's ``meta.json`` loses its ``config`` and ``base_model`` (and, with ``config_yaml``, the run its
    ``config.yaml``), so the checks behind the settings comparison are reached."""
    for meta in sorted((run_dir / "checkpoints").glob("step-*/meta.json")):
        data = json.loads(meta.read_text())
        data.pop("config", None)
        data.pop("base_model", None)
        meta.write_text(json.dumps(data))
    if config_yaml:
        os.remove(run_dir / "config.yaml")


def recipe_refusal(config: str, overrides: list[str]) -> str:
    """The ``ConfigError`` message of loading ``configs/<config>`` with ``overrides`` (it must be refused)."""
    from genrl.config import ConfigError, load_trainer_config

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", config)
    with pytest.raises(ConfigError) as e:
        load_trainer_config(path, overrides)
    return str(e.value)


def assert_documented_metric_names(metrics_jsonl) -> None:
    """Every key of a run's metrics.jsonl (but ``step``) starts with a prefix of the README's
    "Logged metrics" table."""
    import json
    import os
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    table = readme.split("### Logged metrics", 1)[1].split("\n\n")[2]  # heading, sentence, table
    prefixes = tuple(re.findall(r"`([a-z0-9_]+/)`", "\n".join(line.split(" | ")[0] for line in table.splitlines())))
    assert len(prefixes) >= 7, prefixes
    keys = {k for line in open(metrics_jsonl) for k in json.loads(line) if k != "step"}
    undocumented = sorted(k for k in keys if not k.startswith(prefixes))
    assert keys and not undocumented, undocumented


@pytest.fixture(scope="session")
def base_model(tmp_path_factory):
    """A digits base model pretrained for 5 steps (seconds), shared by the trainer tests."""
    from genrl.tasks.digits import pretrain

    return pretrain(tmp_path_factory.mktemp("base"), steps=5, progress=False)


@pytest.fixture(scope="session")
def moving_base(tmp_path_factory):
    """The moving-digits base pipeline, pretrained 3 steps (seconds)."""
    from genrl.tasks.moving_digits import pretrain

    return pretrain(tmp_path_factory.mktemp("moving-base") / "base", steps=3, batch_size=4, progress=False)


@pytest.fixture(scope="session")
def moving_videoalign(tmp_path_factory):
    """The moving-digits VideoAlign reward: 2 caption steps, then 2 steps of 2 pairs, scored on 4 held-out pairs."""
    from rewards.moving_digits_videoalign import train_videoalign

    out = tmp_path_factory.mktemp("videoalign") / "reward"
    train_videoalign(out, steps=2, batch_pairs=2, eval_pairs=4, caption_steps=2, progress=False)
    return out


@pytest.fixture(scope="session")
def moving_run(moving_base, moving_videoalign, tmp_path_factory):
    """A two-step FlowGRPO run of configs/moving_digits/flowgrpo.yaml on the tiny base and reward,
    evaluated at step 2 (one clip per prompt)."""
    from genrl.config import OnlineConfig, load_config
    from genrl.trainers.online import train

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path_factory.mktemp("moving-run") / "run"
    cfg = load_config(
        OnlineConfig,
        os.path.join(root, "configs", "moving_digits", "flowgrpo.yaml"),
        [
            *TINY_ONLINE,
            f"output_dir={out}",
            f"policy.model={moving_base}",
            f"reward_args.videoalign.checkpoint={moving_videoalign}",
            "eval.seeds_per_prompt=1",
            "eval.every=2",
            "train.lr=2e-2",
        ],
    )
    train(cfg)
    return out


# ----------------------------------------------------------------------------- galleries


def eval_rewards(run, step):
    """A run's evaluation scores at ``step``: ``{(prompt, seed): {reward key: value}}``."""
    with open(run / "eval" / f"step-{step:06d}" / "samples.jsonl") as f:
        return {(r["prompt"], r["seed"]): r["rewards"] for r in map(json.loads, f)}


# ----------------------------------------------------------------------------- headless Chromium

CHROMIUM = "/usr/bin/chromium"  # the galleries' pages are rendered with it (tests skip without it)


def chromium(page, tmp_path, *args):
    """Run headless Chromium on ``page`` (a path) with extra ``args`` (e.g. ``--screenshot=PATH``)."""
    return subprocess.run(chromium_cmd(page, tmp_path, *args), capture_output=True, text=True, timeout=180)


def chromium_cmd(page, tmp_path, *args):
    """The headless Chromium command line for ``page``, with a throwaway profile under ``tmp_path``."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1200,900",
        *args,
        page.as_uri(),
    ]


def chromium_dom(page, tmp_path, fragment=""):
    """The page after its scripts ran in headless Chromium (with ``#fragment``): the rows' prompt
    indices in display order with their hidden flags, the column order, the badges' texts, and the
    loaded-image counts."""
    url = page.as_uri() + ("#" + fragment if fragment else "")
    cmd = [
        a if a != page.as_uri() else url
        for a in chromium_cmd(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom")
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    grid = proc.stdout[proc.stdout.index('<table class="grid">') :]
    grid = grid[: grid.index("</table>")]
    return {
        "loaded": re.search(r'data-images-loaded="(\d+)"', body.group(0)).group(1),
        "total": re.search(r'data-images-total="(\d+)"', body.group(0)).group(1),
        "rows": [(int(m.group(1)), "hidden" in m.group(0)) for m in re.finditer(r'<tr data-p="(\d+)"[^>]*>', grid)],
        "columns": re.findall(r'<th data-c="([^"]+)"', grid),
        "badges": re.findall(r'<span class="badge"[^>]*>([^<]*)</span>', grid),
    }
