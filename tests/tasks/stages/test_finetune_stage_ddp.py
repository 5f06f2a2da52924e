"""The Prefect fine-tuning stage with `train.finetune_num_processes: 2` (2 ranks over gloo, started by the
stage's launcher), reached the way the distill flow reaches it (`_finetune_all`, `train.task_runner: thread`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import filelock
import psutil
import pytest
from mlflow.tracking import MlflowClient
from prefect import flow

from fsa_distill.core.config import DistillConfig, resolve_config
from fsa_distill.flows import distill as distill_flow
from fsa_distill.flows.distill import _finetune_all
from fsa_distill.flows.stage_runner import StageRunner
from fsa_distill.tasks.stages.finetune import FinetuneResult
from fsa_distill.tasks.stages.keys import Placement
from fsa_distill.tasks.stages.launch import ENTRY_MODULE, LOG_FILE, RESULT_FILES
from fsa_distill.tasks.stages.records import ModelResult
from fsa_distill.tasks.stages.stage_task import model_heavy
from fsa_distill.tasks.tracking.runs import RunTracker

pytestmark = pytest.mark.slow  # each stage run starts 2 fresh interpreters under torchrun

DATASET = "atsa/rest14"
N_TEST = 6
HUNG_RUN_TIMEOUT_S = 15  # time enough for the task to reach its launcher on a busy machine


def _config(work_dir: Path, benchmark_dir: Path) -> DistillConfig:
    return resolve_config("demo", environ={}, overrides=[
        f"work_dir={work_dir}", f"data.data_dir={benchmark_dir}", f"data.datasets=[{DATASET}]",
        "data.max_train_sentences=12", "data.max_dev_sentences=4", f"data.max_test_sentences={N_TEST}",
        "finetune.seeds=[1]", "finetune.epochs=1", "finetune.batch_size=4", "finetune.max_new_tokens=12",
        "evaluate.views=[normal]", "train.finetune_num_processes=2", "tracking.experiment_name=ft-ddp-test"])


@flow(name="finetune-ddp-test")
def fine_tune(config: DistillConfig, model: ModelResult) -> tuple[list[FinetuneResult], dict[str, str]]:
    """The distill flow's fine-tuning step alone (`_finetune_all`, `train.task_runner: thread`) under one MLflow
    run."""
    tracker = RunTracker(config)
    parent = tracker.start_parent(run_name="ft-ddp", tags={})
    run_stage = StageRunner(config, tracker, parent)
    try:
        return _finetune_all(run_stage, "finetune", model, config), run_stage.metric_runs
    finally:
        tracker.finish(parent)


def _stage_folders(config: DistillConfig) -> list[Path]:
    return sorted((config.work_dir / "stages" / "finetune").iterdir())


def _check_finished_run(result: FinetuneResult, config: DistillConfig, benchmark_dir: Path) -> dict:
    """Predictions parse for every gold test sentence; returns what rank 0 wrote."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.targets import parse_prediction

    gold = load_sentences("atsa", "rest14", "test", benchmark_dir)[:N_TEST]
    lines = result.predictions_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(gold) == result.n_test == N_TEST  # gathered from both ranks, in gold order
    for line, sentence in zip(lines, gold, strict=True):
        parse_prediction(json.loads(line)["prediction"], "atsa", sentence["sentence"])  # never raises
    [folder] = _stage_folders(config)
    written = json.loads((folder / RESULT_FILES["finetune"]).read_text(encoding="utf-8"))
    assert written["num_processes"] == 2 and result.predictions_path.parent == folder
    return written


