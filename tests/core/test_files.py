"""All-or-nothing writes: a failure keeps the previous file or folder and leaves no temporary behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsa_distill.core.files import atomic_dir, atomic_file, write_json_atomically


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "pred.jsonl"
    with atomic_file(target) as handle:
        handle.write("first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("half of the sec")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pred.jsonl"], "no temporary left behind"


def test_atomic_file_binary_and_json(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "blob", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "blob").read_bytes() == b"\x00\x01"
    write_json_atomically(tmp_path / "r.json", {"b": "é", "a": 1}, sort_keys=True)
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"a": 1, "b": "é"} and text.index('"a"') < text.index('"b"') and text.endswith("\n")


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path: Path) -> None:
    model = tmp_path / "model"
    with atomic_dir(model) as folder:
        (folder / "weights").write_text("v1")
    with pytest.raises(ValueError), atomic_dir(model) as folder:
        (folder / "weights").write_text("v2, half")
        raise ValueError("bad input")
    assert (model / "weights").read_text() == "v1"
    with atomic_dir(model) as folder:
        (folder / "weights").write_text("v2")
    assert (model / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "temporaries and the replaced folder are gone"
