"""The embedded digits task: tokenizer, text encoder, pretraining folder, reward classifiers.

All fast (seconds): pretraining runs 3 steps, the classifiers train once per module into a
temp cache. Nothing is written to the user's home: ``GENRL_CACHE`` points into tmp.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from genrl.registry import REWARDS, TASKS
from genrl.tasks import digits as dg


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "genrl-cache"))


@pytest.fixture(scope="module")
def module_cache_root():
    """What a module-scoped fixture (set up before any function-scoped one) sees as the cache."""
    from genrl.io import cache_root

    return cache_root()


def test_module_scoped_fixtures_write_into_the_temp_cache_not_home(module_cache_root, tmp_path_factory):
    # conftest's isolation must already hold when module fixtures train models (it once did not:
    # the gallery test's runs read ~/.cache's reward while its body read the temp one)
    assert module_cache_root.is_relative_to(tmp_path_factory.getbasetemp())
    assert not module_cache_root.is_relative_to(Path.home() / ".cache")


@pytest.fixture(scope="module")
def reward_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("rewards"))


@pytest.fixture(scope="module")
def proxy(reward_cache):
    return REWARDS.get("digits")(cache_dir=reward_cache)


@pytest.fixture(scope="module")
def gold(reward_cache):
    return REWARDS.get("digits_gold")(cache_dir=reward_cache)


@pytest.fixture(scope="module")
def split():
    from rewards.digits import digits_split

    return digits_split()


def _prompts_meta(labels):
    return [dg.prompt_for(int(d)) for d in labels], [{"digit": int(d)} for d in labels]


# ----------------------------------------------------------------------------- prompts / text


def test_prompts_round_trip():
    task = TASKS.get("digits")()
    assert isinstance(task, dg.DigitsTask)
    assert task.prompts()[7] == "a handwritten digit seven"
    for d, p in enumerate(task.prompts()):
        assert dg.digit_from_prompt(p) == d
        assert task.metadata(p) == {"digit": d}
    with pytest.raises(ValueError):
        dg.digit_from_prompt("")


def test_tokenizer_pads_and_round_trips(tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = dg.build_tokenizer()
    prompts = ["a handwritten digit seven", "", "A Handwritten DIGIT zebra"]
    ids = tok(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (3, 8)
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert ids[0, 5] == tok.eos_token_id and (ids[0, 6:] == tok.pad_token_id).all()
    assert ids[1, 1] == tok.eos_token_id  # the null caption is just <bos> <eos>
    assert ids[2, 4] == tok.unk_token_id and ids[2, 1:4].tolist() == ids[0, 1:4].tolist()  # lower-cased
    long = tok(["a " * 20], padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert long.shape == (1, 8) and long[0, -1] == tok.eos_token_id

    tok.save_pretrained(tmp_path / "tok")
    for cls in (AutoTokenizer, PreTrainedTokenizerFast):
        loaded = cls.from_pretrained(tmp_path / "tok")
        assert loaded.model_max_length == 8 and len(loaded) == len(tok)
        again = loaded(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
        assert torch.equal(again, ids)


def _encode(tok, text_encoder, prompts):
    """The digits pipeline's own prompt encoding (``DigitsPipeline.encode_prompt``)."""
    from pipelines.digits import DigitsPipeline

    pipe = SimpleNamespace(tokenizer=tok, text_encoder=text_encoder)
    pipe.check_prompts = lambda p: DigitsPipeline.check_prompts(pipe, p)
    return DigitsPipeline.encode_prompt(pipe, prompts)


