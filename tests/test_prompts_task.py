"""``task: prompts``: prompt files as users write them (a byte-order mark, Windows line ends, a folder
of files), and the files it cannot read, named."""

import json
import os
import re

import pytest

from genrl.tasks.prompts import read_prompts
from genrl.tasks.rows import LOCATION


def test_a_byte_order_mark_and_crlf_do_not_reach_the_prompts(tmp_path):
    """The BOM a Windows editor writes stayed in the first prompt ("\\ufeffa cat")."""
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbfa cat\r\n\r\na dog\r\n")
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "a car", "tag": 1}).encode() + b"\r\n")
    txt, jsonl = tmp_path / "p.txt", tmp_path / "m.jsonl"
    assert read_prompts([str(txt), str(jsonl)]) == [
        ("a cat", {LOCATION: f"{txt}:1"}),
        ("a dog", {LOCATION: f"{txt}:3"}),
        ("a car", {"tag": 1, LOCATION: f"{jsonl}:1"}),
    ]


def test_a_prompt_is_located_by_its_file_and_line_not_by_a_source_column(tmp_path):
    """Start-up refusals named a prompt by its index; a row's own "source" key was shown as its location."""
    from genrl.policies.base import prompt_location

    f = tmp_path / "m.jsonl"
    f.write_text(
        "".join(json.dumps({"prompt": p, "source": s}) + "\n" for p, s in (("a cat", "laion"), ("a dog", "x")))
    )
    rows = read_prompts([str(f)])
    assert rows[0] == ("a cat", {"source": "laion", LOCATION: f"{f}:1"})  # the column stays the user's
    assert prompt_location(rows, 1) == f"{f}:2"
    f.write_text(json.dumps({"prompt": "a cat", LOCATION: "x"}) + "\n")
    with pytest.raises(ValueError, match=rf"m.jsonl:1: the key '{LOCATION}' is genrl's .*; rename it$"):
        read_prompts([str(f)])


def test_a_folder_contributes_its_prompt_files_in_name_order(tmp_path):
    """A folder was reported as a prompt file that "does not exist"; the other file-backed tasks read folders."""
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "first"}) + "\n")
    (tmp_path / "notes.md").write_text("not prompts\n")
    assert [p for p, _ in read_prompts([str(tmp_path)])] == ["first", "second"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"prompt folder '.*empty' holds no .txt, .jsonl files"):
        read_prompts([str(tmp_path / "empty")])


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("latin.txt", "caf\xe9\n".encode("latin-1"), r"prompt file '.*latin.txt': not UTF-8 text \(byte 3\)"),
        ("bad.jsonl", b'{"prompt": "x"}\n{oops\n', r"bad.jsonl:2: not valid JSON"),
        ("p.csv", b"a,b\n", r"p.csv': unsupported type; expected one of .txt, .jsonl"),
        ("blank.txt", b" \n\n", "no prompts in"),
    ],
)
def test_unreadable_prompt_files_are_named(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_prompts([str(tmp_path / name)])
    with pytest.raises(ValueError, match="does not exist"):
        read_prompts([str(tmp_path / "missing.txt")])


def test_a_data_path_that_is_no_regular_file_says_so(tmp_path):
    """A FIFO or /dev/null as a data file was reported as missing; a broken link too, naming nothing more."""
    from genrl.tasks.rows import expand_data_paths

    os.mkfifo(tmp_path / "fifo.jsonl")
    os.symlink(tmp_path / "gone.jsonl", tmp_path / "link.jsonl")
    for path, says in (
        (tmp_path / "fifo.jsonl", "is not a regular file"),
        ("/dev/null", "is not a regular file"),
        (tmp_path / "link.jsonl", f"is a link to a missing file ({tmp_path / 'gone.jsonl'})"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"data.train_files: data file '{path}' {says}")):
            expand_data_paths([str(path)], key="data.train_files")


@pytest.mark.parametrize("key", ["data.train_files", "data.test_files"])
def test_a_missing_prompt_file_names_its_config_key(tmp_path, capsys, key):
    """The one-line error named the file, not the key listing it (a recipe's default prompt files)."""
    from genrl.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    files = {"data.train_files": [str(prompts)], "data.test_files": [str(prompts)], key: [str(tmp_path / "no.txt")]}
    sets = [f"{k}=[{v[0]}]" for k, v in files.items()]
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/digits/flowgrpo.yaml")
    argv = ["train", config, "task=prompts", *sets, f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"genrl train: {key}: prompt file '{tmp_path / 'no.txt'}' does not exist (expected a .txt, .jsonl file or a folder)"
    )
    assert not (tmp_path / "run").exists()


def test_a_prompt_the_digits_model_cannot_read_fails_at_start_up(tmp_path, base_model, capsys):
    """A prompt file for the digits model with a word outside its vocabulary trained on ``<unk>``."""
    from genrl.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a handwritten digit one\nthe handwritten digit nine\na handwritten digit neuf\n")
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/digits/flowgrpo.yaml")
    argv = ["train", config, "task=prompts", f"data.train_files=[{prompts}]", f"policy.model={base_model}"]
    assert main([*argv, f"output_dir={tmp_path / 'run'}", "rewards={jpeg_incompressibility: 1.0}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # the file and line first
        f"genrl train: {prompts}:3: prompt 'a handwritten digit neuf': this model's tokenizer does not know 'neuf' (its "
        "words: a an digit eight five four handwritten image nine number of one photo seven six the three two zero) "
        "(1 of 3 prompts are refused)"
    )
    assert not (tmp_path / "run").exists()
