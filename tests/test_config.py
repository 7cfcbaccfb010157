import dataclasses
import os
import random

import numpy as np
import pytest
import yaml
from conftest import recipe_refusal

from genrl.config import (
    SDE_TYPES,
    ConfigError,
    OnlineConfig,
    PolicyConfig,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
    save_config,
)


def write_yaml(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def all_dotted(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += all_dotted(type(default), prefix + f.name + ".")
    return out


def test_defaults_build():
    cfg = load_config(OnlineConfig, None)
    assert cfg == OnlineConfig()
    assert cfg.policy.sde == "flow_sde" and cfg.policy.lora.rank == 8
    assert cfg.rewards == {"digits": 1.0}
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.eval.num_steps is None
    assert "ode" in SDE_TYPES and "flow_sde" in SDE_TYPES and "cps" in SDE_TYPES
    # mutable defaults are not shared
    a, b = OnlineConfig(), OnlineConfig()
    a.policy.sde_window_range = [0, 1]
    a.rewards["y"] = 1.0
    assert b.policy.sde_window_range is None and "y" not in b.rewards
    assert b.policy.lora.target_modules is None  # the model family's default


def test_yaml_and_overrides(tmp_path):
    path = write_yaml(
        tmp_path,
        {
            "max_steps": 7,
            "policy": {"eta": 1, "lora": {"rank": 4}},
            "rewards": {"pickscore": 1.0, "clip": 0.5},
            "train": {"lr": "1e-4"},  # written plain (YAML 1.1 reads it as text), read as a float
        },
    )
    cfg = load_config(
        OnlineConfig,
        path,
        [
            "train.lr=2e-5",
            "policy.lora.target_modules=[to_q,to_k]",
            "rewards.clip=0.25",
            "rewards.jpeg_compressibility=2",  # a new key of the dict (a registered reward)
            "eval.num_steps=null",
            "policy.sde_window_size=2",
            "policy.sde_window_range=[0, 5]",
            "output_dir=runs/a b",
            "log.report_to=[]",
        ],
    )
    assert cfg.max_steps == 7
    assert cfg.policy.eta == 1.0 and isinstance(cfg.policy.eta, float)
    assert cfg.policy.lora.rank == 4 and cfg.policy.lora.alpha == 8.0  # unspecified keep defaults
    assert cfg.policy.lora.target_modules == ["to_q", "to_k"]
    assert cfg.train.lr == 2e-5
    assert cfg.rewards == {"pickscore": 1.0, "clip": 0.25, "jpeg_compressibility": 2.0}
    assert cfg.eval.num_steps is None
    assert cfg.policy.sde_window_range == [0, 5]
    assert cfg.output_dir == os.path.abspath("runs/a b")  # saved absolute: a rerun from any folder resumes
    assert cfg.log.report_to == []


def test_yaml_float_strings_and_null(tmp_path):
    path = write_yaml(tmp_path, "train:\n  lr: 1e-4\n  adam_eps: 1E-8\neval:\n  num_steps: 20\n")
    cfg = load_config(OnlineConfig, path, ["eval.num_steps=null"])
    assert cfg.train.lr == 1e-4 and cfg.train.adam_eps == 1e-8
    assert cfg.eval.num_steps is None
    # floats as YAML 1.2 reads them, so text is not one: '0.001' quoted was converted silently
    assert load_config(OnlineConfig, None, ["train.lr=1.5e3", "policy.eta=2E-1"]).train.lr == 1500.0
    assert err(["train.lr='0.001'"]) == "train.lr='0.001': expected float, got str"
    assert err(['rewards={digits: "1.0"}']).endswith("expected float, got str")
    with pytest.raises(ConfigError, match=r"train.lr='1e-4': expected float, got str"):
        load_config(OnlineConfig, write_yaml(tmp_path, 'train:\n  lr: "1e-4"\n'))
    # text spelled like such a float is written quoted, so a saved config.yaml reads back as it was saved
    cfg = load_config(OnlineConfig, None, ["log.run_name='1e4'", "train.lr=1e-5"])
    save_config(cfg, str(tmp_path / "saved.yaml"))
    again = load_config(OnlineConfig, str(tmp_path / "saved.yaml"))
    assert again.log.run_name == "1e4" and again.train.lr == 1e-5 and again == cfg


def test_a_section_given_as_a_mapping_sets_those_keys_and_keeps_the_others():
    """``train={batch_size: 8}`` replaced the whole section: the recipe's lr 1e-3 and an earlier
    ``train.max_grad_norm`` override went back to their defaults, and ``policy={eta: 0.5}`` dropped the
    recipe's LoRA target modules, all silently. A dict setting given whole still replaces (rewards)."""
    recipe = "configs/digits/flowgrpo.yaml"
    dotted = load_config(OnlineConfig, recipe, ["train.max_grad_norm=0.5", "train.batch_size=8", "policy.eta=0.5"])
    whole = load_config(
        OnlineConfig, recipe, ["train.max_grad_norm=0.5", "train={batch_size: 8}", "policy={eta: 0.5}"]
    )
    assert whole == dotted and whole.train.lr == 1e-3 and whole.policy.lora.target_modules
    nested = load_config(OnlineConfig, recipe, ["policy={lora: {rank: 2}}"])
    assert nested.policy.lora.rank == 2 and nested.policy.lora.target_modules == dotted.policy.lora.target_modules
    assert "unknown config key 'train.bogus'" in err(["train={bogus: 1}"])


def test_dict_override_merges_into_defaults_and_can_replace():
    assert load_config(OnlineConfig, None, ["rewards.clip=0.5"]).rewards == {"digits": 1.0, "clip": 0.5}
    assert load_config(OnlineConfig, None, ["rewards={clip: 0.5}"]).rewards == {"clip": 0.5}
    # overrides apply in order: a key given twice takes its last value (README, "Configs")
    assert load_config(OnlineConfig, None, ["max_steps=2", "max_steps=3"]).max_steps == 3
    assert load_config(OnlineConfig, None, ["train.lr=1e-3", "train={lr: 3e-4}"]).train.lr == 3e-4
    assert load_config(OnlineConfig, None, ["rewards.clip=0.5", "rewards={digits: 2.0}"]).rewards == {"digits": 2.0}


def test_an_empty_mapping_is_defaults_and_an_empty_file_is_refused(tmp_path):
    """An empty file (a failed `>` redirect, a stray name) used to train the default job."""
    assert load_config(OnlineConfig, write_yaml(tmp_path, "{}\n")) == OnlineConfig()
    with pytest.raises(ConfigError, match=r"cfg.yaml: empty \(no settings\); a config is a YAML mapping"):
        load_config(OnlineConfig, write_yaml(tmp_path, ""))


def err(overrides=(), data=None):
    with pytest.raises(ValueError) as info:
        config_from_dict(OnlineConfig, data, overrides)
    assert isinstance(info.value, ConfigError)
    return str(info.value)


def test_unknown_top_level_key(tmp_path):
    path = write_yaml(tmp_path, {"polcy": {"eta": 0.5}})
    with pytest.raises(ValueError) as info:
        load_config(OnlineConfig, path)
    msg = str(info.value)
    assert "'polcy'" in msg and "policy" in msg and "rollout" in msg and "max_steps" in msg
    assert "did you mean 'policy'" in msg
    assert "polcy" in err(["polcy.eta=0.5"])


def test_unknown_nested_key():
    msg = err(data={"policy": {"lora": {"rnak": 4}}})
    assert "policy.lora.rnak" in msg
    for valid in ("rank", "alpha", "dropout", "target_modules"):
        assert valid in msg
    assert "eta" not in msg  # only the keys at that level
    msg = err(["policy.lora.rnak=4"])
    assert "policy.lora.rnak" in msg and "target_modules" in msg


def test_wrong_types():
    msg = err(["train.lr=abc"])
    assert "train.lr" in msg and "float" in msg and "abc" in msg
    msg = err(["rollout.group_size=4.5"])
    assert "rollout.group_size" in msg and "int" in msg and "4.5" in msg
    msg = err(["task=3"])  # an int is not a str
    assert "task" in msg and "str" in msg
    msg = err(["policy.lora.target_modules=[to_q, 3]"])
    assert "policy.lora.target_modules[1]" in msg and "str" in msg
    msg = err(["policy.lora.target_modules=to_q"])
    assert "policy.lora.target_modules" in msg and "list[str]" in msg
    msg = err(["rewards.clip=high"])
    assert "rewards.clip" in msg and "float" in msg
    msg = err(["eval.num_steps=ten"])
    assert "eval.num_steps" in msg and "int | None" in msg


def test_bool_is_strict():
    for bad in ("1", "0", "yes_please", "'true'"):
        msg = err([f"log.progress_bar={bad}"])
        assert "log.progress_bar" in msg and "bool" in msg
    assert "rollout.group_size" in err(["rollout.group_size=true"])  # and a bool is not an int
    assert "train.lr" in err(["train.lr=true"])


def test_bad_literal_lists_choices():
    msg = err(["policy.dtype=fp32"])
    assert "policy.dtype" in msg and "fp32" in msg
    for choice in ("float32", "bfloat16", "float16"):
        assert choice in msg
    msg = err(["advantages.std=batch"])
    assert "advantages.std" in msg and "'group'" in msg and "'global'" in msg and "'none'" in msg
    msg = err(["policy.sde=sdee"])
    assert "policy.sde" in msg and all(s in msg for s in SDE_TYPES)


def test_malformed_override_and_non_mapping_section(tmp_path):
    msg = err(["train.lr"])
    assert "malformed override" in msg and "train.lr" in msg and "=" in msg
    assert err(["=3"]) == "malformed override '=3': no key; expected key.sub=value (e.g. train.lr=1e-4)"
    assert "an empty part in the key 'train..lr'" in err(["train..lr=1"])
    assert "train.lr" in err(["train.lr.x=1"])
    msg = err(data={"policy": 3})
    assert "policy" in msg and "mapping" in msg
    assert "policy" in err(["policy=[1, 2]"])
    with pytest.raises(ValueError, match="mapping"):
        load_config(OnlineConfig, write_yaml(tmp_path, "- 1\n- 2\n"))
    # a model name cut at its colon is a YAML mapping: "expected str, got dict" told the user nothing
    assert err(["policy.model=task:"]).endswith(
        "expected str, got dict (YAML reads task: with nothing after the colon as a mapping: finish the name, or "
        "quote it)"
    )


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["policy.sde=ode"], ["policy.sde", "no exploration noise", "flow_sde", "cps"]),
        (["policy.eta=0"], ["policy.eta", "no exploration noise"]),
        (["policy.sde=cps", "policy.eta=1.0"], ["policy.eta", "cps"]),
        (["policy.sde=cps", "policy.eta=1.5"], ["policy.eta", "cps"]),
        (["policy.eta=-0.1"], ["policy.eta", ">= 0"]),
        (["train.batch_size=3"], ["train.batch_size", "160", "3", "rollout.group_size"]),
        (["train.gradient_accumulation_steps=3"], ["train.gradient_accumulation_steps", "160", "240"]),
        (["rollout.batch_size=7"], ["rollout.batch_size", "160"]),
        (["rollout.group_size=1"], ["rollout.group_size", ">= 2"]),
        (["rollout.prompts_per_step=0"], ["rollout.prompts_per_step"]),
        (["policy.num_steps=0"], ["policy.num_steps"]),
        (["policy.guidance_scale=0.5"], ["policy.guidance_scale"]),
        (["policy.sde_window_size=11"], ["policy.sde_window_size", "10"]),
        (
            ["policy.sde_window_size=4", "policy.sde_window_range=[0, 3]"],
            ["policy.sde_window_range", "sde_window_size"],
        ),
        (["policy.sde_window_size=2", "policy.sde_window_range=[3, 11]"], ["policy.sde_window_range", "num_steps=10"]),
        (["policy.sde_window_size=2", "policy.sde_window_range=[5, 5]"], ["policy.sde_window_range"]),
        (["policy.sde_window_size=2", "policy.sde_window_range=[0, 4, 6]"], ["policy.sde_window_range", "[lo, hi]"]),
        (["rewards={}"], ["rewards", "at least one"]),
        (["rewards.digits=.inf"], ["rewards.digits", "finite"]),
        (["rewards.digits=.nan"], ["rewards.digits", "finite"]),
        (["rewards.digits=nan"], ["rewards.digits", "finite"]),  # Python's spelling, text to YAML
        (["train.lr=-NaN"], ["train.lr", "finite"]),
        (["train.lr=+-inf"], ["train.lr", "expected float"]),
        (["rewards.digits=inf"], ["rewards.digits", "finite"]),  # read as infinity, then the field's own check
        (["objective.clip_range=0"], ["objective.clip_range", "> 0"]),
        (["objective.beta=-1"], ["objective.beta"]),
        (["objective.name="], ["objective.name"]),
        (["advantages.estimator=' '"], ["advantages.estimator", "must be non-empty"]),  # registered(): blank names
        (["policy.family=' '"], ["policy.family", "must be non-empty"]),
        (["train.ema_decay=1.0"], ["train.ema_decay", "[0, 1)"]),
        (["train.lr=0"], ["train.lr"]),
        (["checkpoint.keep_last=0"], ["checkpoint.keep_last"]),
        (["eval.num_steps=0"], ["eval.num_steps"]),
        (["eval.every=-1"], ["eval.every"]),
        (["policy.lora.dropout=1.0"], ["policy.lora.dropout"]),
    ],
)
def test_value_and_cross_field_errors(overrides, needles):
    msg = err(overrides)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_valid_corner_values():
    cfg = load_config(
        OnlineConfig,
        None,
        [
            "policy.sde=cps",
            "policy.eta=0.5",
            "policy.sde_window_size=10",
            "policy.sde_window_range=[0, 10]",
            "train.batch_size=160",
            "train.ema_decay=0.99",
            "rollout.batch_size=16",
            "eval.every=0",
            "checkpoint.every=0",
            "policy.lora.rank=0",
            "policy.lora.target_modules=[]",
            "train.max_grad_norm=0",
            "rewards.digits=-1",
        ],
    )
    assert cfg.policy.sde == "cps" and cfg.train.ema_decay == 0.99
    # the policy section alone still allows the deterministic sampler (used for evaluation)
    assert PolicyConfig(sde="ode", eta=0.0).sde == "ode"


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match="eta"):
        PolicyConfig(eta=-1.0)
    with pytest.raises(ValueError, match="policy.sde"):
        OnlineConfig(policy=PolicyConfig(sde="ode", eta=0.0))
    assert PolicyConfig(eta=1).eta == 1.0  # ints accepted and normalised for floats


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        OnlineConfig,
        None,
        [
            "train.lr=1e-5",
            "train.adam_eps=1e-12",
            "rewards.clip=0.3333333333333333",
            "policy.lora.target_modules=[to_q]",
            "eval.num_steps=20",
            "policy.sde_window_size=3",
            "policy.sde_window_range=[1, 8]",
            "policy.dtype=bfloat16",
            "seed=1234",
        ],
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(path))
    assert load_config(OnlineConfig, str(path)) == cfg
    assert yaml.safe_load(path.read_text()) == config_to_dict(cfg)
    assert [p for p in os.listdir(path.parent) if p != "config.yaml"] == []  # no temp leftovers
    save_config(OnlineConfig(), str(path))  # overwrite in place
    assert load_config(OnlineConfig, str(path)) == OnlineConfig()
    assert list(config_to_dict(cfg)) == [f.name for f in dataclasses.fields(OnlineConfig)]


