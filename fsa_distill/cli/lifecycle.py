"""What a command that starts servers and engines does at its start and end, so that they end with it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsa_distill.core.engine_output import ENGINE_LOG_ENV, users_own_vllm_logging, vllm_logging_left_alone
from fsa_distill.core.reaper import TOKENS_ENV, run_tag

_token: str | None = None


def start_reaper() -> str:
    """Mark this process's future children with a token and start the watchdog (fsa_distill/core/reaper.py)
    that ends them when this process ends, however it ends. Once per process; returns the token."""
    global _token
    if _token is not None:
        return _token
    token = uuid.uuid4().hex[:16]
    inherited = os.environ.get(TOKENS_ENV)
    os.environ[TOKENS_ENV] = f"{inherited}:{token}" if inherited else token  # a run inside a run: both watch
    if sys.platform.startswith("linux"):
        subprocess.Popen(
            [sys.executable, "-m", "fsa_distill.core.reaper", str(os.getpid()), token],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group must not take the watchdog with it
            close_fds=True,
        )
    _token = token
    return token


def flow_run_tags() -> list[str]:
    """Tags for the flow runs this process starts: the watchdog marks exactly these Crashed if it is killed."""
    return [run_tag(_token)] if _token else []


def stop_prefect_server() -> None:
    """Stop Prefect's temporary server now, after sending what is queued for it. Prefect stops it from an atexit
    handler that logs after the streams have closed ("Logging error ... I/O operation on closed file")."""
    if "prefect.server.api.server" not in sys.modules:
        return
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect announces the stop on its top-level "prefect" logger, whose console handler may hold a stream that
    # is closed by now (pytest's per-test capture; the atexit path at interpreter exit). The announcement is
    # noise either way, so a filter drops just that record; every other Prefect log is untouched.
    prefect_logger = logging.getLogger("prefect")
    if _drop_stop_announcement not in prefect_logger.filters:
        prefect_logger.addFilter(_drop_stop_announcement)
    # Logs and events still queued for the API are sent first, or they fail against the stopped server.
    for module, worker in (("prefect.logging.handlers", "APILogWorker"), ("prefect.events.worker", "EventsWorker")):
        if module in sys.modules:
            getattr(sys.modules[module], worker).drain_all(timeout=5)
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


def _drop_stop_announcement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Stopping temporary server")


WEIGHT_CAST_LOGGER = "vllm.model_executor.models.utils"  # "Attempted to load weight ... into parameter with dtype"


@contextmanager
def engine_logs(work_dir: Path, verbose: bool = False) -> Iterator[Path | None]:
    """Engine logs (vLLM's processes, Prefect, Ray) go to `<work_dir>/logs/engines.log` while the block runs; the
    terminal keeps our own progress bars and results, vLLM's errors, and Prefect's warnings (ours: a retry, a
    failed stage). vLLM's warnings are about its own set-up on this machine (no Triton, eager mode, LD_PRELOAD
    hints), so they go to the file only. `verbose`: everything on the terminal too. Yields the log file (None
    when verbose).

    Set through environment variables before vLLM or Prefect is imported, because vLLM's engine processes and
    Prefect's server configure their logging from the environment they inherit. A variable the user exported
    wins; the previous environment comes back afterwards (commands also run in-process, e.g. under tests).
    """
    if verbose:
        with vllm_loggers_without_dictconfig(None):
            yield None
        return
    log_dir = Path(work_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = (log_dir / "engines.log").resolve()
    settings = {
        # What vLLM's engine processes print (their vLLM warnings, torch's C++ warnings): their stdout and
        # stderr are this file (fsa_distill/core/engine_output.py).
        ENGINE_LOG_ENV: str(log_file),
        # Prefect: INFO still reaches the API (the UI's run logs); its console handler shows WARNING and above.
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Ray (vLLM's multi-node executor): its backend logs warnings and above.
        "RAY_BACKEND_LOG_LEVEL": "warning",
        # Libraries' own progress bars (saving a dataset, writing or loading model shards, MLflow artifact
        # transfers) are theirs, not the run's: the terminal keeps our stage bars only.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": "WARNING",  # e.g. "Creating initial MLflow database tables..." on every new work dir
        # Deprecation notices from inside libraries (vLLM's engine process warns about torch APIs it uses).
        "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
        **progress_settings(),
    }
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    # In this process, Python warnings (libraries' UserWarnings and deprecations) go to the log file as well.
    warnings_logger = logging.getLogger("py.warnings")
    warnings_file = logging.FileHandler(log_file, encoding="utf-8")
    warnings_file.setFormatter(logging.Formatter(LOG_FORMAT))
    warnings_logger.addHandler(warnings_file)
    warnings_logger.propagate, was_propagating = False, warnings_logger.propagate
    logging.captureWarnings(True)
    try:
        with vllm_loggers_without_dictconfig(log_file):
            yield log_file
    finally:
        logging.captureWarnings(False)
        warnings_logger.removeHandler(warnings_file)
        warnings_logger.propagate = was_propagating
        warnings_file.close()
        for name in added:
            os.environ.pop(name, None)


LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


@contextmanager
def vllm_loggers_without_dictconfig(log_file: Path | None) -> Iterator[None]:
    """vLLM's loggers, set up here instead of by vLLM. vLLM applies its logging with `logging.config.dictConfig`
    when an engine is created, and dictConfig flushes and closes every handler in the process first. Inside a
    flow one of them is Prefect's API log handler, whose flush waits for a worker thread that needs the logging
    lock dictConfig holds: the run hangs at the teacher's start. So VLLM_CONFIGURE_LOGGING=0 (also for the engine
    processes, whose warnings reach their stderr, i.e. the log file, through Python's last-resort handler), and
    the `vllm` logger gets plain handlers: to `log_file` and errors to the terminal; or, with no file
    (`--verbose`), INFO and above to the terminal."""
    if users_own_vllm_logging():
        yield
        return
    handlers: dict[str, list[logging.Handler]] = {"vllm": [_handler(logging.StreamHandler(sys.stderr), "INFO")]}
    if log_file is not None:
        to_file = _handler(logging.FileHandler(log_file, encoding="utf-8"), "DEBUG")
        # One warning per weight cast while loading (e.g. float32 weights into a bfloat16 model: 244 lines for
        # SmolLM2 on a bf16 CPU): into the file only, under its own logger name, like vLLM's other warnings.
        handlers = {"vllm": [to_file, _handler(logging.StreamHandler(sys.stderr), "ERROR")],
                    WEIGHT_CAST_LOGGER: [to_file]}
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in handlers}
    for name, added in handlers.items():
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in added:
            logger.addHandler(handler)
    try:
        with vllm_logging_left_alone():
            yield
    finally:
        for name, added in handlers.items():
            logger = logging.getLogger(name)
            logger.setLevel(saved[name][0])
            logger.propagate = saved[name][1]
            for handler in added:
                logger.removeHandler(handler)
                handler.close()


def _handler(handler: logging.Handler, level: str) -> logging.Handler:
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


NOT_A_TERMINAL_MININTERVAL_S = "30"


def progress_settings() -> dict[str, str]:
    """tqdm's own environment defaults (read when tqdm is imported, so before the stages import it; they apply to
    every bar that does not set them itself: ours, transformers' GGUF conversion, vLLM's processes). On a terminal
    a bar redraws in place; into a file or a pipe (`make demo > log`, CI) every redraw is one more `\\r` record
    that log viewers show as a line, so there a bar redraws at most every 30 s and once at its end."""
    if sys.stderr.isatty():
        return {}
    return {"TQDM_MININTERVAL": NOT_A_TERMINAL_MININTERVAL_S}


@contextmanager
def flow_command(work_dir: Path, prefect_api_url: str | None, verbose: bool = False) -> Iterator[None]:
    """What every command that runs a flow wraps it in: its children end with it (the reaper), engine logs go to
    the work dir, its flow runs carry the run's tag (so a killed run is marked Crashed), and Prefect's temporary
    server stops before the interpreter's streams close."""
    if prefect_api_url:
        os.environ["PREFECT_API_URL"] = prefect_api_url
    start_reaper()  # the Prefect server, vLLM engines and Ray workers end with this process
    with engine_logs(work_dir, verbose):  # before vLLM or Prefect is imported
        from prefect import tags

        try:
            with tags(*flow_run_tags()):
                yield
        finally:
            stop_prefect_server()
