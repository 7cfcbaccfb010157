"""``task: prompts``: prompt files as users write them (a byte-order mark, Windows line ends, a folder
of files), and the files it cannot read, named."""

import json

import pytest

from genrl.tasks.prompts import read_prompts


def test_a_byte_order_mark_and_crlf_do_not_reach_the_prompts(tmp_path):
    """The BOM a Windows editor writes stayed in the first prompt ("\\ufeffa cat")."""
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbfa cat\r\n\r\na dog\r\n")
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "a car", "tag": 1}).encode() + b"\r\n")
    assert read_prompts([str(tmp_path / "p.txt"), str(tmp_path / "m.jsonl")]) == [
        ("a cat", {}),
        ("a dog", {}),
        ("a car", {"tag": 1}),
    ]


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