def test_describe_config_lists_every_field():
    text = describe_config(OnlineConfig)
    names = all_dotted(OnlineConfig)
    assert len(names) > 50
    lines = text.splitlines()
    for name in names:
        assert any(line.startswith(name + ":") for line in lines), name
    assert "policy.eta: float = 0.7" in text
    assert "policy.dtype: Literal['float32', 'bfloat16', 'float16'] = float32" in text
    assert "eval.num_steps: int | None = null" in text
    assert "rewards: dict[str, float] = {digits: 1.0}" in text
    # every field carries a help string
    for cls in {type(d) for d in _sections(OnlineConfig())} | {OnlineConfig}:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


def _sections(cfg):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield v
            yield from _sections(v)


@pytest.mark.parametrize(
    "override,key",
    [
        ("policy.lora.alpha=.inf", "policy.lora.alpha"),
        ("train.weight_decay=.inf", "train.weight_decay"),
        ("train.max_grad_norm=.inf", "train.max_grad_norm"),
        ("train.adam_eps=.inf", "train.adam_eps"),
        ("eval.guidance_scale=.inf", "eval.guidance_scale"),
        ("advantages.eps=.inf", "advantages.eps"),
    ],
)
def test_infinite_floats_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=f"{key}=inf: must be finite"):
        config_from_dict(OnlineConfig, {}, [override])


