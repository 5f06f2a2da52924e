"""Where the output of engine processes (vLLM's EngineCore and worker) goes: `<work_dir>/logs/engines.log`.

vLLM's processes run without vLLM's own logging set-up (VLLM_CONFIGURE_LOGGING=0, fsa_distill/cli/lifecycle.py
says why), so their vLLM warnings reach stderr through Python's last-resort handler. Those, torch's C++
warnings (`[W... utils.cpp] Warning: NUMA binding ...`) and their own progress bars are written straight to the
stdout and stderr they inherited from us. vLLM starts them with
multiprocessing `spawn` on CPUs, so there is no hook to run first in them; the file descriptors they inherit are
the one setting that covers all of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

ENGINE_LOG_ENV = "FSA_ENGINE_LOG"  # set by the CLI while a command runs, unless --verbose


@contextmanager
def engine_processes_write_to_log() -> Iterator[None]:
    """Processes started inside the block inherit `$FSA_ENGINE_LOG` as their stdout and stderr; without it
    (`--verbose`, a library call) nothing changes. Keep the block to the engine's start: until it ends, this
    process's own stdout and stderr go to the file too, and the descriptors are process-wide."""
    path = os.environ.get(ENGINE_LOG_ENV)
    if not path:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(path, "ab") as log:
        for fd in saved:
            os.dup2(log.fileno(), fd)
    try:
        yield
    except Exception as error:  # vLLM's "Engine core initialization failed. See root cause above": it is there
        error.add_note(f"The engine processes' output is in {path}")
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


@contextmanager
def vllm_logging_left_alone() -> Iterator[None]:
    """While an engine starts, vLLM must not apply its logging set-up: it is a `logging.config.dictConfig`, which
    closes every handler of this process, and inside a flow Prefect's API log handler then deadlocks on the
    logging lock dictConfig holds. The CLI already arranges this (fsa_distill/cli/lifecycle.py
    `vllm_loggers_without_dictconfig`); this covers flows that a Prefect worker runs. A user's own vLLM logging
    variables win. Scoped, so the rest of the process keeps its environment."""
    if users_own_vllm_logging():
        yield
        return
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    try:
        yield
    finally:
        os.environ.pop("VLLM_CONFIGURE_LOGGING", None)


def users_own_vllm_logging() -> bool:
    """The user set vLLM's logging variables themselves: then neither the CLI nor the backend touches them."""
    return "VLLM_LOGGING_CONFIG_PATH" in os.environ or "VLLM_CONFIGURE_LOGGING" in os.environ
