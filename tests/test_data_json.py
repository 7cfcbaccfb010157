"""The JSON of users' data and prompt files (``genrl.tasks.rows.loads_json``, read by ``read_rows`` and
``read_prompts``): input ``json`` accepts silently (a repeated key) or crashes on (deep nesting, a
huge number) is one line naming the file and the line or row."""

import hashlib
import json
import os
import re

import pytest

from genrl.tasks.prompts import read_prompts
from genrl.tasks.rows import LOCATION, read_rows

DEEP_LIST = "[" * 200_000 + "]" * 200_000
DEEP_OBJECT = '{"a": ' * 200_000 + "1" + "}" * 200_000
HUGE_NUMBER = '{"prompt": "x", "n": ' + "7" * 5000 + "}"  # over Python's 4300-digit int conversion limit


def _jsonl(path, bad_line: str) -> str:
    path.write_text(json.dumps({"prompt": "fine"}) + "\n\n" + bad_line + "\n")  # the bad row is line 3
    return str(path)


READERS = {"rows": read_rows, "prompts": lambda path: read_prompts([path])}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    "line, message",
    [
        (DEEP_LIST, r"JSON nested too deeply to read"),
        (DEEP_OBJECT, r"JSON nested too deeply to read"),
        ('{"prompt": "a", "prompt": "b"}', r"key 'prompt' appears twice in one object \(JSON keeps only the last\)"),
        ('{"prompt": "a", "meta": {"k": 1, "k": 2}}', r"key 'k' appears twice in one object"),
        (HUGE_NUMBER, r"not valid JSON \(Exceeds the limit \(4300 digits\)"),
        # half a character: every tokenizer refused it in a TypeError naming nothing (a pair is one character)
        ('{"prompt": "a \\ud83d\\ude00 b \\udc80"}', r"a \\u escape encodes half a character \(a lone surrogate"),
    ],
    ids=["deep-list", "deep-object", "repeated-key", "repeated-nested-key", "huge-number", "lone-surrogate"],
)
def test_a_bad_jsonl_line_is_one_line_naming_the_file_and_line(tmp_path, reader, line, message):
    """Deep nesting raised RecursionError (a 38-line traceback, exit 1); a repeated key kept the last value."""
    path = _jsonl(tmp_path / "data.jsonl", line)
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}:3: {message}") as e:
        READERS[reader](path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize(
    "text, message",
    [
        (DEEP_LIST, r"deep.json: JSON nested too deeply to read"),
        ("[" + DEEP_OBJECT + "]", r"deep.json: JSON nested too deeply to read"),
        (
            '[{"prompt": "x"}, {"prompt": "y", "image": {"path": "a.png", "path": "b.png"}}]',
            r"deep.json row 1 \(from 0\): key 'path'",
        ),
        ('{"prompt": "a", "prompt": "b"}', r"deep.json: key 'prompt' appears twice"),  # no list: no row to name
        ("[" + HUGE_NUMBER + "]", r"deep.json: not valid JSON \(Exceeds the limit"),
        ('[{"prompt": "x \\ud83d\\ude00"}, {"prompt": "y \\ud800"}]', r"deep.json row 1 \(from 0\): a \\u escape"),
    ],
    ids=["deep-list", "deep-object", "repeated-nested-key", "repeated-key-no-list", "huge-number", "lone-surrogate"],
)
def test_a_bad_json_file_is_one_line_naming_the_file_and_row(tmp_path, text, message):
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}/{message}") as e:
        read_rows(str(path))
    assert "\n" not in str(e.value)


def test_escapes_that_make_whole_characters_still_read(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"prompt": "smile \\ud83d\\ude00", "note": "a backslash and u: \\\\ud800"}\n')
    assert read_prompts([str(path)]) == [
        ("smile \U0001f600", {"note": "a backslash and u: \\ud800", LOCATION: f"{path}:1"})
    ]


def test_good_rows_still_read_as_before(tmp_path):
    """Key order, nested values, a key reused in another object and NaN (refused later, by column) are kept."""
    rows = [{"prompt": "a", "image": {"path": "x.png"}, "n": float("nan")}, {"prompt": "b", "image": {"path": "y"}}]
    (tmp_path / "r.json").write_text(json.dumps(rows))
    (tmp_path / "r.jsonl").write_text("\n".join(["", json.dumps(rows[0]), " ", json.dumps(rows[1])]) + "\n")
    for name, where in (
        ("r.json", ("r.json row 0 (from 0)", "r.json row 1 (from 0)")),
        ("r.jsonl", ("r.jsonl:2", "r.jsonl:4")),
    ):
        located = read_rows(str(tmp_path / name))  # where an editor finds them: lines of .jsonl, blank ones too
        assert [w for w, _ in located] == [str(tmp_path / w) for w in where]
        got = [r for _, r in located]
        assert [list(r) for r in got] == [["prompt", "image", "n"], ["prompt", "image"]]
        assert got[1] == rows[1] and got[0]["n"] != got[0]["n"]
    assert read_prompts([str(tmp_path / "r.jsonl")])[1] == (
        "b",
        {"image": {"path": "y"}, LOCATION: f"{tmp_path}/r.jsonl:4"},
    )


