"""Data-parallel student training on the CPU: 2 processes over gloo, started by torchrun and accelerate launch
through the single-stage commands, and by the stage's launcher (tasks/stages/launch.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from fsa_distill.core.config import DistillConfig, PretrainConfig
from fsa_distill.tasks.stages.pretrain import pretrain
from tests.student_fixtures import train_log

pytestmark = pytest.mark.slow  # each launch starts 2 fresh interpreters (~15 s on this 2-core machine)

SETTINGS = {"max_steps": 20, "batch_size": 4, "checkpoint_every": 4, "eval_every": 5, "log_every": 1,
            "max_source_length": 32, "max_target_length": 48, "learning_rate": 3e-3}
TIMEOUT = 600


def _overrides(section: str, settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{section}.{key}={value}")]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "fsa_distill.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, student_without_dropout: Path, tiny_corpus_dir: Path
            ) -> Path:
    """An uninterrupted 2-process pretraining through `fsa-distill pretrain` under torchrun."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    ran = subprocess.run(_torchrun("pretrain", "--student", str(student_without_dropout), "--corpus",
                                   str(tiny_corpus_dir), "--out", str(out), *_overrides("pretrain", SETTINGS),
                                   "--json"),
                         capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr[-4000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert summary["steps"] == SETTINGS["max_steps"] and len(ran.stdout.strip().splitlines()) == 1
    return out


def test_two_processes_give_the_losses_of_one_process_with_the_whole_batch(
    tmp_path: Path, ddp_run: Path, student_without_dropout: Path, tiny_corpus_dir: Path
) -> None:
    single = pretrain(student_without_dropout, tiny_corpus_dir, PretrainConfig(**SETTINGS), tmp_path / "one",
                      key="k")
    assert single["num_processes"] == 1
    one, two = train_log(tmp_path / "one"), train_log(ddp_run)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, SETTINGS["max_steps"] + 1))
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"]), (a, b)
        if "eval_loss" in a:
            assert abs(a["eval_loss"] - b["eval_loss"]) <= 1e-4 * abs(a["eval_loss"]), (a, b)
    assert one[-1]["loss"] < one[0]["loss"]  # it trained


