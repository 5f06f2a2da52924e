"""`fsa-distill history` on a tracking store that is not there, not a database or not reachable: one error line,
exit 2, nothing created (the page only reads; MLflow would create the file and its folders, or retry for 100 s)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app


def _history(*args: str) -> object:
    return CliRunner().invoke(app, ["history", *args])


@pytest.mark.parametrize(("make_store", "message"), [
    (None, "no tracking store here"),
    (lambda path: path.write_text("not a database"), "cannot be read as an SQLite database"),
    (lambda path: path.mkdir(), "is a folder, not an SQLite file"),
])
def test_a_missing_or_broken_sqlite_store_is_one_error_line(tmp_path: Path, make_store, message: str) -> None:
    work = tmp_path / "work"
    if make_store is not None:
        work.mkdir()
        make_store(work / "mlflow.db")
    out = tmp_path / "h.html"
    result = _history("--out", str(out), "--set", f"work_dir={work}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert make_store is not None or not work.exists()  # a missing store is not created


def test_a_taken_or_impossible_serve_port_is_refused(tmp_path: Path) -> None:
    assert _history("--serve", "99999").exit_code == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _history("--serve", str(port), "--set", f"work_dir={tmp_path / 'work'}")
    assert result.exit_code == 2 and f"error: --serve: cannot listen on 127.0.0.1:{port}" in result.output


def test_an_unreachable_postgresql_store_is_one_error_line_without_its_password(tmp_path: Path) -> None:
    from tests.teacher_fixtures import free_port

    uri = f"postgresql://bot:pa#ss/w0rd@127.0.0.1:{free_port()}/mlflow"  # nothing listens there
    result = _history("--out", str(tmp_path / "h.html"), "--set", f"tracking.mlflow_tracking_uri={uri}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: tracking store postgresql://***@127.0.0.1:")
    assert "pa#ss" not in result.output and "w0rd" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "h.html").exists()


def test_the_served_page_says_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    import functools

    from fsa_distill.cli.commands.history import _page_or_reason
    from fsa_distill.tasks.tracking.history import history_page

    (tmp_path / "mlflow.db").mkdir()
    render = functools.partial(history_page, f"sqlite:///{tmp_path / 'mlflow.db'}", "fsa-distill", "m",
                               "http://127.0.0.1:5050", "/reports/")
    assert "The tracking store cannot be read: tracking store" in _page_or_reason(render)
