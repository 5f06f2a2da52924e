"""A watchdog process that ends what a run started once the run itself has ended, however it ended.

A `fsa-distill run` starts processes it does not own directly: Prefect's temporary server (uvicorn), vLLM's engine
processes, Ray workers. Their owners stop them from `atexit` handlers, which never run when the run is killed
(SIGKILL, an OOM kill, a timeout's SIGTERM), and the orphans then live on indefinitely.

How: the run puts a token into its environment (`FSA_RUN_TOKENS`), which every process it starts inherits,
whatever process group or session it moves to; then it starts this watchdog in a session of its own (so a signal
to the run's process group does not reach it). The watchdog waits on a pidfd for the run's exit, then
1. marks the run's Prefect flow runs (tagged `fsa-run-<token>`) Crashed through the API, while the temporary server
   is still up, so the UI does not show a killed run as Running forever;
2. sends SIGTERM to every process carrying the token, waits a grace period, and SIGKILLs what is left.

Standard library only and hand-written on purpose: it must start in milliseconds and keep working while the
heavy libraries of the run are in any state. Linux only (/proc, pidfd); elsewhere the run goes on without it.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

TOKENS_ENV = "FSA_RUN_TOKENS"
TAG_PREFIX = "fsa-run-"
GRACE_SECONDS = 8.0
_PORT = re.compile(r"--port\x00(\d+)")


def run_tag(token: str) -> str:
    """The Prefect tag of the flow runs a run with this token creates."""
    return f"{TAG_PREFIX}{token}"


def marked_processes(token: str) -> Iterator[int]:
    """Pids of live processes whose environment carries `token` (this watchdog excluded)."""
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state == "Z":  # already dead, waiting to be reaped by its (new) parent
            continue
        for variable in environ.split(b"\x00"):
            if variable.startswith(f"{TOKENS_ENV}=".encode()):
                if token.encode() in variable.split(b"=", 1)[1].split(b":"):
                    yield int(entry.name)
                break


def _prefect_api_urls(pids: list[int]) -> list[str]:
    """The API the run talked to: PREFECT_API_URL when it was set, else its temporary server's port."""
    urls = [os.environ["PREFECT_API_URL"].rstrip("/")] if os.environ.get("PREFECT_API_URL") else []
    for pid in pids:
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "prefect.server.api.server:create_app" in command_line and (match := _PORT.search(command_line)):
            urls.append(f"http://127.0.0.1:{match.group(1)}/api")
    return urls


def _post(url: str, body: dict) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # the run's own Prefect API
        payload = response.read()
    return json.loads(payload) if payload else None


def mark_flow_runs_crashed(api_url: str, tag: str, reason: str) -> list[str]:
    """Set every unfinished flow run tagged `tag` (and its unfinished task runs) to Crashed; returns their ids."""
    unfinished = {"any_": ["RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING"]}
    runs = _post(f"{api_url}/flow_runs/filter", {"flow_runs": {"tags": {"all_": [tag]}, "state": {"type": unfinished}}})
    ids = [run["id"] for run in runs or []]
    state = {"type": "CRASHED", "name": "Crashed", "message": reason}
    if ids:
        tasks = _post(f"{api_url}/task_runs/filter", {"flow_runs": {"id": {"any_": ids}},
                                                       "task_runs": {"state": {"type": unfinished}}})
        for task_run in tasks or []:
            _post(f"{api_url}/task_runs/{task_run['id']}/set_state", {"state": state, "force": True})
    for run_id in ids:
        _post(f"{api_url}/flow_runs/{run_id}/set_state", {"state": state, "force": True})
    return ids


def wait_for_exit(pid: int) -> None:
    """Block until process `pid` has exited (pidfd where the kernel has it, else polling /proc)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd: poll
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.5)
        return
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        os.close(descriptor)


def end_processes(token: str, grace_s: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM every process carrying `token`, then SIGKILL those still there after `grace_s`."""
    targets = list(marked_processes(token))
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and list(marked_processes(token)):
        time.sleep(0.2)
    for pid in marked_processes(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return targets


def watch(parent_pid: int, token: str) -> None:
    wait_for_exit(parent_pid)
    pids = list(marked_processes(token))
    if not pids and not os.environ.get("PREFECT_API_URL"):
        return  # ended cleanly: its servers and engines already stopped
    for api_url in _prefect_api_urls(pids):
        try:
            mark_flow_runs_crashed(api_url, run_tag(token), f"the fsa-distill process (pid {parent_pid}) ended "
                                   "while this flow run was still running; its child processes were stopped")
        except Exception:  # noqa: BLE001, S110 - best effort: the API may be down too; ending processes matters more
            pass
    end_processes(token)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