def test_only_rank_zero_writes(ddp_run: Path) -> None:
    checkpoints = sorted((ddp_run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000016", "step-00000020"]  # no temp folder of a 2nd writer
    writers = [json.loads((c / "trainer_state.json").read_text())["saved_by"] for c in checkpoints]
    assert {w["rank"] for w in writers} == {0} and {w["num_processes"] for w in writers} == {2}
    assert len({w["pid"] for w in writers}) == 1  # one process wrote every checkpoint
    states = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert len(states["rng_by_rank"]) == 2 and states["rng_by_rank"][0] != states["rng_by_rank"][1]
    assert [r["step"] for r in train_log(ddp_run)] == list(range(1, 21))  # one log line per step: one log writer
    assert json.loads((ddp_run / "pretrain_result.json").read_text())["num_processes"] == 2


def _wait_for_checkpoint(folder: Path, process: subprocess.Popen) -> Path:
    """The first finished checkpoint (saving renames a complete temp folder to step-N: its name means done)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = sorted((folder / "checkpoints").glob("step-*")) if (folder / "checkpoints").exists() else []
        if found:
            return found[0]
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


def test_killed_ddp_run_resumes_with_the_sametrain_log(tmp_path: Path, ddp_run: Path, student_without_dropout: Path,
                                                      tiny_corpus_dir: Path) -> None:
    out = tmp_path / "killed"
    command = _torchrun("pretrain", "--student", str(student_without_dropout), "--corpus", str(tiny_corpus_dir),
                        "--out", str(out), *_overrides("pretrain", SETTINGS), "--json")
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                                start_new_session=True)
    try:
        _wait_for_checkpoint(out, launcher)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both ranks
        launcher.wait()
    assert not (out / "pretrain_result.json").exists(), "the run finished before it was killed"
    ran = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr[-4000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert 0 < summary["resumed_from_step"] < SETTINGS["max_steps"]
    assert train_log(out) == train_log(ddp_run)  # every step after the checkpoint recomputed to the same loss


def test_stage_launcher_fails_cleanly_when_a_rank_is_killed_and_the_rerun_resumes(
    tmp_path: Path, ddp_run: Path, student_without_dropout: Path, tiny_corpus_dir: Path
) -> None:
    from fsa_distill.tasks.stages.launch import ENTRY_MODULE, LaunchFailed, run_in_processes
    from fsa_distill.tasks.stages.pretrain import PretrainSettings

    config = DistillConfig(pretrain=PretrainConfig(**SETTINGS))
    config.train.num_processes = 2
    out = tmp_path / "stage"
    arguments = {"student_dir": student_without_dropout, "corpus_dir": tiny_corpus_dir, "key": "k"}
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_in_processes("pretrain", arguments, PretrainSettings.of(config), config.train, out, 2)
        except BaseException as error:  # noqa: BLE001
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not (out / "checkpoints").is_dir() or not list((out / "checkpoints").glob("step-*")):
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.02)
    ranks = [p for p in psutil.Process().children(recursive=True) if ENTRY_MODULE in " ".join(p.cmdline())]
    victim = next(p for p in ranks if p.environ().get("RANK") == "1")
    victim.send_signal(signal.SIGKILL)
    thread.join(TIMEOUT)
    assert isinstance(outcome.get("error"), LaunchFailed), outcome
    message = str(outcome["error"])
    assert "pretrain with 2 processes failed" in message and "rank" in message and "resumes" in message
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)  # no rank outlives it

    result = run_in_processes("pretrain", arguments, PretrainSettings.of(config), config.train, out, 2)
    assert 0 < result["resumed_from_step"] < SETTINGS["max_steps"] and result["num_processes"] == 2
    assert train_log(out) == train_log(ddp_run)


def test_two_process_finetuning_predicts_every_gold_sentence(tmp_path: Path, tiny_student_dir: Path,
                                                            benchmark_dir: Path) -> None:
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.targets import parse_prediction

    out = tmp_path / "ft"
    settings = {"data.max_train_sentences": 32, "data.max_dev_sentences": 8, "data.max_test_sentences": 21,
                "finetune.epochs": 2, "finetune.learning_rate": 1e-3, "finetune.max_new_tokens": 16,
                "finetune.batch_size": 6}  # 32 = 5 × 6 + 2: the last batch leaves one process a single sentence
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--module",
               "fsa_distill.cli", "finetune", "--model", str(tiny_student_dir), "--dataset", "atsa/rest14",
               "--out", str(out), "--data-dir", str(benchmark_dir),
               *[arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")], "--json"]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr[-4000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    gold = load_sentences("atsa", "rest14", "test", benchmark_dir)[:21]
    lines = Path(summary["predictions_path"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(gold) == 21  # gathered from both processes, in gold order
    for line, sentence in zip(lines, gold, strict=True):
        parse_prediction(json.loads(line)["prediction"], "atsa", sentence["sentence"])  # never raises
    result = json.loads((out / "finetune_result.json").read_text())
    assert result["num_processes"] == 2 and len(result["dev_history"]) == 2
    assert not (out / "last").exists() and (out / "best" / "config.json").exists()


def test_a_batch_that_does_not_split_over_the_processes_fails_with_one_clear_error(
    tmp_path: Path, student_without_dropout: Path, tiny_corpus_dir: Path
) -> None:
    ran = subprocess.run(_torchrun("pretrain", "--student", str(student_without_dropout), "--corpus",
                                   str(tiny_corpus_dir), "--out", str(tmp_path / "out"),
                                   *_overrides("pretrain", {**SETTINGS, "batch_size": 5})),
                         capture_output=True, text=True, timeout=TIMEOUT, env=_env(), check=False)
    assert ran.returncode != 0
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(line == "error: pretrain.batch_size: 5 does not split evenly over 2 processes; use a "
                                  "multiple of 2" for line in errors), ran.stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "model").exists()