def test_the_online_and_sft_train_sections_share_one_optimizer_section():
    from genrl.config import OptimizerConfig, SFTConfig, SFTTrainConfig, TrainConfig

    names = [f.name for f in dataclasses.fields(OptimizerConfig)]
    for cls in (TrainConfig, SFTTrainConfig):
        assert issubclass(cls, OptimizerConfig) and [f.name for f in dataclasses.fields(cls)][: len(names)] == names
    assert SFTTrainConfig().lr == 3e-3 and TrainConfig().lr == 3e-4  # each trainer keeps its own defaults
    with pytest.raises(ConfigError, match="train.adam_beta1"):
        config_from_dict(SFTConfig, {}, ["train.adam_beta1=1.0"])


def test_a_choice_spelled_like_a_yaml_boolean_is_read_as_that_choice(tmp_path):
    """``train.mixed_precision=no`` (accelerate's own spelling) was refused: YAML 1.1 reads ``no`` as
    false. A choice field takes the one choice so spelled; a text field names the cause."""
    assert load_config(OnlineConfig, None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert (
        load_config(OnlineConfig, write_yaml(tmp_path, "train:\n  mixed_precision: no\n")).train.mixed_precision
        == "no"
    )
    assert "quote the text" in err(["log.project=no"])
    assert "quote the text" in err(["log.run_name=no"])  # an optional text field: the hint was missing
    assert "must be one of" in err(["train.mixed_precision=yes"])  # no choice is spelled like true


def test_a_key_given_twice_and_a_dotted_import_path_name_are_refused(tmp_path):
    """PyYAML kept the last of two ``seed:`` lines silently; ``reward_args.my_pkg.rw:fn.scale=2`` split the
    name at its dots and answered "is not a section"."""
    with pytest.raises(ConfigError, match=r"(?s)key .seed. is given twice in one mapping.*line 3"):
        load_config(OnlineConfig, write_yaml(tmp_path, "seed: 1\nmax_steps: 3\nseed: 2\n"))
    assert "use the mapping form" in err(["reward_args.my_pkg.rw:fn.scale=2"])


def test_yaml_merge_keys_work_and_a_key_that_is_no_value_is_refused(tmp_path):
    """``<<: *defaults`` was refused as "could not determine a constructor for the tag ...merge" (the
    twice-given-key check constructed it); a ``? [a, b]`` key was a TypeError (unhashable) traceback."""
    from genrl.config.base import read_yaml

    text = "defaults: &d {lr: 0.5, batch_size: 4}\ntrain: {<<: *d, lr: 0.1}\n"
    assert read_yaml(write_yaml(tmp_path, text))["train"] == {"lr": 0.1, "batch_size": 4}  # own keys win
    cfg = load_config(OnlineConfig, write_yaml(tmp_path, "train: {<<: {lr: 0.5}, batch_size: 4}\n"))
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 4
    with pytest.raises(ConfigError, match="given twice"):  # twice among a mapping's own keys: still refused
        load_config(OnlineConfig, write_yaml(tmp_path, "eval: {every: 1, every: 2}\n"))
    with pytest.raises(ConfigError, match=r"invalid YAML: a key must be text or a number, not a list.*line 2"):
        load_config(OnlineConfig, write_yaml(tmp_path, "seed: 1\n? [a, b]\n: 1\n"))


def test_data_files_for_a_task_that_reads_none_are_refused():
    """``data.train_files=[...]`` on the digits task trained on digits, the files ignored without a word."""
    message = err(["data.train_files=[prompts.txt]"])
    here = os.path.join(os.getcwd(), "prompts.txt")  # data paths are made absolute (the saved config's)
    assert message.startswith(f"data.train_files=[{here!r}]: task 'digits' reads no data files")
    assert message.endswith(
        ": remove the data settings, or choose a task that reads them (preference_data, prompts, vlm_data)"
    )
    assert load_config(OnlineConfig, None, ["task=prompts", "data.train_files=[p.txt]"]).data.train_files == [
        os.path.abspath("p.txt")
    ]
    # any other data.* setting too (the preference trainer's digits run evaluated all 10 prompts, not 2)
    from genrl.config import PreferenceConfig

    assert err(["data.prompt_key=caption"]).startswith("data.prompt_key='caption': task 'digits' reads no data files")
    with pytest.raises(ConfigError, match=r"^data.max_eval_prompts=2: task 'digits' reads no data files"):
        load_config(PreferenceConfig, "configs/digits/seppo.yaml", ["data.max_eval_prompts=2"])


@pytest.mark.parametrize(
    "override",
    ["policy.guidance_scale=4.0", "policy.sde_window_size=3", "policy.timestep_fraction=0.5", "policy.eta=0.0"],
)
def test_the_preference_trainer_refuses_the_online_rollout_settings(override):
    """The preference trainer samples with reference.* (ODE) and evaluates with eval.*: these policy settings
    changed nothing (identical checkpoints), while its SD1.5 and SD3.5-M recipes set policy.guidance_scale."""
    from genrl.config import PreferenceConfig

    key = override.split("=")[0]
    with pytest.raises(
        ConfigError, match=rf"^{key}=.*is read only by trainer: online's rollouts \(trainer: preference samples"
    ):
        load_config(PreferenceConfig, "configs/digits/seppo.yaml", [override])


def test_a_denoising_policy_refuses_the_token_kl_estimators():
    """objective.kl_type=k1 on a flow policy failed only after loading and the step-0 evaluation (files
    written), and with beta=0 log.kl_every logged no KL at all."""
    for kl in ("k1", "k3"):
        message = err([f"objective.kl_type={kl}"])
        assert (
            message.startswith(f"objective.kl_type='{kl}': is a token policies' estimator") and "gaussian" in message
        )


def test_rewards_that_all_weigh_zero_are_refused():
    """rewards={digits: 0.0} ran with every advantage 0 (loss 0, frac_zero_std 1): a run that trains nothing."""
    assert "needs a nonzero weight" in err(["rewards={digits: 0.0}"])
    assert load_config(OnlineConfig, None, ["rewards={digits: 1.0, jpeg_compressibility: 0.0}"]).rewards["digits"] == 1


@pytest.mark.parametrize(
    "overrides, key, reader",
    [
        (["advantages.riskpo.alpha=0.3"], "advantages.riskpo.alpha=0.3", "by advantage estimator riskpo"),
        (["advantages.bnpo.alpha=1.0", "advantages.bnpo.beta=1.0"], "advantages.bnpo.alpha=1.0", "estimator bnpo"),
        (["advantages.estimator=bnpo", "advantages.std=global"], "advantages.std='global'", "estimator grpo"),
        (["advantages.estimator=riskpo", "advantages.eps=1e-6"], "advantages.eps=1e-06", "estimator grpo"),
        (["advantages.d3s.batch_keep=0.5"], "advantages.d3s.batch_keep=0.5", "when downsample = d3s"),
        (["objective.mhpo.c=2.0"], "objective.mhpo.c=2.0", "by objective mhpo (this config's objective: 'grpo')"),
        (["objective.name=sapo", "objective.mdpo.step_size=2.0"], "objective.mdpo.step_size", "by objective mdpo"),
        (["objective.tau_neg=2.0"], "objective.tau_neg=2.0", "by objective sapo"),
        (["objective.step_kl_weight=0.5"], "objective.step_kl_weight=0.5", "by objective sage_grpo"),
        (["objective.kl_warmup=5"], "objective.kl_warmup=5", "when kl_controller = adaptive"),
        (["objective.max_len_norm=16"], "objective.max_len_norm=16", "seq-mean-token-sum-norm"),
        (["policy.cfg_grad=cond"], "policy.cfg_grad='cond'", "when guidance_scale > 1"),
        (["policy.cps_log_prob=gaussian"], "policy.cps_log_prob='gaussian'", "when sde = cps"),
        (["rollout.dynamic_sampling_max_rounds=3"], "rollout.dynamic_sampling_max_rounds=3", "dynamic_sampling"),
        (["rollout.vas.lam=0.3"], "rollout.vas.lam=0.3", "when sampler = vas"),
        (["objective.name=gspo", "objective.loss_agg=seq-mean-token-sum-norm"], "objective.loss_agg", "gspo's"),
        (["objective.name=fiberpo", "objective.max_len_norm=7"], "objective.max_len_norm=7", "sum-norm"),
        (["objective.beta=0.01", "log.kl_every=5"], "log.kl_every=5", "with objective.beta = 0"),
        (["objective.anchor_period=10"], "objective.anchor_period=10", "when a KL is computed"),
        (["objective.kl_convention=flow_grpo"], "objective.kl_convention='flow_grpo'", "when a KL is computed"),
        (["advantages.std=none", "advantages.eps=1e-6"], "advantages.eps=1e-06", "when std divides"),
        (
            ["advantages.estimator=riskpo", "advantages.riskpo.quantile_lr=0.5"],
            "advantages.riskpo.quantile_lr",
            "tracked",
        ),
        (
            ["objective.name=mdpo", "objective.mdpo.schedule=constant", "objective.mdpo.min_step_size=0.1"],
            "objective.mdpo.min_step_size=0.1",
            "when schedule = anneal",
        ),
        (["rollout.sampler=vas", "rollout.vas.b=0.0"], "rollout.vas.b=0.0", "when the policy writes text"),
        (["rollout.sampler=vas", "rollout.vas.diversity=self-bleu"], "rollout.vas.diversity", "writes text"),
        (["policy.prompt_cache_mb=0", "policy.prompt_cache_device=cpu"], "policy.prompt_cache_device", "cache on"),
        (
            [
                "advantages.downsample=d3s",
                "advantages.d3s.action_keep_init=1.0",
                "advantages.d3s.token_scope=sequence",
            ],
            "advantages.d3s.token_scope='sequence'",
            "when actions are dropped",
        ),
    ],
)
def test_options_of_a_component_that_is_not_selected_are_refused(overrides, key, reader):
    """Each was accepted and changed nothing (advantages.riskpo.* under grpo, objective.mhpo.* under grpo,
    advantages.std=global under bnpo, policy.cfg_grad without CFG, ...): one line names the key and its reader."""
    message = err(overrides)
    assert message.startswith(key) and reader in message and "remove it, or set it back to its default (" in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["objective.name=sapo", "objective.tau_pos=2.0"],
        ["objective.name=mhpo", "objective.mhpo.c=2.0"],
        ["advantages.estimator=riskpo", "advantages.riskpo.alpha=0.3"],
        ["advantages.downsample=d3s", "advantages.d3s.batch_keep=0.5"],
        ["policy.sde=cps", "policy.eta=0.5", "policy.cps_log_prob=gaussian"],
        ["policy.guidance_scale=4.0", "policy.cfg_grad=cond"],
        ["rollout.dynamic_sampling=true", "rollout.dynamic_sampling_max_rounds=3"],
        ["objective.name=dr_grpo", "advantages.std=none", "objective.max_len_norm=16"],
        ["objective.loss_agg=seq-mean-token-sum-norm", "objective.max_len_norm=16"],
        ["advantages.estimator=bnpo", "objective.name=dr_grpo"],  # bnpo divides by no std: dr_grpo's rule is grpo's
        ["objective.tau_pos=1.0", "advantages.riskpo.alpha=0.2"],  # the defaults, written out: nothing changes
        ["policy.prompt_cache_device=cpu"],
        ["advantages.downsample=d3s", "advantages.d3s.token_scope=sequence"],
    ],
)
def test_options_of_the_selected_component_are_accepted(overrides):
    load_config(OnlineConfig, None, overrides)


