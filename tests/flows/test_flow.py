"""The `distill` flow end to end on a tiny configuration: real Prefect (ephemeral server), real MLflow (SQLite),
the real offline teacher (SmolLM2 served by vLLM) and a t5-tiny student.

Checked: a second identical run recomputes nothing; a changed config or prompt invalidates exactly the stages
after it; killing a run during pretraining and starting it again skips generation and resumes training. Tests
about what follows generation (the kill test here, the worker test of test_ops_production.py) take imported
answers instead of the teacher (`with_imported_answers`): the same generate stage, no vLLM engine to start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fsa_distill.core.config import resolve_config
from fsa_distill.models.teacher.prompts import PROMPT_DIR

pytestmark = pytest.mark.slow

UPSTREAM = ("generate", "corpus", "student", "pretrain")


def tiny_overrides(work_dir: Path, teacher_dir: Path) -> list[str]:
    return [
        f"work_dir={work_dir}",
        "data.datasets=[atsa/rest14]",
        "data.max_train_sentences=32",
        "data.max_dev_sentences=12",
        "data.max_test_sentences=20",
        "corpus.max_benchmark_reviews=8",
        f"teacher.model={teacher_dir}",
        "teacher.backend=vllm",
        "teacher.kv_cache_memory_gib=1",
        "generation.max_new_tokens=128",
        "generation.batch_size=16",
        "student.model=t5-tiny",  # tests use tiny models (the demo profile's student is the 37M MiniLM-BART)
        "student.vocab_size=600",
        "pretrain.max_steps=6",
        "pretrain.checkpoint_every=3",
        "pretrain.eval_every=3",
        "pretrain.batch_size=4",
        "pretrain.max_target_length=128",
        "finetune.epochs=1",
        "finetune.batch_size=8",
        "finetune.max_new_tokens=32",
        "evaluate.teacher_baseline=false",
        "tracking.experiment_name=flow-test",
    ]


IMPORTED_TEACHER = "flow-test-answers"


def with_imported_answers(overrides: list[str]) -> list[str]:
    """`overrides` with the teacher swapped for answers imported into the work dir's answer store first: one
    valid analysis and one valid rewrite for every review the config collects (`cache import`'s code path)."""
    from fsa_distill.benchmark.importers import read_review_corpus
    from fsa_distill.tasks.stages.collect import collect_reviews
    from fsa_distill.tasks.stages.generate import GenerateSettings
    from fsa_distill.tasks.stages.import_answers import import_answers
    from fsa_distill.tasks.store.answer_files import AnswerRecord
    from fsa_distill.tasks.store.answers import store_location

    swapped = [o for o in overrides if not o.startswith(("teacher.model=", "teacher.backend="))]
    swapped += ["teacher.backend=imported", f"teacher.model={IMPORTED_TEACHER}"]
    config = resolve_config("demo", overrides=swapped, environ={})
    with tempfile.TemporaryDirectory() as temp:
        reviews = read_review_corpus(Path(collect_reviews(config, Path(temp))["path"]))
    records = []
    for review in reviews:
        target = max(re.findall(r"[A-Za-z]+", review["text"]), key=len)
        analysis = (f'Opinion Target 1: "{target}"\nAspect: "quality"\nSentiment: positive\n'
                    f"Reasoning: The review speaks well of the {target}.")
        rewrite = f"I was there myself, and what I remember best is the {target}."
        records += [AnswerRecord(review["id"], review["text"], analysis, "analysis"),
                    AnswerRecord(review["id"], review["text"], rewrite, "rewrite")]
    imported = import_answers(records, GenerateSettings.of(config), IMPORTED_TEACHER,
                              store_location(config.work_dir, config.generation.cache_url))
    assert imported["accepted"] == len(records) == 2 * len(reviews), imported
    return swapped


@pytest.fixture(scope="module")
def teacher_dir(smollm2_dir: tuple[Path, str]) -> Path:
    return smollm2_dir[0]


def run_flow(overrides: list[str]) -> dict:
    from fsa_distill.flows.distill import distill

    return distill(profile="demo", overrides=overrides)


def test_cache_reuse_and_exact_invalidation(tmp_path: Path, teacher_dir: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    # Two runs start the SmolLM2 engine (the first, the changed prompt): in this process, the second start
    # skips spawning and importing an engine process.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    base = tiny_overrides(tmp_path / "work", teacher_dir)
    first = run_flow(base)
    assert set(first["stages"].values()) == {"ran"}
    assert 0.0 <= first["mean_f1"] <= 1.0
    (quality,) = first["teacher_quality"].values()
    assert quality["answers"] > 0 and quality["gold_analyses"] > 0 and 0.0 <= quality["pair_f1"] <= 1.0

    second = run_flow(base)
    assert set(second["stages"].values()) == {"cached"}, second["stages"]
    assert second["mean_f1"] == first["mean_f1"]
    assert second["model_version"] == first["model_version"] and second["reused_version"]

    client = MlflowClient(first["tracking_uri"])
    parent = client.get_run(second["mlflow_run_id"])
    assert parent.data.metrics["mean_f1"] == pytest.approx(first["mean_f1"])
    assert parent.data.metrics["teacher_quality/acceptance_rate"] == pytest.approx(quality["acceptance_rate"])
    assert parent.data.tags["prefect.flow_run_id"] == second["flow_run_id"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {run.data.tags["stage"] for run in children} >= {"generate", "corpus", "pretrain"}
    assert all(run.data.tags["cached"] == "True" for run in children)
    aliases = client.get_registered_model("fsa-distill-student").aliases
    assert aliases["challenger"] == aliases["champion"] == int(first["model_version"])

    # A fine-tuning change keeps everything upstream of fine-tuning.
    changed_config = run_flow([*base, "finetune.learning_rate=0.001"])
    assert all(changed_config["stages"][stage] == "cached" for stage in UPSTREAM)
    assert changed_config["stages"]["finetune/atsa/rest14/seed-42"] == "ran"

    # A changed prompt template re-asks the teacher and, through the new corpus digest, everything after it.
    prompt_dir = tmp_path / "prompts"
    shutil.copytree(PROMPT_DIR, prompt_dir)
    rewrite = next(prompt_dir.glob("rewrite*"))
    rewrite.write_text(rewrite.read_text(encoding="utf-8").replace("first person", "first person, briefly"), encoding="utf-8")
    changed_prompt = run_flow([*base, f"generation.prompt_dir={prompt_dir}"])
    assert changed_prompt["stages"]["generate"] == "ran"
    assert all(changed_prompt["stages"][stage] == "ran" for stage in ("corpus", "student", "pretrain"))


def _cli(args: list[str], work_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fsa_distill.cli", "run", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=open(work_dir.parent / "flow-stderr.log", "ab"),
        text=True,
        env=env,
        start_new_session=True,
    )


def test_kill_during_pretraining_then_resume(tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    overrides = with_imported_answers(tiny_overrides(work_dir, Path("unused")))
    overrides += ["pretrain.max_steps=120", "pretrain.checkpoint_every=10", "pretrain.eval_every=100"]
    args = [arg for override in overrides for arg in ("--set", override)]
    config = resolve_config("demo", overrides=overrides, environ={})

    first = _cli(args, work_dir)
    deadline = time.monotonic() + 600
    checkpoints: list[Path] = []
    while time.monotonic() < deadline and first.poll() is None:
        # Finished checkpoints only: a `.step-*.tmp` folder is one being saved (killing then would leave none).
        checkpoints = list((config.work_dir / "stages" / "pretrain").glob("*/checkpoints/step-*"))
        if checkpoints:
            break
        time.sleep(0.5)
    assert checkpoints, "pretraining never wrote a checkpoint"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)

    second = _cli(args, work_dir)
    stdout, _ = second.communicate(timeout=900)
    assert second.returncode == 0, (work_dir.parent / "flow-stderr.log").read_text()[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stages"]["generate"] == "cached"
    assert summary["stages"]["pretrain"] == "ran"
    pretrain_dir = next((config.work_dir / "stages" / "pretrain").iterdir())
    result = json.loads((pretrain_dir / "pretrain_result.json").read_text())
    assert result["resumed_from_step"] > 0
    assert result["steps"] == 120
