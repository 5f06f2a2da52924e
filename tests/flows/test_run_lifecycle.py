"""Issue #15: the processes a `fsa-distill run` starts (Prefect's temporary server, vLLM's engine processes) end
with it however it ends, even with SIGKILL, and the killed flow run is recorded as Crashed, not Running.

The run is the real CLI in a subprocess with the real offline teacher on vLLM. Every process it starts inherits
its environment, so a marker variable finds them all, whatever process group or session they moved to.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.flows.test_flow import tiny_overrides

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def environ_of(pid: int) -> dict[str, str]:
    """A process's initial environment, every entry (see processes_with)."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\x00")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes whose environment holds FSA_TEST_MARKER=marker. /proc is read whole: vLLM's processes set
    their title over the start of the environment block, where psutil's parser stops at the first empty entry."""
    wanted = f"FSA_TEST_MARKER={marker}".encode()
    found = []
    for process in psutil.process_iter():
        try:
            environ = Path(f"/proc/{process.pid}/environ").read_bytes()
            if wanted in environ.split(b"\x00") and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.NoSuchProcess):
            continue
    return found


def poll(condition, deadline_s: float, what: str):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


def flow_run_states(prefect_home: Path) -> list[str]:
    database = prefect_home / "prefect.db"
    if not database.exists():
        return []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
        return [row[0] for row in connection.execute("SELECT state_type FROM flow_run")]


def test_sigkilled_run_leaves_no_process_and_a_crashed_flow_run(tmp_path: Path, smollm2_dir) -> None:
    marker = uuid.uuid4().hex
    prefect_home = tmp_path / "prefect-home"
    # A fresh Prefect home migrates its database at start: more than Prefect's 20 s on a loaded machine.
    env = {**os.environ, "FSA_TEST_MARKER": marker, "PREFECT_HOME": str(prefect_home),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300", "PREFECT_API_URL": "", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL")
    args = [arg for override in tiny_overrides(tmp_path / "work", smollm2_dir[0]) for arg in ("--set", override)]
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - the child writes to it; closed in the finally
    run = subprocess.Popen([sys.executable, "-m", "fsa_distill.cli", "run", "--json", *args], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Running for real: the temporary Prefect server is up and vLLM's engine process has started.
        def engine_started() -> bool:
            assert run.poll() is None, (tmp_path / "run.log").read_text(errors="replace")[-3000:]
            names = []
            for process in processes_with(marker):
                try:
                    names.append(" ".join(process.cmdline()) + process.name())
                except psutil.NoSuchProcess:
                    continue
            return any("create_app" in name for name in names) and any("VLLM" in name for name in names)

        poll(engine_started, 600, "the Prefect server and the vLLM engine of the run")
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert "RUNNING" in flow_run_states(prefect_home)
        children = [p.pid for p in processes_with(marker) if p.pid != run.pid]

        os.kill(run.pid, signal.SIGKILL)  # the CLI process only: nothing of it may run its exit handlers
        run.wait(timeout=30)

        poll(lambda: not processes_with(marker), 60, f"the run's processes {children} to end")
        poll(lambda: flow_run_states(prefect_home) == ["CRASHED"], 30, "the flow run to be marked Crashed")
    finally:
        for process in processes_with(marker):
            process.kill()
        log.close()


def test_generate_keeps_engine_logs_off_the_terminal(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """vLLM's INFO lines (engine start, its processes) go to <work_dir>/logs/engines.log; the terminal only shows
    our own summary. Run as the installed CLI, so vLLM's engine process is a real child process."""
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("The soup was cold.\nGreat staff.\n", encoding="utf-8")
    work = tmp_path / "work"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLLM_LOGGING")}
    done = subprocess.run(
        [sys.executable, "-m", "fsa_distill.cli", "generate", "--corpus", str(corpus), "--out", str(tmp_path / "out"),
         "--prompts", "rewrite", "--teacher", str(tiny_llama_dir), "--backend", "vllm", "--max-tokens", "8",
         "--set", f"work_dir={work}", "--set", "teacher.max_model_len=512", "--set", "teacher.kv_cache_memory_gib=0.25",
         "--set", "generation.max_input_tokens=64", "--set", "teacher.dtype=bfloat16", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["generated"] == 2
    engine_log = (work / "logs" / "engines.log").read_text(encoding="utf-8")
    assert " INFO vllm" in engine_log, "vLLM logged its start into the file"
    assert not [line for line in done.stderr.splitlines() if " INFO " in line and "vllm" in line.lower()], \
        done.stderr[-3000:]
    # vLLM's per-weight cast warnings (the float32 tiny Llama loaded as bfloat16) go to the file only.
    assert "Attempted to load weight" in engine_log and "Attempted to load weight" not in done.stderr, \
        done.stderr[-3000:]
    # Libraries' own progress bars and deprecation notices stay off the terminal too.
    for noise in ("Saving the dataset", "FutureWarning", "DeprecationWarning"):
        assert noise not in done.stderr, done.stderr[-3000:]
    # vLLM's warnings, from this process and from its engine processes (pids differ), those printed before its
    # logging config applies ("Triton is installed, but ..."), torch's C++ warnings ("[W... ] Warning: ...") and
    # the engine's own "Loading safetensors checkpoint shards" bar: all in the file, none on the terminal.
    assert " WARNING vllm" in engine_log and "Loading safetensors" in engine_log, engine_log[-3000:]
    for noise in ("WARNING", "Warning:", "Triton", "Loading safetensors"):
        assert noise not in done.stderr, done.stderr[-3000:]
    assert done.stderr == "", done.stderr  # --json: no bar either, so nothing at all besides stdout's JSON line


def test_a_test_session_with_a_flow_exits_quietly() -> None:
    """A pytest session that ran a flow on the temporary Prefect server ends without "Logging error ... I/O
    operation on closed file" or "Error logging to API" (make test showed both at exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/flows/test_ops_faults.py", "-q", "-p", "no:cacheprovider",
         "-k", "corrupt_corpus_in_inbox_end_to_end"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    output = done.stdout + done.stderr
    assert "1 passed" in output
    for noise in ("Logging error", "I/O operation on closed file", "Error logging to API", "Traceback"):
        assert noise not in output, output[-3000:]