def test_token_policies_default_to_the_k3_kl():
    from genrl.config import load_trainer_config

    assert load_trainer_config("configs/digit_sum/grpo.yaml", ["log.kl_every=1"]).objective.kl_type == "k3"
    cfg = load_trainer_config("configs/digit_sum/grpo.yaml", ["objective.beta=0.04", "objective.kl_type=k1"])
    assert cfg.objective.kl_type == "k1"
    assert load_config(OnlineConfig, None, []).objective.kl_type == "gaussian"
    assert load_trainer_config("configs/digit_sum/sapo.yaml", []).objective.clip_range == 0.2  # PPO's, for tokens


def test_capo_reads_its_base_objectives_options_and_a_plugin_may_read_any():
    from genrl.config import OnlineVLMConfig

    capo = ["objective.name=capo", "policy.lora.rank=0", "objective.tau_pos=2.0"]
    assert load_config(OnlineVLMConfig, None, [*capo, "objective.capo.base=sapo"]).objective.tau_pos == 2.0
    with pytest.raises(
        ConfigError, match=r"^objective.capo.symmetric=false: is read only when hessian_tau > 0 .* default \(true\)"
    ):
        load_config(
            OnlineVLMConfig, None, [*capo[:2], "objective.capo.hessian_tau=0", "objective.capo.symmetric=false"]
        )
    with pytest.raises(ConfigError, match=r"^objective.tau_pos=2.0: is read only by objective sapo"):
        load_config(OnlineVLMConfig, None, capo)
    # an estimator from the user's own package may read grpo's options: nothing is refused
    cfg = load_config(
        OnlineConfig, None, ["advantages.estimator=genrl.advantages.grpo:grpo_estimator", "advantages.std=none"]
    )
    assert cfg.advantages.std == "none"
    # VAS's diversity score reads response texts: a token policy's options
    assert load_config(OnlineVLMConfig, None, ["rollout.sampler=vas", "rollout.vas.b=0.0"]).rollout.vas.b == 0.0


