"""Config fuzzing (issue 16): malformed values generated from the config schemas themselves. Every
leaf key of every trainer's config (online, preference, SFT) gets a value of the wrong type (and every
float NaN), every section an unknown key; each must end ``genrl train`` with exit code 2 and one line
naming the key, before anything is written to ``output_dir``. File-level faults (a directory, a binary
file or a missing file as the config, ``output_dir`` a file, a damaged model folder) are in
tests/test_reference_faults.py."""

import dataclasses
import types
import typing

import pytest

from genrl.cli import main as cli_main
from genrl.config import OnlineConfig, PreferenceConfig, SFTConfig

# every trainer's schema, with a recipe of it to break
RECIPES = {
    OnlineConfig: "configs/digits/flowgrpo.yaml",
    PreferenceConfig: "configs/digits/seppo.yaml",
    SFTConfig: "configs/digit_sum/sft.yaml",
}


def _arms(tp) -> list:
    """The types a field accepts (the arms of an Optional / Union, else the type itself)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _wrong_value(tp) -> typing.Optional[str]:
    """An override value (YAML) that no field of type ``tp`` accepts; None for ``Any``."""
    if tp is typing.Any:
        return None
    return "[1, 2]" if str in _arms(tp) else "7.5x"  # a list is no str; "7.5x" no number, bool, list, choice


def _cases():
    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        out.append((f"{prefix}nope_key=1", f"{prefix}nope_key"))  # unknown key in every section
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            tp, key = hints[f.name], prefix + f.name
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                out.append((f"{key}=7.5x", key))
                continue
            value = _wrong_value(tp)
            if value is not None:
                out.append((f"{key}={value}", key))
            if float in _arms(tp):  # NaN is no setting of any float
                out.append((f"{key}=.nan", key))
                out.append((f"{key}=1e300", key))  # finite, but float32 (the tensors, AdamW) overflows
                out.append((f"{key}=1e-50", key))  # not 0, but 0 in float32 (adam_eps: AdamW divides by it)
            if int in _arms(tp):  # torch takes ints as int64 (a seed of 2**63 failed at the first step)
                out.append((f"{key}={2**63}", key))

    cases = []
    for cls, recipe in RECIPES.items():
        out.clear()
        walk(cls, "")
        cases += [(recipe, *case) for case in out]
    return cases


CASES = _cases()


def test_the_schema_gives_at_least_a_hundred_cases():
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("recipe, override, key", CASES, ids=[f"{c[0].split('/')[-1]}:{c[1]}" for c in CASES])
def test_a_malformed_override_is_one_line_naming_its_key(tmp_path, capsys, recipe, override, key):
    run = tmp_path / "run"
    rc = cli_main(["train", recipe, f"output_dir={run}", override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("genrl train: ")]
    assert rc == 2 and len(lines) == 1 and key in lines[0] and "Traceback" not in err, err
    assert not run.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["export"], "required: RUN_DIR, --out"),
        (["export", "run", "--out", "x", "--lora", "fuse"], "argument --lora: invalid choice: 'fuse'"),
        (["gallery", "run", "--out", "x", "--seeds-per-prompt", "abc"], "--seeds-per-prompt: invalid int value"),
        (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_a_usage_error_is_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err and "--help" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_folder_it_was_writing_under(tmp_path, capsys, monkeypatch):
    """``[Errno 28] No space left on device`` from a write that names no file (TensorBoard's event writer)
    was the whole line: it now says under which folder the command was writing."""
    import errno
    import os

    import genrl.trainers

    def full_disk(cfg, kind):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(genrl.trainers, "run_trainer", full_disk)
    run = tmp_path / "run"
    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/digits/flowgrpo.yaml")
    assert cli_main(["train", recipe, f"output_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"genrl train: [Errno 28] No space left on device (writing under {run})"
    # the disk that is full is named, whichever of the output, the cache and the temporary folder it holds
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, 0) if str(p) == str(tmp_path) else real(p))
    assert cli_main(["train", recipe, f"output_dir={run}"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"No space left on device (full: the disk of {run})")
