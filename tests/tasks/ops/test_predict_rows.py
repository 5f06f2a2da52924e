"""Issue #23: `predict` writes one line per input record (an empty answer for an empty or null text), and
`predict --ray` finds a bad row before Ray starts, leaving no shard folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app


def test_empty_and_null_texts_get_an_empty_answer_line(tmp_path: Path, tiny_student_dir: Path) -> None:
    rows = [{"id": 1, "text": "The pizza was great."}, {"id": 2, "text": None}, {"id": 3, "text": ""},
            {"id": 4, "text": "  "}, {"id": 5, "text": "Slow service."}]
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_student_dir), "--input", str(source),
                                      "--out", str(out), "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["1", "2", "3", "4", "5"]
    assert [line["prediction"] for line in lines[1:4]] == ["", "", ""]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(("make", "problem"), [
    (lambda d: _jsonl(d / "r.jsonl", [{"text": "ok"}, {"review": "no text field"}]),
     "line 2: no 'text' field (fields: ['review'])"),
    (lambda d: _jsonl(d / "r.jsonl", [{"text": "ok"}, {"text": 5}]), "line 2: 'text' must be a string, got int"),
    (lambda d: pq.write_table(pa.table({"review": ["a"]}), d / "r.parquet") or d / "r.parquet",
     "no 'text' column (columns: ['review'])"),
    (lambda d: pq.write_table(pa.table({"text": [1, 2]}), d / "r.parquet") or d / "r.parquet",
     "column 'text' must hold strings, not int64"),
    (lambda d: (d / "r.parquet").write_bytes(b"not parquet") and d / "r.parquet", "not a readable Parquet file"),
])
def test_bad_ray_rows_are_found_before_the_job(tmp_path: Path, tiny_student_dir: Path, make, problem: str) -> None:
    source = make(tmp_path)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_student_dir), "--input", str(source),
                                      "--out", str(out), "--ray", "--num-cpus", "1"])
    assert result.exit_code == 2 and result.output.startswith(f"error: {source}: {problem}"), result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name], "no shard folder, no output"
