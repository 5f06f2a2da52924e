"""How fast the history page (tasks/tracking/history.py) is over many runs: a synthetic tracking store of N
weekly runs written through MLflow's client (what a flow run logs on its parent run, two stage runs each, one
registered version per run behind the real gate rule), then the page read and rendered from it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "history.json"
DATASETS = ("atsa-rest14", "atsa-lap14")
VIEWS = ("normal", "implicit", "multi")
STAGES = ("generate", "corpus", "student", "pretrain", "finetune")


def _run_metrics(rng: random.Random, index: int) -> dict[str, float]:
    """What a flow run logs on its parent run (tasks/tracking/tables.py, teacher_quality.py, cost.py
    names)."""
    level = 0.30 + 0.003 * index + rng.uniform(-0.04, 0.04)
    metrics = {f"distilled.{d}.{v}.f1_mean": max(0.0, level + rng.uniform(-0.08, 0.02) - 0.1 * (v != "normal"))
               for d in DATASETS for v in VIEWS}
    metrics["mean_f1"] = sum(metrics[f"distilled.{d}.normal.f1_mean"] for d in DATASETS) / len(DATASETS)
    metrics.update({"reviews": 100 + 20 * index, "teacher_quality/pair_f1": rng.uniform(0.1, 0.3),
                    "teacher_quality/acceptance_rate": rng.uniform(0.6, 0.9),
                    "cost/teacher_prompt_tokens": 40_000 + 500 * index, "cost/teacher_completion_tokens": 9_000,
                    "cost/answers_generated": 40.0, "cost/answers_from_store": 200.0 + 40 * index})
    metrics.update({f"cost/seconds/{stage}": rng.uniform(5, 60) for stage in STAGES})
    metrics["cost/seconds/total"] = sum(metrics[f"cost/seconds/{stage}"] for stage in STAGES)
    return metrics


def synthetic_store(tracking_uri: str, experiment_name: str, model_name: str, f1s: list[float | None] | None = None,
                    n_runs: int = 3, reports_dir: Path | None = None, children: int = 2, seed: int = 0) -> list[str]:
    """Write `n_runs` finished flow runs a week apart (or one per entry of `f1s`, overriding each run's gate
    metric; None = a failed run) and register each finished one through the gate rule of
    tasks/tracking/register.py. With `reports_dir`, each run gets a real report (tasks/tracking/report.py) at
    `<reports_dir>/<run id>/report.html`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.register import CHALLENGER, CHAMPION, gate_champion
    from fsa_distill.tasks.tracking.report import build_report

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment(experiment_name)
    client.create_registered_model(model_name)
    rng, champion_f1, run_ids = random.Random(seed), None, []
    start = dt.datetime(2026, 1, 5, 6, tzinfo=dt.UTC)
    for index, override in enumerate(f1s if f1s is not None else [0.0] * n_runs):
        started = int((start + dt.timedelta(days=7 * index)).timestamp() * 1000)
        run_id = client.create_run(experiment, start_time=started, run_name=f"distill-demo-week-{index + 1}",
                                   tags={"profile": "demo", "cost.device": "cpu (2 cores)"}).info.run_id
        for stage in STAGES[:children]:
            child = client.create_run(experiment, start_time=started, tags={"mlflow.parentRunId": run_id,
                                                                            "stage": stage})
            client.set_terminated(child.info.run_id)
        metrics = _run_metrics(rng, index)
        if f1s is not None and override is not None:
            metrics["mean_f1"] = override
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, started, 0) for k, v in metrics.items()])
        if override is None and f1s is not None:
            client.set_terminated(run_id, "FAILED", end_time=started + 60_000)
            run_ids.append(run_id)
            continue
        promoted = gate_champion(metrics["mean_f1"], champion_f1)
        version = client.create_model_version(model_name, source=f"runs:/{run_id}/student", run_id=run_id,
                                              tags={"mean_f1": f"{metrics['mean_f1']:.6f}",
                                                    "gate_decision": "promoted" if promoted else "kept_champion"})
        client.set_registered_model_alias(model_name, CHALLENGER, version.version)
        if promoted:
            champion_f1 = metrics["mean_f1"]
            client.set_registered_model_alias(model_name, CHAMPION, version.version)
        client.set_tag(run_id, "gate.decision", "promoted" if promoted else "kept_champion")
        client.set_tag(run_id, "registered_model", f"{model_name}/{version.version}")
        client.set_terminated(run_id, end_time=started + int(1000 * metrics["cost/seconds/total"]))
        if reports_dir is not None:
            build_report({"title": f"fsa-distill demo — MLflow run {run_id}",
                          "summary": {"mean_f1": metrics["mean_f1"], "model_version": version.version}},
                         reports_dir / run_id)
        run_ids.append(run_id)
    return run_ids


def run(n_runs: int = 200, work_dir: Path | None = None, out_path: Path | None = RESULTS_PATH) -> dict[str, Any]:
    """Build the store (not timed), then time reading it and rendering the page, separately."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.history import read_runs, read_versions, render_page, with_links

    with tempfile.TemporaryDirectory(prefix="fsa-bench-history-", dir=work_dir) as temp:
        uri = f"sqlite:///{Path(temp) / 'mlflow.db'}"
        built = time.perf_counter()
        synthetic_store(uri, "history-bench", "student", n_runs=n_runs)
        build_s = time.perf_counter() - built
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("history-bench").experiment_id
        started, cpu = time.perf_counter(), time.process_time()
        runs = with_links(read_runs(client, experiment), experiment, "http://127.0.0.1:5050", "reports/")
        versions = read_versions(client, "student")
        read_s, read_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        page = render_page("history bench", runs, versions)
        render_s, render_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    result = {
        "bench": "history", "n_runs": len(runs), "n_versions": len(versions), "store": "sqlite",
        "build_store_s": round(build_s, 2), "read_s": round(read_s, 3), "render_s": round(render_s, 3),
        "total_s": round(read_s + render_s, 3), "read_cpu_s": round(read_cpu_s, 3),
        "render_cpu_s": round(render_cpu_s, 3), "page_bytes": len(page.encode()), "goal_render_s": 2.0,
        "met": read_s + render_s < 2.0, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                   "load_average_1min": round(os.getloadavg()[0], 1)},
        "note": "render_s is the first render in this process: it includes plotly's import and set-up; *_cpu_s: "
                "this process's CPU seconds, what the wall time would be on an idle machine",
    }
    if out_path is not None:
        write_json_atomically(out_path, result)
    return result
