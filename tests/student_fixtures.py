"""Shared set-up of the data-parallel training tests: the tiny student without dropout, and its loss log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def train_log(out_dir: Path) -> list[dict]:
    """Every step's record (loss, lr, eval loss) of a pretraining run, as rank 0 wrote it."""
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def student_without_dropout(tmp_path_factory: pytest.TempPathFactory, tiny_student_dir: Path) -> Path:
    """The tiny student with dropout off: 1 and 2 processes then compute the same function."""
    folder = tmp_path_factory.mktemp("no-dropout") / "student"
    shutil.copytree(tiny_student_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["dropout_rate"] = 0.0
    (folder / "config.json").write_text(json.dumps(config))
    return folder