@pytest.mark.parametrize("override", ["family=sd3", "num_frames=9", "max_sequence_length=77", "embedded_guidance=2.0"])
def test_the_diffusion_policy_refuses_the_flow_families_settings(override):
    """The diffusion (UNet) policy reads no model family: these changed nothing."""
    diffusion = ["policy.name=diffusion", "policy.sde=ddim", "policy.eta=1.0"]
    with pytest.raises(ConfigError, match=rf"^policy.{override.split('=')[0]}=.*read only by the flow policies"):
        load_config(OnlineConfig, None, [*diffusion, f"policy.{override}"])


def test_one_message_lists_every_setting_to_undo_with_its_default():
    """A recipe's value cannot be removed from the command line: the message gives each changed key's default
    (an override setting it back undoes it), all of them at once (sapo.yaml with objective.name=grpo named
    tau_pos, then tau_neg on the next try)."""
    with pytest.raises(ConfigError) as info:
        load_config(OnlineConfig, "configs/digits/sapo.yaml", ["objective.name=grpo"])
    assert str(info.value) == (
        "objective.tau_pos=1000.0: is read only by objective sapo (this config's objective: 'grpo'); remove it, "
        "or set it back to its default (1.0); so is objective.tau_neg=1050.0 (default 1.05)"
    )
    # every key in full, booleans as YAML writes them (the listed ones lacked the section: 'vas.replacement=True')
    with pytest.raises(ConfigError) as info:
        load_config(OnlineConfig, None, ["rollout.vas.replacement=true", "rollout.vas.lam=0.3"])
    assert str(info.value).endswith("; so is rollout.vas.replacement=true (default false)")
    # settings of different owners, one message too (capo's, then mhpo's, then sapo's came one launch at a time)
    with pytest.raises(ConfigError) as info:
        load_config(OnlineConfig, None, ["objective.mhpo.c=2", "objective.tau_pos=2", "objective.capo.fisher_tau=1"])
    assert str(info.value) == (
        "objective.capo.fisher_tau=1.0: is read only by objective capo (this config's objective: 'grpo'); remove it, "
        "or set it back to its default (0.0001); so is objective.mhpo.c=2.0 (default 1.5), objective.tau_pos=2.0 "
        "(default 1.0)"
    )
    load_config(
        OnlineConfig,
        "configs/digits/sapo.yaml",
        ["objective.name=grpo", "objective.tau_pos=1.0", "objective.tau_neg=1.05"],
    )


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        (  # three checks of two sections: three launches to undo
            "digits/sage.yaml",
            ["objective.name=sapo", "objective.beta=0", "objective.kl_controller=fixed"],
            "objective.anchor_period=10: is read only when a KL is computed (objective.beta > 0, or log.kl_every > 0 "
            "to log it); remove it, or set it back to its default (0); so is objective.clip_range=0.0001 (default "
            "0.001), objective.kl_coef_min=0.001 (default 1.0e-07)",
        ),
        (  # the objective section, then the top level's reference check
            "digits/seppo.yaml",
            ["objective.name=sft", "reference.snapshot_every=10"],
            "reference.snapshot_every=10: is read only by objectives with reference samples (sft has none); remove "
            "it, or set it back to its default (30); so is objective.beta=10.0 (default 2000.0)",
        ),
        (  # the estimator's whole section first, not its own section's narrower rule; each key once
            "digit_sum/grpo.yaml",
            ["advantages.riskpo.bundle_size=4", "advantages.riskpo.quantile_lr=0.5"],
            "advantages.riskpo.bundle_size=4: is read only by advantage estimator riskpo (this config's advantage "
            "estimator: 'grpo'); remove it, or set it back to its default (5); so is advantages.riskpo.quantile_lr=0.5 "
            "(default 0.1)",
        ),
        (  # the online trainer's rollout settings under trainer: preference, with their defaults
            "digits/seppo.yaml",
            ["policy.eta=0.5", "policy.guidance_scale=3", "policy.timestep_fraction=0.9"],
            "policy.eta=0.5: is read only by trainer: online's rollouts (trainer: preference samples with "
            "reference.num_steps / guidance_scale, evaluates with eval.*); remove it, or set it back to its default "
            "(0.7); so is policy.guidance_scale=3.0 (default 1.0), policy.timestep_fraction=0.9 (default 1.0)",
        ),
    ],
)
def test_every_unread_setting_of_the_config_is_refused_in_one_message(config, overrides, message):
    """Each check of unread settings raised on its own, so a recipe switched to another objective took one
    launch per check to undo (a newcomer's trial: sage.yaml to sapo took three)."""
    assert recipe_refusal(config, overrides) == message


