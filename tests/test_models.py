"""One resolver for model names: resolving never builds, `genrl prepare` does (logged), and the
clip reward no longer imports the digits CLIP module (the task owns its models)."""

import ast
import json
import os

import pytest

from genrl.cli import main as cli_main
from genrl.models import config_models, prepare_model, resolve_model
from genrl.registry import TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolving_an_unbuilt_task_model_never_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    for model, kind in (("task:digits", "policy"), ("task:digits", "clip"), ("task:digit_sum", "policy")):
        with pytest.raises(ValueError, match=r"not built yet: run `genrl prepare"):
            resolve_model(model, kind)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="task 'digit_sum' has no 'clip' model; its models: policy"):
        resolve_model("task:digit_sum", "clip")
    sft = tmp_path / "sft.yaml"
    sft.write_text(f"trainer: sft\noutput_dir: {tmp_path / 'sft_run'}\n")
    with pytest.raises(ValueError, match="no SFT model at .*sft_run/model: run `genrl prepare"):
        resolve_model(f"sft:{sft}")
    assert resolve_model("/some/folder") == "/some/folder" and resolve_model("org/name") == "org/name"


def test_genrl_prepare_builds_what_a_config_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "sft.yaml"
    config.write_text(open(os.path.join(ROOT, "configs", "digit_sum", "sft.yaml")).read())
    assert cli_main(["prepare", str(config)]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path == TASKS.get("digit_sum")().model_path() and os.path.isfile(os.path.join(path, "genrl_task.json"))
    assert resolve_model("task:digit_sum") == path == prepare_model("task:digit_sum")


def test_genrl_prepare_says_when_a_config_names_nothing_to_build(capsys):
    """A config of hub ids only exited 0 without a word."""
    assert cli_main(["prepare", os.path.join(ROOT, "configs", "sd35m", "flowgrpo_pickscore.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "names no task: or sft: model, so nothing to build" in err


def test_config_models_lists_policy_and_reward_models():
    from genrl.config import OnlineConfig, load_config

    cfg = load_config(OnlineConfig, os.path.join(ROOT, "configs", "digits", "flowgrpo_clip.yaml"))
    assert config_models(cfg) == [("task:digits", "policy"), ("task:digits", "clip")]


def test_the_clip_reward_does_not_import_the_digits_clip_module():
    tree = ast.parse(open(os.path.join(ROOT, "rewards", "clip.py")).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "rewards.digits_clip" not in imported and "genrl.models" in imported


@pytest.mark.parametrize(
    "config,key,model,says",
    [  # each reached its loader only after the model was built (the sft: one after a whole SFT run)
        ("digits/flowgrpo.yaml", "policy.model", "task:digit_sum", "the vlm policy's model, not the flow policy's"),
        ("digits/seppo.yaml", "policy.model", "sft:SFT", "the vlm policy's model, not the flow policy's"),
        ("sd15/ddpo_pickscore.yaml", "policy.model", "task:digits", "the flow policy's model, not the diffusion"),
        ("digit_sum/grpo.yaml", "policy.model", "task:moving_digits", "the flow policy's model, not the vlm policy's"),
        (
            "digit_sum/sft.yaml",
            "model",
            "task:digits",
            "the flow policy's model, not the vlm policy's: the SFT trainer",
        ),
    ],
)
def test_a_task_or_sft_model_another_policy_loads_is_refused_before_it_is_built(
    tmp_path, monkeypatch, capsys, config, key, model, says
):
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    sft = tmp_path / "sft.yaml"
    sft.write_text(f"trainer: sft\noutput_dir: {tmp_path / 'sft_run'}\nmax_steps: 2\n")
    model = model.replace("SFT", str(sft))
    out = tmp_path / "run"
    assert cli_main(["train", os.path.join(ROOT, "configs", config), f"{key}={model}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"genrl train: {key}={model!r}: {says}") and len(err.splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "cache").exists() and not (tmp_path / "sft_run").exists()


def test_an_sft_model_that_is_the_runs_own_output_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """``model=sft:<this very config>`` trained the whole SFT run as a prerequisite, then refused to resume
    it with the changed model setting."""
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "sft.yaml"
    config.write_text(f"trainer: sft\noutput_dir: {tmp_path / 'run'}\nmax_steps: 20\n")
    assert cli_main(["train", str(config), f"model=sft:{config}"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"genrl train: model 'sft:{config}' is this run's own output ({tmp_path / 'run'}): name the SFT run to start from"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_building_a_model_follows_log_progress_bar(monkeypatch):
    """``log.progress_bar=false`` hid the training bar but not the base model's 250-step pretraining bar."""
    import genrl.models
    from genrl.config import PreferenceConfig, load_config

    seen = []
    monkeypatch.setattr(genrl.models, "prepare_model", lambda m, kind, progress: seen.append(progress) or m)
    recipe = os.path.join(ROOT, "configs", "digits", "seppo.yaml")
    for bar in (True, False):
        genrl.models.prepare_models(load_config(PreferenceConfig, recipe, [f"log.progress_bar={bar}"]))
    assert seen == [True, False]


def test_a_model_folders_task_record_is_read_as_a_dict_or_none(tmp_path):
    from genrl.models import TASK_INFO, read_task_info, write_task_info

    assert read_task_info(tmp_path) is None  # not built
    write_task_info(tmp_path, {"task": "digits", "seed": 3})
    assert read_task_info(tmp_path) == {"task": "digits", "seed": 3}
    for damaged in (b'{"task": ', b"[1, 2]", b"\xff\xfe", b""):  # cut short, not an object, not UTF-8, empty
        (tmp_path / TASK_INFO).write_bytes(damaged)
        assert read_task_info(tmp_path) is None, damaged


def test_the_cache_is_checked_before_a_build_and_a_damaged_record_is_built_again(tmp_path, monkeypatch, capsys):
    """A GENRL_CACHE that is blank made a folder named by its spaces; one whose ``~user`` names no user was a
    traceback; one that is a file failed after the build, saying "File exists". A damaged ``genrl_task.json``
    counted as built."""
    import re

    from genrl.io import cache_root
    from genrl.models import TASK_INFO

    for value, says in (("   ", "is blank"), ("~no-such-user-of-genrl/x", "its ~ names no home folder")):
        monkeypatch.setenv("GENRL_CACHE", value)
        with pytest.raises(ValueError, match=f"^GENRL_CACHE={re.escape(repr(value))}.*{says}"):
            cache_root()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENRL_CACHE", "relative")
    assert cache_root() == tmp_path / "relative"
    afile = tmp_path / "afile"
    afile.write_text("")
    for cache, says in ((afile, f"{afile} is a file, not a folder"), (afile / "below", f"{afile} is a file")):
        monkeypatch.setenv("GENRL_CACHE", str(cache))
        assert cli_main(["prepare", "task:digit_sum"]) == 2  # as configs spell it
        assert capsys.readouterr().err.startswith(f"genrl prepare: GENRL_CACHE='{cache}': {says}")
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path / "cache"))
    assert cli_main(["prepare", "task:digit_sum"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    stamp = os.stat(os.path.join(path, "config.json")).st_mtime_ns
    assert cli_main(["prepare", "digit_sum"]) == 0  # built: reused
    assert os.stat(os.path.join(path, "config.json")).st_mtime_ns == stamp
    with open(os.path.join(path, TASK_INFO), "w") as f:
        f.write('{"task": ')  # cut short
    assert cli_main(["prepare", "digit_sum"]) == 0  # built again
    assert os.stat(os.path.join(path, "config.json")).st_mtime_ns != stamp


def test_a_built_model_whose_files_were_damaged_says_how_to_build_it_again(tmp_path, monkeypatch, base_model):
    """A deleted weights file gave diffusers' OSError naming a .bin file and the cache path, with no way out."""
    import shutil

    from genrl.policies.flow import load_policy_pipeline

    monkeypatch.setenv("GENRL_CACHE", str(tmp_path))
    built = tmp_path / "digits-s250-seed0"  # where task:digits lives: the fixture's small base stands in
    shutil.copytree(base_model, built)
    load_policy_pipeline("task:digits")
    (built / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=rf"delete {built} and run `genrl prepare task:digits` to build it again$"):
        load_policy_pipeline("task:digits")


def test_a_model_fingerprint_tells_other_weights_apart_but_not_library_stamps(tmp_path, monkeypatch):
    """Each checkpoint keeps the base model's fingerprints; they must change with the weights and the
    settings, not with the diffusers version that saved the configs, and a file added since (a hub
    snapshot's later downloads) is no change."""
    import genrl.models as models
    from genrl.io import sampled_sha256

    base = tmp_path / "base"
    (base / "unet").mkdir(parents=True)
    (base / ".cache").mkdir()  # hidden: huggingface_hub's download records of a local_dir
    (base / ".cache" / "x.lock").write_text("1")
    config = {"_class_name": "UNet2DModel", "_diffusers_version": "0.40.0", "sample_size": 8}
    (base / "unet" / "config.json").write_text(json.dumps(config))
    weights = bytearray(range(256)) * 4096  # 1 MiB
    (base / "unet" / "weights.bin").write_bytes(bytes(weights))
    before = models.model_fingerprint(str(base))
    assert sorted(before) == ["unet/config.json", "unet/weights.bin"]
    assert before == models.model_fingerprint(str(base))  # deterministic
    (base / "unet" / "config.json").write_text(json.dumps({**config, "_diffusers_version": "0.41.0"}, indent=2))
    (base / "README.md").write_text("added since")
    assert models.changed_model_files(before, models.model_fingerprint(str(base))) == ""
    (base / "unet" / "config.json").write_text(json.dumps({**config, "sample_size": 16}))
    assert models.changed_model_files(before, models.model_fingerprint(str(base))) == "unet/config.json differs"
    (base / "unet" / "config.json").write_text(json.dumps(config))
    weights[-1] ^= 1  # the last byte: sampled too
    (base / "unet" / "weights.bin").write_bytes(bytes(weights))
    monkeypatch.setattr(models, "WHOLE_HASH_UP_TO", 1000)  # the weights are sampled now
    now = models.model_fingerprint(str(base))
    assert now["unet/weights.bin"] == f"sampled sha256 {sampled_sha256(base / 'unet' / 'weights.bin')}"
    assert models.changed_model_files(before, now) == "unet/weights.bin differs"
    os.remove(base / "unet" / "weights.bin")
    assert models.changed_model_files(before, models.model_fingerprint(str(base))) == "unet/weights.bin is missing"
    # nothing to compare: a checkpoint from before fingerprints were kept, a hub model not in this cache
    assert models.changed_model_files(None, now) == models.changed_model_files(before, {}) == ""
    assert models.model_fingerprint("org/not-downloaded") == {}


def test_a_sampled_hash_reads_evenly_spaced_blocks_first_and_last_included(tmp_path):
    from genrl.io import sampled_sha256

    path = tmp_path / "w.bin"
    data = bytearray(10 * 1024)
    path.write_bytes(bytes(data))
    plain = sampled_sha256(path, blocks=4, block_size=1024)
    for at, seen in ((0, True), (10 * 1024 - 1, True), (3 * 1024 + 100, True), (2 * 1024, False)):
        changed = bytearray(data)
        changed[at] = 1
        path.write_bytes(bytes(changed))
        assert (sampled_sha256(path, blocks=4, block_size=1024) != plain) is seen, at
    path.write_bytes(bytes(data) + b"\0")  # the size counts, whatever the blocks hold
    assert sampled_sha256(path, blocks=4, block_size=1024) != plain


def test_a_model_fingerprint_walks_only_regular_files_once_and_names_unreadable_ones(tmp_path, monkeypatch):
    """A dangling link ("No such file"), a link to a folder above (ELOOP) and a FIFO (reading blocks forever)
    in a base folder failed or hung export and training; a file that cannot be read (notes the loaders never
    open) refused them with a bare errno line."""
    import genrl.models as models

    base = tmp_path / "base"
    (base / "unet").mkdir(parents=True)
    (base / "unet" / "config.json").write_text("{}")
    (base / "notes.txt").write_text("mine")
    recorded = models.model_fingerprint(str(base))
    (base / "README.md").symlink_to(tmp_path / "nowhere.md")
    (base / "unet" / "loop").symlink_to(base)
    os.mkfifo(base / "fifo")
    assert models.model_fingerprint(str(base)) == recorded  # none of them is a file the model holds
    import genrl.io

    sha256 = genrl.io.file_sha256

    def as_root_without_read_rights(path):
        if str(path).endswith("notes.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return sha256(path)

    monkeypatch.setattr(genrl.io, "file_sha256", as_root_without_read_rights)
    now = models.model_fingerprint(str(base))
    assert now["notes.txt"] == models.UNREADABLE
    assert models.changed_model_files(recorded, now) == "notes.txt cannot be read"
