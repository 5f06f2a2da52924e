"""Seed aggregation and the gate metric."""

from __future__ import annotations

import pytest

from fsa_distill.tasks.tracking.tables import aggregate_runs, flat_metrics, format_table, gate_metric


def _run(dataset: str, seed: int, f1: float) -> dict:
    score = {"precision": f1, "recall": f1, "f1": f1}
    return {"dataset": dataset, "seed": seed, "scores": {"normal": score, "implicit": score}}


def test_mean_and_sample_std_per_dataset_and_view() -> None:
    table = aggregate_runs([_run("atsa/rest14", 42, 0.5), _run("atsa/rest14", 52, 0.7), _run("acsa/rest16", 42, 0.9)])
    assert table["atsa/rest14"]["normal"]["f1_mean"] == pytest.approx(0.6)
    assert table["atsa/rest14"]["normal"]["f1_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert table["acsa/rest16"]["implicit"]["f1_std"] == 0.0
    assert table["atsa/rest14"]["normal"]["f1_by_seed"] == {"42": 0.5, "52": 0.7}
    assert gate_metric(table) == pytest.approx((0.6 + 0.9) / 2)
    assert flat_metrics(table, "distilled")["distilled.atsa-rest14.normal.f1_mean"] == pytest.approx(0.6)
    rows = format_table({"student": table}, ["normal", "multi"])
    assert rows[0] == ["student", "atsa/rest14", "60.00 ± 14.14", "–"]


def test_gate_metric_needs_normal_view() -> None:
    with pytest.raises(ValueError):
        gate_metric({})