def test_an_unknown_base_of_capo_is_named_by_its_key():
    """capo reads its base objective's options: an unknown base raised the registry's bare message, naming no key."""
    message = recipe_refusal("digit_sum/grpo.yaml", ["objective.name=capo", "objective.capo.base=grpo_x"])
    assert message.startswith("objective.capo.base='grpo_x': unknown objective 'grpo_x'")


@pytest.mark.parametrize(
    "path, overrides, message",
    [
        ("configs/digits/flowgrpo.yaml", ["objective.clip_range_high=0.01"], "objective grpo clips symmetrically"),
        ("configs/digit_sum/grpo.yaml", ["objective.name=sage_grpo"], "policy 'vlm' takes no SDE steps"),
        (
            "configs/digit_sum/grpo.yaml",
            ["objective.beta=0.01", "objective.kl_convention=flow_grpo"],
            "kl_type = gauss",
        ),
        ("configs/digits/sage_no_kl.yaml", ["objective.step_kl_weight=0.5"], "when objective.beta > 0"),
        ("configs/digits/seppo.yaml", ["log.kl_every=5"], "by the online trainers"),
        ("configs/digit_sum/sft.yaml", ["log.kl_every=5"], "by the online trainers"),
        ("configs/digits/seppo.yaml", ["train.min_lr_ratio=0.5"], "when lr_schedule decays"),
        ("configs/digit_sum/grpo.yaml", ["objective.kl_type=k1"], "is read only when a KL is computed"),
        (
            "configs/digits/seppo.yaml",
            ["objective.name=sft"],
            r"^objective.beta=10.0: is read only by the other objectives \(sft does not read it\)",  # the recipe's
        ),
        (
            "configs/digits/seppo.yaml",
            ["objective.name=sft", "objective.beta=2000", "reference.storage=disk"],
            r"^reference.storage='disk': is read only by objectives with reference samples \(sft has none\)",
        ),
        (
            "configs/digits/seppo.yaml",
            ["objective.name=diffusion_dpo", "objective.criterion=none"],
            "^objective.criterion=.none.: is read only by objective seppo",
        ),
        ("configs/digits/seppo.yaml", ["reference.mode=fixed", "reference.max_pool=3"], "when the reference can"),
        # sapo, mhpo and fiberpo only fed clip_range to a ratio/clip_frac they overwrite
        (
            "configs/digit_sum/grpo.yaml",
            ["objective.name=mhpo", "objective.clip_range=0.3"],
            r"\(mhpo does not read it\)",
        ),
        (
            "configs/digits/sapo.yaml",
            ["objective.clip_range_high=0.01"],
            "by the other objectives .sapo does not read it.",
        ),
        (  # capo masks its base's loss: with a gated base nothing reads the clip
            "configs/digit_sum/grpo.yaml",
            ["objective.name=capo", "objective.capo.base=sapo", "objective.clip_range=0.3"],
            r"\(capo and sapo do not read it\)",
        ),
        (
            "configs/digit_sum/grpo.yaml",
            ["task=vlm_data", "data.train_files=[t.jsonl]", "data.response_key=s"],
            "by trainer: sft",
        ),
        # with log.kl_every alone, the token policy gave no closed-form KL and nothing was logged
        ("configs/digit_sum/grpo.yaml", ["objective.kl_type=gaussian", "log.kl_every=1"], "needs k3 .or k1."),
    ],
)
def test_more_settings_nothing_reads_are_refused_before_any_work(path, overrides, message):
    """grpo's clip_range_high was refused only in the first update, after the step-0 evaluation wrote the run;
    sage_grpo on a VLM named a key (policy.sde) that config has not; the others were accepted and unread."""
    from genrl.config import load_trainer_config

    with pytest.raises(ConfigError, match=message):
        load_trainer_config(path, overrides)