def test_the_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path, capsys):
    from genrl.cli import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "deep.json").write_text(DEEP_LIST)
    rc = main(
        [
            "train",
            os.path.join(root, "configs/digits/seppo.yaml"),
            "task=preference_data",
            f"data.train_files=[{tmp_path / 'deep.json'}]",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        rc == 2
        and err
        == f"genrl train: {tmp_path / 'deep.json'}: JSON nested too deeply to read (too many [ or {{ inside one another)"
    )
    assert not (tmp_path / "run").exists()


def test_training_data_fingerprints_cover_prompt_files_and_folders(tmp_path):
    """What a resume compares: a .txt prompt file too (the first form refused it as an unsupported type and
    stopped every `task: prompts` run at start-up), a folder's data files, and never a missing path."""
    from genrl.tasks.rows import data_fingerprints

    (tmp_path / "d").mkdir()
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "d" / "r.jsonl").write_text("{}\n")
    (tmp_path / "d" / "notes.md").write_text("not data")
    got = data_fingerprints([str(tmp_path / "p.txt"), str(tmp_path / "d"), str(tmp_path / "gone.jsonl")])
    assert list(got) == [str(tmp_path / "p.txt"), str(tmp_path / "d" / "r.jsonl")]
    assert got[str(tmp_path / "p.txt")] == "sha256 " + hashlib.sha256(b"a cat\n").hexdigest()
    (tmp_path / "p.txt").write_text("a dog\n")
    assert data_fingerprints([str(tmp_path / "p.txt")]) != {str(tmp_path / "p.txt"): got[str(tmp_path / "p.txt")]}


def test_a_resume_on_reordered_or_swapped_data_files_is_refused(tmp_path):
    """Compared as a set of fingerprints, two files swapping contents (or a folder's file renamed to sort
    first) passed: the resumed steps read other rows at the same indices."""
    from types import SimpleNamespace

    from genrl.trainers.common import training_data

    (tmp_path / "d").mkdir()
    for name, prompt in (("a.jsonl", "one"), ("b.jsonl", "two")):
        (tmp_path / "d" / name).write_text(json.dumps({"prompt": prompt}) + "\n")
    files = [str(tmp_path / "d" / "a.jsonl"), str(tmp_path / "d" / "b.jsonl")]
    for train_files in (files, [str(tmp_path / "d")]):
        cfg = SimpleNamespace(data=SimpleNamespace(train_files=train_files), max_steps=4)
        saved = training_data(cfg)
        texts = [open(f).read() for f in files]
        for f, text in zip(files, reversed(texts)):  # swap the two files' contents
            open(f, "w").write(text)
        with pytest.raises(ValueError, match=r"data file .*a.jsonl changed \(was sha256"):
            training_data(cfg, None, ("ckpt", {"data_files": saved, "step": 2}))
        for f, text in zip(files, texts):
            open(f, "w").write(text)
        assert training_data(cfg, None, ("ckpt", {"data_files": saved, "step": 2})) == saved
    os.rename(files[1], tmp_path / "d" / "0.jsonl")  # the same contents, another order
    with pytest.raises(ValueError, match=r"data file .*0.jsonl is new since that checkpoint"):
        training_data(cfg, None, ("ckpt", {"data_files": saved, "step": 2}))


def test_a_data_folder_reads_its_files_of_any_case_and_names_subfolders_it_does_not_read(tmp_path):
    """A folder of a.jsonl, b.JSONL and sub/c.jsonl trained on a.jsonl alone, silently."""
    from genrl.tasks.rows import data_fingerprints, expand_data_paths

    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "b.JSONL", "sub/c.jsonl", "0.png"):
        (tmp_path / name).write_text('{"prompt": "x", "image": "0.png"}\n')
    with pytest.warns(UserWarning, match=r"data.train_files: data folder .*: its subfolder\(s\) sub hold .* not read"):
        files = expand_data_paths([str(tmp_path)], key="data.train_files")
    assert [os.path.basename(f) for f in files] == ["a.jsonl", "b.JSONL"]  # an image beside them is no data file
    assert sorted(data_fingerprints([str(tmp_path)])) == files  # a resume compares the same files
    assert read_rows(files[1])[0][1]["prompt"] == "x"
    assert [p for p, _ in read_prompts([str(tmp_path / "b.JSONL")])] == ["x"]
