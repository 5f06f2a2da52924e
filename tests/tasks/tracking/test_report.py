"""tasks/tracking/report.py: the HTML + PNG run report the flow logs to MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fsa_distill.tasks.tracking.report import aggregate_scores, build_report, scores_from_finetune


def _full_results() -> dict:
    finetune = [
        {"dataset": "atsa/rest14", "seed": seed, "scores": {"normal": {"f1": f1}, "implicit": {"f1": f1 - 0.2}}}
        for seed, f1 in ((42, 0.60), (52, 0.64), (62, 0.62))
    ]
    baseline = [
        {"dataset": "atsa/rest14", "seed": seed, "scores": {"normal": {"f1": f1}, "implicit": {"f1": f1 - 0.3}}}
        for seed, f1 in ((42, 0.50), (52, 0.55), (62, 0.48))
    ]
    return {
        "title": "demo <run>",
        "summary": {"mean_f1": 0.62, "champion": True},
        "scores": scores_from_finetune(finetune, "distilled") + scores_from_finetune(baseline, "undistilled"),
        "curves": {
            "pretrain/train_loss": [[10, 5.0], [20, 4.0], [30, 3.5]],
            "pretrain/eval_loss": [[20, 4.3], [30, 3.9]],
            "finetune/atsa/rest14/seed42/train_loss": [[1, 2.0], [2, 1.0]],
        },
        "rejections": {"no aspect mentioned": 3, "empty response": 1},
        "teacher_quality": {"smollm2-135m-instruct": {
            "answers": 10, "accepted": 8, "acceptance_rate": 0.8, "gold_analyses": 4, "pair_precision": 0.5,
            "pair_recall": 0.25, "pair_f1": 1 / 3, "target_f1": 0.6, "rejected_by_reason": {"truncated": 2}}},
        "deltas": {"B": {"mean": -1.0, "ci95": [-2.5, 0.4]}, "C": {"mean": 2.0, "ci95": [0.5, 3.1]}},
    }


def test_aggregate_scores_mean_and_seed_spread() -> None:
    rows = aggregate_scores(_full_results()["scores"])
    normal = next(r for r in rows if r["variant"] == "distilled" and r["view"] == "normal")
    assert normal["n_seeds"] == 3
    assert normal["mean_f1"] == pytest.approx(0.62)
    assert normal["std_f1"] == pytest.approx(0.02)
    assert [r["view"] for r in rows if r["variant"] == "distilled"] == ["normal", "implicit"]


def test_build_report_writes_html_and_every_plot(tmp_path: Path) -> None:
    report = build_report(_full_results(), tmp_path / "report")
    assert report == tmp_path / "report" / "report.html"
    page = report.read_text(encoding="utf-8")
    assert "demo &lt;run&gt;" in page  # escaped, not injected
    for name in ("f1_by_dataset_view.png", "distilled_vs_undistilled.png", "loss_curves.png",
                 "teacher_rejections.png", "deltas.png"):
        assert f"src='{name}'" in page
        with Image.open(report.parent / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    assert "0.6200" in page and "no aspect mentioned" in page
    assert "8/10 (80%)" in page and "50.0 / 25.0 / 33.3" in page and "truncated 2" in page  # teacher quality
    assert "[+0.50, +3.10]" in page  # the study's paired differences
    assert (report.parent / "results.json").exists()


def test_build_report_leaves_out_plots_without_data(tmp_path: Path) -> None:
    only_distilled = [r for r in _full_results()["scores"] if r["variant"] == "distilled"]
    report = build_report({"scores": only_distilled}, tmp_path)
    page = report.read_text(encoding="utf-8")
    assert (tmp_path / "f1_by_dataset_view.png").exists()
    assert not (tmp_path / "distilled_vs_undistilled.png").exists()
    assert not (tmp_path / "loss_curves.png").exists()
    assert "Teacher rejections" not in page


def test_build_report_with_nothing_says_so(tmp_path: Path) -> None:
    page = build_report({}, tmp_path).read_text(encoding="utf-8")
    assert "No scores, curves or rejections" in page