@pytest.mark.parametrize(
    "config,name,says",
    [  # a denoising policy in the VLM trainer's section crashed (AttributeError: no 'family'), exit 1
        ("digit_sum/grpo.yaml", "flow", "policy.name='flow': is a denoising policy: it trains with trainer: online"),
        ("digit_sum/grpo.yaml", "diffusion", "policy.name='diffusion': is a denoising policy"),
        ("digits/flowgrpo.yaml", "vlm", "policy.name='vlm': is not a denoising policy (flow, diffusion)"),
    ],
)
def test_a_policy_in_another_trainers_section_is_refused_naming_policy_name(config, name, says):
    from conftest import recipe_refusal

    message = recipe_refusal(config, [f"policy.name={name}", "policy.model=org/some-model"])
    assert message.startswith(says), message


@pytest.mark.parametrize("config_cls", ["OnlineConfig", "PreferenceConfig"])
def test_full_determinism_switches_torch_to_deterministic_kernels(config_cls, monkeypatch):
    """``train.full_determinism`` (the GPU kill-and-resume checks need it): the accelerator's maker turns on
    transformers' ``enable_full_determinism`` (deterministic algorithms, the cuBLAS workspace); off by default."""
    import torch

    import genrl.config as config_module
    from genrl.trainers.common import make_accelerator

    set_by_it = ("CUBLAS_WORKSPACE_CONFIG", "CUDA_LAUNCH_BLOCKING", "FLASH_ATTENTION_DETERMINISTIC")
    for var in (*set_by_it, "ASCEND_LAUNCH_BLOCKING", "HCCL_DETERMINISTIC"):
        monkeypatch.setenv(var, "")  # recorded, so monkeypatch restores (or removes) each after the test
        monkeypatch.delenv(var)
    cls = getattr(config_module, config_cls)
    assert cls().train.full_determinism is False
    make_accelerator(cls().train)
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())  # it seeds all three
    try:
        make_accelerator(load_config(cls, None, ["train.full_determinism=true"]).train, seed=3)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])


def test_local_paths_are_saved_absolute_and_hub_ids_as_typed(tmp_path, monkeypatch):
    """A run's config.yaml named local models and data files as typed, relative to the launch folder:
    `genrl export` recorded base_model "sd15", and the gallery from another folder found no data."""
    from genrl.config.checks import local_path

    (tmp_path / "sd15").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local_path("sd15", existing_only=True) == str(tmp_path / "sd15")
    assert local_path("~/sd15", existing_only=True) == str(tmp_path / "sd15")
    assert local_path("org/model", existing_only=True) == "org/model"  # a hub id
    assert local_path("task:digits", existing_only=True) == "task:digits"
    assert local_path("data/w.jsonl") == str(tmp_path / "data" / "w.jsonl")  # a data file: always
    assert local_path("") == ""
    # what the configs do with it: the policy's local model, the data files and output_dir
    from families import dummy_sd3

    dummy_sd3.build().save_pretrained(tmp_path / "sd3")
    (tmp_path / "p.txt").write_text("a cat\n")
    cfg = load_config(OnlineConfig, None, ["task=prompts", "data.train_files=[p.txt]", "policy.model=sd3"])
    assert cfg.policy.model == str(tmp_path / "sd3") and cfg.data.train_files == [str(tmp_path / "p.txt")]
    assert cfg.output_dir == str(tmp_path / OnlineConfig().output_dir)
    assert load_config(OnlineConfig, None, ["policy.model=org/model"]).policy.model == "org/model"
    # a reward's model: the run's saved config named it relative to the launch folder. Not an sft: name: its
    # config's own output_dir is relative to the launch too, so from another folder it named another model
    from genrl.models import absolute_model

    (tmp_path / "sft.yaml").write_text("model: task:digit_sum\noutput_dir: runs/sft\n")
    assert absolute_model("sft:sft.yaml") == "sft:sft.yaml"
    (tmp_path / "clip").mkdir()
    cfg = load_config(OnlineConfig, None, ["rewards={clip: 1.0}", "reward_args={clip: {model: clip}}"])
    assert cfg.reward_args == {"clip": {"model": str(tmp_path / "clip")}}
    cfg = load_config(OnlineConfig, None, ["rewards={clip: 1.0}", "reward_args={clip: {model: ViT-B-32}}"])
    assert cfg.reward_args == {"clip": {"model": "ViT-B-32"}}  # an architecture name, as typed