def _training_processes() -> list[psutil.Process]:
    """This process's live launcher and rank processes."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and ENTRY_MODULE in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # gone meanwhile
            continue
    return found


@pytest.fixture(scope="module")
def stopped_then_finished(tmp_path_factory: pytest.TempPathFactory, tiny_student_dir: Path,
                          benchmark_dir: Path) -> dict:
    """A 2-process run that cannot finish (its ranks block reading the model's config.json, a FIFO nobody
    writes: a stuck read, whatever the machine's speed), stopped by the stage's timeout; then, once the read is
    unblocked, the same run again with the stage's own timeout, finishing in the stopped run's folder. Both
    tests read this one sequence: every run is a 2-process launch under torchrun (~20-40 s here), so the
    finished run is the one both check rather than a third launch. Returns what each test asserts on."""
    from prefect.task_engine import TaskRunTimeoutError

    tmp_path = tmp_path_factory.mktemp("ft-ddp")
    student = tmp_path / "student"
    shutil.copytree(tiny_student_dir, student)
    (student / "config.json").unlink()
    os.mkfifo(student / "config.json")
    model = ModelResult(model_dir=student, digest="tiny", key="tiny")
    config = _config(tmp_path / "work", benchmark_dir)
    seen: dict = {"config": config}
    stage = distill_flow.finetune_stage
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each rank one thread on this 2-core machine
        # A short timeout, and no retry (a timeout is transient to the stages' retry condition): one attempt.
        monkeypatch.setattr(distill_flow, "finetune_stage",
                            stage.with_options(timeout_seconds=HUNG_RUN_TIMEOUT_S, retries=0))
        flow_ended = threading.Event()

        def end_a_run_the_timeout_missed() -> None:
            """Without a working timeout the flow would wait forever: kill the blocked ranks late, and say so."""
            if not flow_ended.wait(HUNG_RUN_TIMEOUT_S + 60):
                seen["killed_the_ranks"] = True
                for process in _training_processes():
                    process.kill()

        watcher = threading.Thread(target=end_a_run_the_timeout_missed)
        watcher.start()
        try:
            fine_tune(config, model)
        except TaskRunTimeoutError as error:
            seen["timeout_error"] = str(error)
        finally:
            flow_ended.set()
            watcher.join()
        seen["folders_after_stop"] = _stage_folders(config)
        [folder] = seen["folders_after_stop"]
        seen["result_file_after_stop"] = (folder / RESULT_FILES["finetune"]).exists()
        seen["last_log_line"] = (folder / LOG_FILE).read_text(encoding="utf-8").splitlines()[-1]
        _, seen["alive_after_stop"] = psutil.wait_procs(_training_processes(), timeout=30)
        try:
            with model_heavy(Placement.of(config)).acquire(timeout=0):
                seen["lock_given_back"] = True
        except filelock.Timeout:
            seen["lock_given_back"] = False

        (student / "config.json").unlink()
        shutil.copy(tiny_student_dir / "config.json", student / "config.json")  # the stuck read is over
        monkeypatch.setattr(distill_flow, "finetune_stage", stage)  # the next run, with the stage's own timeout
        [seen["result"]], seen["metric_runs"] = fine_tune(config, model)
    return seen


def test_stage_timeout_stops_a_hung_two_process_run(stopped_then_finished: dict) -> None:
    seen = stopped_then_finished
    assert "killed_the_ranks" not in seen, "the stage's timeout did not stop the hung run"
    assert re.search(rf"timed out after {HUNG_RUN_TIMEOUT_S}(\.0)? second", seen.get("timeout_error", "")), seen
    assert len(seen["folders_after_stop"]) == 1 and not seen["result_file_after_stop"]
    assert "stopped from outside" in seen["last_log_line"]
    assert not seen["alive_after_stop"]  # neither the launcher nor a rank outlives the stage (ranks die with it)
    assert seen["lock_given_back"]  # the stopped stage gave the model-heavy lock back


def test_next_two_process_run_finishes_and_returns_rank_zeros_history(stopped_then_finished: dict,
                                                                      benchmark_dir: Path) -> None:
    """The run after the stopped one, in the same stage folder (same key), with the stage's own timeout."""
    config, result = stopped_then_finished["config"], stopped_then_finished["result"]
    written = _check_finished_run(result, config, benchmark_dir)
    assert result.dev_history == written["dev_history"] and len(result.dev_history) == 1  # 1 epoch
    assert result.best_dev_f1 == written["best_dev_f1"] == result.dev_history[0]["dev_f1"]
    # The ranks never log to MLflow: the stage logs rank 0's history once they are done, one point per epoch.
    client = MlflowClient(config.mlflow_uri)
    run_id = stopped_then_finished["metric_runs"][f"finetune/{DATASET}/seed-1"]
    for name in ("dev_f1", "train_loss"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, f"finetune/{name}")]
        assert logged == [(r["epoch"], pytest.approx(r[name])) for r in result.dev_history], name