def test_text_embeds_are_read_at_eos_and_differ_by_digit():
    tok = dg.build_tokenizer()
    torch.manual_seed(0)
    enc = dg.build_text_encoder(len(tok)).eval()
    assert (enc.config.bos_token_id, enc.config.eos_token_id, enc.config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    prompts = [dg.prompt_for(d) for d in range(10)] + [""]
    with torch.no_grad():
        hidden, pooled = _encode(tok, enc, prompts)  # [11, 8, 32], [11, 32]
        eos_pos = torch.tensor([5] * 10 + [1])
        expected = enc.text_projection(hidden[torch.arange(11), eos_pos])
    assert hidden.shape == (11, 8, 32) and pooled.shape == (11, 32)
    torch.testing.assert_close(pooled, expected)
    assert torch.cdist(pooled, pooled).add(torch.eye(11)).min() > 1e-3  # all distinct


# ----------------------------------------------------------------------------- pretraining


def _load(path):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    return (
        SD3Transformer2DModel.from_pretrained(path, subfolder="transformer").eval(),
        CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder").eval(),
        AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
        FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler"),
    )


@torch.no_grad()
def _velocity(components, x, t):
    transformer, text_encoder, tok, _ = components
    hidden, pooled = _encode(tok, text_encoder, [dg.prompt_for(d) for d in range(len(x))])
    return transformer(
        hidden_states=x, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=t * 1000
    ).sample


def test_pretrain_writes_loadable_deterministic_folder(tmp_path):
    a = dg.pretrain(tmp_path / "a", steps=3, seed=0, progress=False)
    b = dg.pretrain(tmp_path / "b", steps=3, seed=0, progress=False)
    for sub in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "a" / sub).is_dir()
    info = json.loads((tmp_path / "a" / "genrl_task.json").read_text())
    assert info["task"] == "digits" and info["pretrain_steps"] == 3 and info["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left

    ca, cb = _load(a), _load(b)
    assert sum(p.numel() for p in ca[0].parameters()) == pytest.approx(0.58e6, rel=0.05)
    assert ca[3].config.shift == 1.0
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # [4, 1, 8, 8]
    t = torch.tensor([1.0, 0.7, 0.3, 0.05])
    va = _velocity(ca, x, t)
    assert va.shape == x.shape
    assert torch.equal(va, _velocity(cb, x, t))  # same seed -> same weights and outputs

    # training changed the weights: a fresh init of the same builders gives other outputs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = (dg.build_transformer().eval(), dg.build_text_encoder(len(ca[2])).eval(), ca[2], ca[3])
    assert not torch.allclose(va, _velocity(fresh, x, t))


def test_the_pipeline_refuses_bad_inputs_before_sampling(tmp_path, monkeypatch):
    from genrl.policies.flow import load_policy_pipeline
    from pipelines.digits import DigitsPipeline

    pipe = load_policy_pipeline(str(dg.pretrain(tmp_path / "a", steps=1, seed=0, progress=False)))
    assert isinstance(pipe, DigitsPipeline)
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(pipe, "predict_velocity", lambda *a: pytest.fail("sampled before checking the inputs"))
    for kwargs, message in [
        ({"prompt": []}, "non-empty list of strings"),
        ({"prompt": "a handwritten digit one", "output_type": "latents"}, "output_type must be"),
        (
            {"prompt": "a handwritten digit one", "num_inference_steps": 0},
            "num_inference_steps must be an integer >= 1, got 0",
        ),
        ({"prompt": "a handwritten digit one", "latents": torch.zeros(2, 1, 8, 8)}, r"latents have shape"),
        # wrong types were tracebacks from deep in the sampler; a generator list of another length, a dict or a
        # set of prompts, a NaN scale and a spelled end token were taken silently
        ({"prompt": "a handwritten digit one", "num_inference_steps": 2.5}, r"an integer >= 1, got 2.5$"),
        ({"prompt": "a handwritten digit one", "guidance_scale": float("nan")}, r"finite number .*, got nan$"),
        ({"prompt": "a handwritten digit one", "guidance_scale": "3"}, r"finite number .*, got '3'$"),
        ({"prompt": ["a handwritten digit one"] * 2, "generator": [torch.Generator()]}, r"a list of 1 for 2 prompt"),
        ({"prompt": "a handwritten digit one", "generator": 0}, r"^generator must be a torch.Generator"),
        ({"prompt": "a handwritten digit one", "latents": [[0.0]]}, r"^latents must be a torch.Tensor, got list$"),
        ({"prompt": {"a handwritten digit one": 1}}, r"^prompt must be a string or a non-empty list of strings"),
        ({"prompt": None}, r"^prompt must be a string or a non-empty list of strings, got None$"),
        ({"prompt": "a handwritten digit <eos> one"}, r"spells the tokenizer's special token\(s\) <eos>, which"),
        (
            {"prompt": "a handwritten digit one", "negative_prompt": {"a digit"}, "guidance_scale": 3.0},
            r"^negative_prompt must be a string or a list of one string per prompt \(1 here\), not \{'a digit'\}$",
        ),
        # diffusers' pipelines ignore a negative prompt without guidance, silently
        ({"prompt": "a handwritten digit one", "negative_prompt": "a digit"}, r"set guidance_scale > 1$"),
        (
            {"prompt": ["a handwritten digit one"] * 2, "negative_prompt": ["a digit"], "guidance_scale": 3.0},
            r"^negative_prompt must be a string or a list of one string per prompt \(2 here\), not \['a digit'\]$",
        ),
        (
            {"prompt": "a handwritten digit one", "negative_prompt": "blurry digit", "guidance_scale": 3.0},
            r"^prompt 'blurry digit': this model's tokenizer does not know 'blurry'",
        ),
        # a word outside the closed vocabulary became <unk>, a long prompt was cut to 8 tokens: silently
        (
            {"prompt": ["a handwritten digit one", "a handwritten digit 7, één"]},
            r"^prompt 'a handwritten digit 7, één': this model's tokenizer does not know '7', ',', 'één' \(its "
            r"words: a an digit eight .* zero\)$",
        ),
        (
            {"prompt": "a photo of the handwritten number seven"},
            r"^prompt 'a photo of the handwritten number seven': 9 tokens with the start and end ones, over this "
            r"model's 8 \(tokenizer.model_max_length\): the rest would be cut off$",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    with pytest.raises(ValueError) as e:  # a megabyte prompt was quoted whole, twice: a 2 MB error line
        pipe(["a handwritten digit " + "x" * 10**6] * 2)
    assert len(str(e.value)) < 400 and "xxx...xxx" in str(e.value), len(str(e.value))


def test_the_pipeline_guides_away_from_a_negative_prompt(tmp_path):
    from genrl.policies.flow import load_policy_pipeline

    pipe = load_policy_pipeline(str(dg.pretrain(tmp_path / "a", steps=20, seed=0, progress=False)))
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a handwritten digit one", "a handwritten digit seven"]

    def sample(**kwargs):
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return pipe(prompts, num_inference_steps=3, guidance_scale=4.0, generator=gens, output_type="pt", **kwargs)[0]

    plain = sample()
    torch.testing.assert_close(sample(negative_prompt=""), plain, rtol=0, atol=0)  # the default: the empty caption
    torch.testing.assert_close(sample(negative_prompt=["", ""]), plain, rtol=0, atol=0)
    away = sample(negative_prompt="a handwritten digit one")
    assert (away - plain).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image moves
    mixed = sample(negative_prompt=["a handwritten digit one", ""])  # one per prompt
    torch.testing.assert_close(mixed[0], away[0])
    torch.testing.assert_close(mixed[1], plain[1])


def test_failed_pretrain_leaves_nothing(tmp_path, monkeypatch):
    def boom():
        raise RuntimeError("killed")

    monkeypatch.setattr(dg, "build_scheduler", boom)  # fails while writing the folder
    with pytest.raises(RuntimeError, match="killed"):
        dg.pretrain(tmp_path / "m", steps=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_prepare_pretrains_once(tmp_path, reward_cache, capsys):
    task = dg.DigitsTask(cache_dir=reward_cache, pretrain_steps=2, seed=3)
    path = task.prepare(progress=False)
    assert path.startswith(reward_cache) and path.endswith("digits-s2-seed3")
    assert "pretraining" in capsys.readouterr().out
    assert task.prepare(progress=False) == path
    assert "pretraining" not in capsys.readouterr().out


def test_cache_root_follows_env(tmp_path):
    assert dg.cache_root() == tmp_path / "genrl-cache"
    assert str(dg.DigitsTask().model_dir).startswith(str(tmp_path / "genrl-cache"))
    assert dg.cache_root("/x/y") == Path("/x/y")


# ----------------------------------------------------------------------------- rewards


def test_proxy_scores_held_out_digits(proxy, split):
    images, labels = split["gold"]  # the proxy never saw split B
    prompts, meta = _prompts_meta(labels)
    assert (proxy.probs(images).argmax(-1) == labels).float().mean() > 0.9
    right = proxy(images, prompts, meta)["digits"]
    wrong = proxy(images, prompts, [{"digit": (m["digit"] + 1) % 10} for m in meta])["digits"]
    assert right.shape == (len(labels),)
    assert right.mean() > 0.8 and wrong.mean() < 0.1


def test_gold_scores_held_out_digits(gold, split):
    images, labels = split["proxy"]  # the judge never saw split A
    prompts, meta = _prompts_meta(labels)
    out = gold(images, prompts, meta)
    assert set(out) == {"digits_gold", "digits_gold_correct"}
    assert out["digits_gold_correct"].mean() > 0.9 and out["digits_gold"].mean() > 0.8
    wrong = gold(images, prompts, [{"digit": (m["digit"] + 1) % 10} for m in meta])
    assert wrong["digits_gold"].mean() < 0.1 and wrong["digits_gold_correct"].mean() < 0.05


def test_splits_are_disjoint(split):
    a, b = split["proxy"][0].flatten(1), split["gold"][0].flatten(1)
    assert len(a) + len(b) == 1797
    # different rows of the original array (a few digits are exact duplicates, so compare counts)
    both = torch.cat([a, b]).unique(dim=0)
    assert len(both) >= 1797 - 5


@pytest.mark.parametrize("shape", [(2, 64), (2, 3, 8, 8), (2, 1, 28, 28), (1, 8, 8)])
def test_wrong_shape_raises(proxy, gold, shape):
    x = torch.rand(shape)
    for reward in (proxy, gold):
        with pytest.raises(ValueError, match=r"\[B, 1, 8, 8\]"):
            reward(x, ["a handwritten digit one"] * shape[0], [{"digit": 1}] * shape[0])


def test_non_finite_sample_scores_nan(proxy, gold, split):
    images = split["gold"][0][:3].clone()
    images[1, 0, 3, 3] = float("nan")
    prompts, meta = _prompts_meta(split["gold"][1][:3])
    for reward in (proxy, gold):
        for value in reward(images, prompts, meta).values():
            assert value[1].isnan() and value[[0, 2]].isfinite().all()


def test_metadata_falls_back_to_prompt(proxy, split):
    images, labels = split["gold"][0][:8], split["gold"][1][:8]
    prompts, meta = _prompts_meta(labels)
    torch.testing.assert_close(proxy(images, prompts, None)["digits"], proxy(images, prompts, meta)["digits"])


def test_corrupt_proxy_cache_is_retrained_and_gold_is_never_cached(proxy, gold, reward_cache, split, capsys):
    images = split["gold"][0][:16]
    assert proxy.path.is_file()
    assert not [f for f in proxy.cache.iterdir() if f.name.startswith(".")]  # no temp files left
    capsys.readouterr()
    REWARDS.get("digits")(cache_dir=reward_cache)
    assert "training the digits proxy" not in capsys.readouterr().out  # cached: loaded without a word
    proxy.path.write_bytes(b"not a model")
    with pytest.warns(UserWarning, match="retraining"):
        again = REWARDS.get("digits")(cache_dir=reward_cache)
    assert f"training the digits proxy classifier into {proxy.path}" in capsys.readouterr().out  # said, not silent
    torch.testing.assert_close(again.probs(images), proxy.probs(images))  # deterministic training
    # the gold SVM is never cached (a pickle could run code): retrained at each start, identically
    assert gold.path is None and not list(gold.cache.glob("*.pkl"))
    torch.testing.assert_close(REWARDS.get("digits_gold")(cache_dir=reward_cache).probs(images), gold.probs(images))


# ----------------------------------------------------------------------------- eval metrics


def test_eval_metrics_on_real_digits(reward_cache, split):
    task = dg.DigitsTask(cache_dir=reward_cache)
    images, labels = split["proxy"]
    idx = torch.cat([torch.nonzero(labels == d)[:5, 0] for d in range(10)])  # 5 per digit
    prompts, meta = _prompts_meta(labels[idx])
    m = task.eval_metrics(images[idx], prompts, meta)
    assert set(m) == {"gold_accuracy", "proxy_accuracy", "diversity"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["gold_accuracy"] > 0.9 and m["proxy_accuracy"] > 0.9
    assert m["diversity"] > 1.0

    same = images[idx[::5]].repeat_interleave(5, dim=0)  # each digit's first image, 5 times
    m_same = task.eval_metrics(same, prompts, meta)
    assert m_same["diversity"] == 0.0
    assert m_same["gold_accuracy"] > 0.9
    assert task.eval_metrics(images[idx], prompts)["gold_accuracy"] == m["gold_accuracy"]  # no metadata
