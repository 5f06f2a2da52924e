"""Engine processes started while the CLI runs write into `<work_dir>/logs/engines.log`, not onto the terminal,
unless `--verbose`. A cheap stand-in for vLLM's engine start with the same mechanism: a child started with
multiprocessing `spawn` that warns before any logging is configured (Python's last-resort handler, as vLLM's
import-time warnings do) and writes to its stderr file descriptor (as torch's C++ warnings do). The flow itself
is checked with vLLM in tests/flows/test_run_lifecycle.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMAND = """
import logging, multiprocessing, os, sys
from pathlib import Path
from fsa_distill.cli.lifecycle import engine_logs
from fsa_distill.core.engine_output import engine_processes_write_to_log

def engine() -> None:
    logging.getLogger("vllm.triton_utils.importing").warning("engine warning before any logging config")
    os.write(2, b"[W utils.cpp:68] Warning: engine C++ warning\\n")

if __name__ == "__main__":
    with engine_logs(Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
        with engine_processes_write_to_log():
            child = multiprocessing.get_context("spawn").Process(target=engine)
            child.start()
        print("our own line", file=sys.stderr, flush=True)
        child.join()
        print("our own result")
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_spawned_engine_output_goes_to_the_log_unless_verbose(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "cli.py"
    script.write_text(COMMAND, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "work"), mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    log = tmp_path / "work" / "logs" / "engines.log"
    engine_lines = ("engine warning before any logging config", "engine C++ warning")
    # This process's own output stays on the terminal in both modes, after the engine has started.
    assert done.stdout == "our own result\n" and "our own line" in done.stderr, done.stderr
    if mode == "quiet":
        assert done.stderr == "our own line\n", done.stderr
        assert all(line in log.read_text(encoding="utf-8") for line in engine_lines)
    else:
        assert all(line in done.stderr for line in engine_lines), done.stderr
        assert not log.exists()


def test_an_engine_that_fails_to_start_points_at_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's start-up error says "See root cause above"; the root cause is in the file, so the error names it."""
    from fsa_distill.core.engine_output import ENGINE_LOG_ENV, engine_processes_write_to_log

    log = tmp_path / "engines.log"
    monkeypatch.setenv(ENGINE_LOG_ENV, str(log))
    with pytest.raises(RuntimeError) as raised, engine_processes_write_to_log():
        raise RuntimeError("Engine core initialization failed. See root cause above.")
    assert raised.value.__notes__ == [f"The engine processes' output is in {log}"]


@pytest.mark.parametrize("verbose", [False, True])
def test_an_engine_start_inside_a_run_leaves_the_processs_log_handlers_alone(tmp_path: Path, verbose: bool) -> None:
    """vLLM applies its logging when an engine is created; with dictConfig that flushes and closes every handler
    in the process, and inside a flow Prefect's API log handler then waits for a lock dictConfig holds: `make
    demo` hung at the teacher's start. Inside `engine_logs` the same call leaves other handlers open."""
    import logging

    from vllm.config.logging import LoggingConfig
    from vllm.logger import configure_logging

    from fsa_distill.cli.lifecycle import engine_logs

    closed: list[str] = []

    class StandIn(logging.Handler):  # stands in for Prefect's APILogHandler: what dictConfig would close
        def emit(self, record: logging.LogRecord) -> None:
            pass

        def close(self) -> None:
            closed.append(self.name)
            super().close()

    with engine_logs(tmp_path / "work", verbose=verbose) as log_file:
        stand_in = StandIn()
        logging.getLogger("prefect.flow_runs").addHandler(stand_in)
        configure_logging(LoggingConfig())  # what vLLM's LLM() does before starting its engine
        logging.getLogger("vllm.engine").warning("a vLLM warning")
        assert closed == []
        logging.getLogger("prefect.flow_runs").removeHandler(stand_in)
    if log_file is not None:
        assert "a vLLM warning" in log_file.read_text(encoding="utf-8")
