"""The fine-tuning fan-out: every (dataset × seed) run submitted at once through prefect-ray's RayTaskRunner on a
real local Ray with 2 CPUs, or run by `_finetune_all` in the flow's thread, gives the table the sequential runs
give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prefect import flow

from fsa_distill.core.config import DistillConfig, resolve_config
from fsa_distill.flows.distill import _finetune_all, _records
from fsa_distill.flows.stage_runner import StageRunner
from fsa_distill.tasks.stages.finetune import FinetuneSettings, finetune_stage
from fsa_distill.tasks.stages.records import ModelResult
from fsa_distill.tasks.tracking.runs import RunTracker
from fsa_distill.tasks.tracking.tables import aggregate_runs

pytestmark = pytest.mark.slow  # 12 tiny fine-tuning runs and a Ray start


def _config(work_dir: Path, benchmark_dir: Path, runner: str) -> DistillConfig:
    return resolve_config("demo", environ={}, overrides=[
        f"work_dir={work_dir}", f"data.data_dir={benchmark_dir}", "data.datasets=[atsa/rest14, acsa/rest16]",
        "data.max_train_sentences=12", "data.max_dev_sentences=4", "data.max_test_sentences=6",
        "finetune.seeds=[1, 2]", "finetune.epochs=1", "finetune.batch_size=4", "finetune.max_new_tokens=12",
        "evaluate.views=[normal]", f"train.task_runner={runner}", "train.cpus_per_run=1",
        "tracking.experiment_name=fanout-test"])


@flow(name="finetune-fanout-test")
def fine_tune_every_run(config: DistillConfig, model: ModelResult, fanned_out: bool) -> tuple[dict, dict]:
    """The distill flow's fine-tuning step alone: fanned out (`_finetune_all`) or one run after another."""
    tracker = RunTracker(config)
    parent = tracker.start_parent(run_name="fanout", tags={})
    run_stage = StageRunner(config, tracker, parent)
    if fanned_out:
        runs = _finetune_all(run_stage, "finetune", model, config)
    else:
        runs = [run_stage(f"finetune/{dataset}/seed-{seed}", finetune_stage, live_metrics=True, model=model,
                          dataset=dataset, seed=seed, settings=FinetuneSettings.of(config))
                for dataset in config.data.datasets for seed in config.finetune.seeds]
    tracker.finish(parent)
    return aggregate_runs(_records(runs)), run_stage.outcomes


def test_fanned_out_runs_give_the_sequential_table(tmp_path: Path, tiny_student_dir: Path,
                                                  benchmark_dir: Path) -> None:
    import ray

    model = ModelResult(model_dir=tiny_student_dir, digest="tiny", key="tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task with num_cpus=1 gets: the same float arithmetic everywhere
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        sequential, _ = fine_tune_every_run(_config(tmp_path / "seq", benchmark_dir, "thread"), model, False)
        threaded, thread_outcomes = fine_tune_every_run(_config(tmp_path / "thread", benchmark_dir, "thread"),
                                                        model, True)
        on_ray, ray_outcomes = fine_tune_every_run(_config(tmp_path / "ray", benchmark_dir, "ray"), model, True)
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)
    assert set(sequential) == {"atsa/rest14", "acsa/rest16"}
    assert all(summary["normal"]["n_seeds"] == 2 for summary in sequential.values())
    assert threaded == sequential and on_ray == sequential
    assert set(thread_outcomes.values()) == set(ray_outcomes.values()) == {"ran"} and len(ray_outcomes) == 4
