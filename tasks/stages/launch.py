"""Start a training stage as N data-parallel processes (`train.num_processes`) and wait for them.

The stage runs `torchrun` (or `accelerate launch`) as a child process group over this module's entry point,
which calls the same `pretrain` / `finetune` function a single process calls. Why a subprocess rather than
spawning workers from the Prefect task: the launcher owns the process group, so a rank that dies (killed,
out of memory) makes it stop the other ranks and exit non-zero; the stage then fails with that rank's exit in
its error, and its retry (or a rerun) resumes from the last checkpoint, which rank 0 wrote atomically.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fsa_distill.core.config import TrainConfig
from fsa_distill.core.files import atomic_file

ENTRY_MODULE = "fsa_distill.tasks.stages.launch"
SPEC_FILE = "launch_spec.json"
LOG_FILE = "launch.log"
RESULT_FILES = {"pretrain": "pretrain_result.json", "finetune": "finetune_result.json"}


class LaunchFailed(RuntimeError):
    """The training processes did not all finish: a rank died or raised."""


def launcher_command(train: TrainConfig, num_processes: int, module_args: list[str]) -> list[str]:
    """The command line that starts `num_processes` copies of `python -m <module_args>` on this node."""
    if train.launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
                   "--num_machines", "1"]
        if train.accelerate_config is not None:
            command += ["--config_file", str(train.accelerate_config)]
        else:  # plain DDP; on a CPU-only machine accelerate's multi-GPU launcher gives DDP over gloo
            command += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
        return [*command, "--module", *module_args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes),
            "-m", *module_args]


def _failure_summary(log_text: str) -> str:
    """The lines of the launcher's log that say which rank failed and why (torchrun's failure report, `error:`
    lines and the last exception line)."""
    lines = log_text.splitlines()
    keep = [line.strip() for line in lines
            if any(word in line for word in ("exitcode", "rank:", "error:", "Signal", "Error:"))]
    return " | ".join(dict.fromkeys(keep[-8:])) or (lines[-1] if lines else "no output")


def _wait_interruptibly(process: subprocess.Popen) -> int:
    """The launcher's exit code, waited for in short polls.

    Prefect enforces a task's timeout (and a cancellation) in a worker thread (a task runner's, or a flow
    called off the main thread) by raising an exception in that thread between two Python instructions; one
    blocking `wait()` holds it off until the launcher exits by itself, so a hung run would never time out.
    """
    while True:
        try:
            return process.wait(timeout=1.0)  # a loop of non-blocking waitpid calls and short sleeps
        except subprocess.TimeoutExpired:
            continue


def run_in_processes(stage: str, arguments: dict[str, Any], settings: BaseModel, train: TrainConfig, out_dir: Path,
                     num_processes: int) -> dict[str, Any]:
    """Run `stage` ("pretrain" / "finetune") with `arguments` (paths and the stage key) and the stage's settings
    as `num_processes` processes; return the result rank 0 wrote, or raise LaunchFailed naming the failed rank."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {"stage": stage, "arguments": {key: str(value) if isinstance(value, Path) else value
                                          for key, value in arguments.items()},
            "settings": settings.model_dump(mode="json"), "out_dir": str(out_dir)}
    with atomic_file(out_dir / SPEC_FILE) as handle:
        json.dump(spec, handle, indent=2)
    command = launcher_command(train, num_processes, [ENTRY_MODULE, str(out_dir / SPEC_FILE)])
    log_path = out_dir / LOG_FILE
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = _wait_interruptibly(process)
        except BaseException as stop:  # the stage timed out or was cancelled: no rank may outlive it
            with contextlib.suppress(ProcessLookupError):  # the launcher may have exited meanwhile
                os.killpg(process.pid, signal.SIGKILL)  # its ranks follow it (models/student/distributed.py)
            process.wait()
            log.write(f"\nstopped from outside ({type(stop).__name__}): killed the launcher and its ranks\n")
            raise
    if code != 0:
        summary = _failure_summary(log_path.read_text(encoding="utf-8", errors="replace"))
        raise LaunchFailed(f"{stage} with {num_processes} processes failed (launcher exit {code}): {summary}; "
                           f"full log {log_path}; rerunning resumes from the last checkpoint in {out_dir}")
    return json.loads((out_dir / RESULT_FILES[stage]).read_text(encoding="utf-8"))


def main(spec_path: str) -> None:
    """One rank: read the spec the stage wrote and call the stage function (under torchrun/accelerate)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    arguments = spec["arguments"]
    # The stage's module by name, not by an import statement: stage keys follow imports (tasks/stages/keys.py), and
    # a launcher importing both stages would tie pretraining's key to fine-tuning's code (the scorer).
    stage = importlib.import_module(f"fsa_distill.tasks.stages.{spec['stage']}")
    if spec["stage"] == "pretrain":
        settings = stage.PretrainSettings.model_validate(spec["settings"])
        stage.pretrain(Path(arguments["student_dir"]), Path(arguments["corpus_dir"]), settings.pretrain,
                       Path(spec["out_dir"]), key=arguments["key"],
                       cache_dir=Path(arguments["cache_dir"]) if arguments.get("cache_dir") else None)
    else:
        settings = stage.FinetuneSettings.model_validate(spec["settings"])
        stage.finetune(Path(arguments["model_dir"]), arguments["task"], arguments["dataset"],
                       int(arguments["seed"]), settings, Path(spec["out_dir"]), key=arguments["key"])


if __name__ == "__main__":
    main(sys.argv[1])
    import torch.distributed

    if torch.distributed.is_initialized():  # a clean exit of every rank, without torch's teardown warning
        torch.distributed.destroy_process_group()
