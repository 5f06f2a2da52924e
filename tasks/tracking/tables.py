"""Turn per-seed fine-tuning scores into the results table: mean ± std per dataset and view.

The gate metric `mean_f1` is the mean, over datasets, of the seed-averaged F1 on the `normal` view (the whole
test set = test.json + hard_test.json, as in the paper).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

GATE_VIEW = "normal"


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def aggregate_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`runs`: finetune results with `dataset`, `seed` and `scores` {view: {precision, recall, f1}}.

    Returns {dataset: {view: {f1_mean, f1_std, precision_mean, recall_mean, n_seeds, f1_by_seed}}}.
    """
    grouped: dict[str, dict[str, list[tuple[int, dict[str, float]]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for view, score in run["scores"].items():
            grouped[run["dataset"]][view].append((run["seed"], score))
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset, views in grouped.items():
        table[dataset] = {}
        for view, seeded in views.items():
            f1_mean, f1_std = _mean_std([score["f1"] for _, score in seeded])
            table[dataset][view] = {
                "f1_mean": f1_mean,
                "f1_std": f1_std,
                "precision_mean": statistics.fmean(score["precision"] for _, score in seeded),
                "recall_mean": statistics.fmean(score["recall"] for _, score in seeded),
                "n_seeds": len(seeded),
                "f1_by_seed": {str(seed): score["f1"] for seed, score in seeded},
            }
    return table


def gate_metric(table: dict[str, dict[str, dict[str, Any]]]) -> float:
    """Mean over datasets of the seed-averaged normal-view F1."""
    values = [views[GATE_VIEW]["f1_mean"] for views in table.values() if GATE_VIEW in views]
    if not values:
        raise ValueError("no normal-view scores to gate on")
    return statistics.fmean(values)


def flat_metrics(table: dict[str, dict[str, dict[str, Any]]], prefix: str) -> dict[str, float]:
    """MLflow metric names like `distilled.atsa-rest14.normal.f1_mean`."""
    metrics = {}
    for dataset, views in table.items():
        for view, summary in views.items():
            for key in ("f1_mean", "f1_std", "precision_mean", "recall_mean"):
                metrics[f"{prefix}.{dataset.replace('/', '-')}.{view}.{key}"] = summary[key]
    return metrics


def format_table(rows: dict[str, dict[str, dict[str, dict[str, Any]]]], views: list[str]) -> list[list[str]]:
    """Rows for a printed table: model · dataset · one `mean ± std` column per view (F1 × 100)."""
    lines = []
    for model_name, table in rows.items():
        for dataset, by_view in table.items():
            cells = []
            for view in views:
                summary = by_view.get(view)
                cells.append(
                    f"{100 * summary['f1_mean']:.2f} ± {100 * summary['f1_std']:.2f}" if summary else "–"
                )
            lines.append([model_name, dataset, *cells])
    return lines
