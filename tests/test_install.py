"""scripts/install.sh: a few progress lines on the terminal, pip's output in a log file that a failure names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_failing_install_step_names_its_log_and_shows_its_end(tmp_path: Path) -> None:
    """A Python that cannot make the venv fails step 1: the terminal gets the step line, the failure with the
    log's path and the log's last lines; the log holds the step's output."""
    broken_python = tmp_path / "python3.11"
    broken_python.write_text("#!/bin/sh\necho 'venv: no space left on device (simulated)' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": str(broken_python), "VENV": str(tmp_path / "venv"), "FSA_WORK_DIR": str(work)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh")], check=False, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    log = work / "logs" / "install.log"
    assert done.returncode == 1
    assert done.stdout == f"install [1/6] virtual environment {tmp_path / 'venv'}\n"
    assert f"install failed at step 1 (virtual environment {tmp_path / 'venv'}); the full log is {log}" in done.stderr
    assert "no space left on device (simulated)" in done.stderr
    assert "no space left on device (simulated)" in log.read_text()