def test_evaluation_only_prompt_files_may_change_on_resume(tmp_path, monkeypatch):
    from genrl.config import save_config
    from genrl.trainers.common import check_resume

    monkeypatch.chdir(tmp_path)
    for name in ("p.txt", "t1.txt", "t2.txt"):
        (tmp_path / name).write_text("a cat\n")
    base = ["task=prompts", "data.train_files=[p.txt]", "output_dir=run"]
    (tmp_path / "run").mkdir()
    save_config(load_config(OnlineConfig, None, [*base, "data.test_files=[t1.txt]"]), "run/config.yaml")
    check_resume(load_config(OnlineConfig, None, [*base, "data.test_files=[t2.txt]"]), 1)
    with pytest.raises(ValueError, match="settings it was not trained with: data.train_files"):
        check_resume(
            load_config(OnlineConfig, None, ["task=prompts", "data.train_files=[t1.txt]", "output_dir=run"]), 1
        )


def test_a_resume_compares_with_the_settings_its_checkpoint_recorded(tmp_path):
    """A resume compared the new settings with the run's config.yaml only, so an edit there (the new
    LoRA alpha written into it by hand) let a run continue under settings its checkpoint was not trained
    with. A checkpoint records them (meta.json's ``config``); config.yaml is the fallback for older ones."""
    from genrl.checkpoint import save_checkpoint
    from genrl.config import config_to_yaml, save_config
    from genrl.trainers.common import check_resume

    base = [f"output_dir={tmp_path}", "max_steps=10"]
    trained = load_config(OnlineConfig, None, base)
    ckpt = save_checkpoint(str(tmp_path / "checkpoints"), 5, {"step": 5}, record={"config": config_to_yaml(trained)})
    edited = load_config(OnlineConfig, None, [*base, "policy.lora.alpha=64"])
    save_config(edited, tmp_path / "config.yaml")  # the hand edit
    check_resume(edited, 5)  # without the checkpoint, config.yaml is all there is
    with pytest.raises(ValueError, match=r"settings it was not trained with: policy\.lora\.alpha: 8\.0 -> 64\.0;"):
        check_resume(edited, 5, ckpt)
    check_resume(load_config(OnlineConfig, None, [*base[:1], "max_steps=20"]), 5, ckpt)  # resumable: allowed
    old = save_checkpoint(str(tmp_path / "old"), 5, {"step": 5})  # written before checkpoints recorded settings
    check_resume(edited, 5, old)


@pytest.mark.parametrize(
    "record", ["policy: [\n", "seed: 1\nseed: 2\n", "\tseed: 1", "", "null", "{}", "max_steps: abc\n", "future: 1\n"]
)
def test_a_damaged_settings_record_is_passed_over_for_config_yaml(tmp_path, record):
    """A checkpoint whose recorded settings cannot be read (invalid YAML was a traceback of export, gallery
    and resume; an empty record read as every default refused the run's own settings; unknown keys turned the
    comparison off) is compared through config.yaml instead, as one that records none, with a warning."""
    import json

    from genrl.checkpoint import save_checkpoint
    from genrl.config import config_to_yaml, save_config
    from genrl.trainers.common import check_resume

    base = [f"output_dir={tmp_path}", "max_steps=10"]
    trained = load_config(OnlineConfig, None, base)
    ckpt = save_checkpoint(str(tmp_path / "checkpoints"), 5, {"step": 5}, record={"config": config_to_yaml(trained)})
    meta = json.loads((tmp_path / "checkpoints" / "step-000005" / "meta.json").read_text())
    (tmp_path / "checkpoints" / "step-000005" / "meta.json").write_text(json.dumps({**meta, "config": record}))
    save_config(trained, tmp_path / "config.yaml")
    with pytest.warns(
        UserWarning, match=r"step-000005/meta.json: its recorded settings cannot be read \(.+\); compar"
    ):
        check_resume(trained, 5, ckpt)
    with pytest.raises(ValueError, match=r"policy\.lora\.alpha: 8\.0 -> 64\.0"):  # warned once only
        check_resume(load_config(OnlineConfig, None, [*base, "policy.lora.alpha=64"]), 5, ckpt)


def test_a_seed_takes_32_bits():
    """``seed=9223372036854775807`` passed, then failed at the first step with "Overflow when unpacking long
    long" (each step's generator is seeded with seed * 1_000_003 + step, an int64)."""
    assert load_config(OnlineConfig, None, [f"seed={2**32 - 1}"]).seed == 2**32 - 1
    for seed in (2**32, 2**63 - 1):
        with pytest.raises(ConfigError, match=r"^seed=\d+: must be < 2\*\*32"):
            load_config(OnlineConfig, None, [f"seed={seed}"])


def test_help_config_marks_the_shared_policy_settings_the_preference_trainer_refuses():
    """--help-config of a preference recipe listed the online rollout settings with the online trainer's help
    ("RL needs eta > 0"); only the parent section's line said that they are refused."""
    from genrl.config import PreferenceConfig, describe_config
    from genrl.config.preference import ROLLOUT_ONLY

    blocks = {b.split(":")[0]: b for b in describe_config(PreferenceConfig).split("\npolicy.")[1:]}
    assert {k for k, b in blocks.items() if "[refused by trainer: preference]" in b} == set(ROLLOUT_ONLY)
    assert "[refused by" not in describe_config(OnlineConfig)
