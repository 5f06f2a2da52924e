"""The run report: one static `report.html` with PNG plots, logged as an MLflow artifact folder by the flow.

Static files rather than a web app: they open from the MLflow UI's artifact view, from a bucket or from a mail
attachment, and they stay what they were on the day of the run.

The `results` dict `build_report` reads (every key optional; a plot whose data is missing is left out):

    {
      "title": "fsa-distill demo",                      # page heading
      "summary": {"mean_f1": 0.41, "model_version": "3", "champion": True, ...},   # key → value table
      "scores": [                                       # one row per (variant, dataset, seed, view)
        {"variant": "distilled", "dataset": "atsa/rest14", "seed": 42, "view": "normal", "f1": 0.52},
        {"variant": "undistilled", ...},                # variant: "distilled" | "undistilled" | any label
      ],
      "curves": {                                       # series name → [[step, value], ...]
        "pretrain/train_loss": [[10, 5.1], [20, 4.2]],  # names starting with "pretrain" → pretrain panel
        "pretrain/eval_loss": [[20, 4.4]],
        "finetune/atsa/rest14/seed42/train_loss": [[1, 2.3], [2, 1.1]],   # "finetune…" → finetune panel
      },
      "rejections": {"no aspect mentioned": 3, "empty response": 1},       # teacher reject_reason → count
      "teacher_quality": {"smollm2-135m-instruct": {"acceptance_rate": 0.8, "pair_f1": 0.12, ...}},
                                                        # teacher → tasks/study/teacher_quality.py figures
      "deltas": {"C": {"mean": 1.2, "ci95": [-0.5, 2.9]}},  # arm → paired F1 × 100 difference to a baseline
      "versus_champion": {"champion_run_id": "…", "champion_version": "2", "rows": [...]},  # tasks/tracking/champion.py
      "errors": {"atsa/rest14": {"seed": 42, "counts": {...}, "confusion": {...}, "sample": [...]}},
                                                        # tasks/tracking/error_analysis.py `run_errors`
      "teacher_samples": {"accepted": [...], "rejected": [...]},   # tasks/tracking/error_analysis.py `teacher_samples`
      "cost": {"cost/teacher_completion_tokens": 5120, "cost/seconds/generate": 31.2, "device": "cpu (2 cores)"},
      "variety": {"atsa/rest14/seed-42": {"distinct_outputs": 310, "distinct_per_sentence": 0.27,
                                          "top_share": 0.31, "top_output": ""}},  # benchmark/variety.py
    }

`scores_from_finetune` turns finetune stage results into "scores" rows and `curves_from_mlflow` reads metric
histories of MLflow runs into "curves".
"""

from __future__ import annotations

import html
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt

from fsa_distill.core.files import atomic_file, write_json_atomically

VIEW_ORDER = ("normal", "implicit", "multi")


def scores_from_finetune(finetune_results: Iterable[Mapping[str, Any]], variant: str) -> list[dict[str, Any]]:
    """Finetune stage results (`{"dataset", "seed", "scores": {view: {"f1", ...}}}`) → report "scores" rows."""
    rows = []
    for result in finetune_results:
        for view, score in result.get("scores", {}).items():
            rows.append(
                {
                    "variant": variant,
                    "dataset": result["dataset"],
                    "seed": result.get("seed"),
                    "view": view,
                    "f1": float(score["f1"]),
                }
            )
    return rows


def curves_from_mlflow(tracking_uri: str, run_ids: Mapping[str, str], keys: Iterable[str]) -> dict[str, list]:
    """Metric histories → report "curves": `run_ids` maps a series prefix (e.g. "pretrain") to an MLflow run id;
    each metric in `keys` that the run logged becomes the series "<prefix>/<key>"."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    curves: dict[str, list] = {}
    for prefix, run_id in run_ids.items():
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if history:
                curves[f"{prefix}/{key}"] = [[metric.step, metric.value] for metric in sorted(history, key=_step)]
    return curves


def _step(metric: Any) -> int:
    return metric.step


def _spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _ordered_views(views: Iterable[str]) -> list[str]:
    return sorted(set(views), key=lambda view: (VIEW_ORDER.index(view) if view in VIEW_ORDER else 99, view))


def aggregate_scores(scores: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (variant, dataset, view): mean F1, standard deviation across seeds, seed count."""
    grouped: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in scores:
        if row.get("f1") is None or not math.isfinite(float(row["f1"])):
            continue
        grouped[(row.get("variant", "distilled"), row["dataset"], row["view"])].append(float(row["f1"]))
    aggregated = []
    for (variant, dataset, view), values in grouped.items():
        mean, std = _spread(values)
        aggregated.append(
            {"variant": variant, "dataset": dataset, "view": view, "mean_f1": mean, "std_f1": std,
             "n_seeds": len(values), "f1s": values}
        )
    order = _ordered_views(row["view"] for row in aggregated)
    return sorted(aggregated, key=lambda row: (row["variant"], row["dataset"], order.index(row["view"])))


def _plot_f1(aggregated: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: x = dataset × view, one bar per variant, error bar = std across seeds, dots = seeds."""
    variants = sorted({row["variant"] for row in aggregated}, key=lambda v: (v != "distilled", v))
    datasets = sorted({row["dataset"] for row in aggregated})
    views = _ordered_views(row["view"] for row in aggregated)
    groups = [(dataset, view) for dataset in datasets for view in views]
    lookup = {(row["variant"], row["dataset"], row["view"]): row for row in aggregated}
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(variants)) ** 0.5), 4.2))
    for index, variant in enumerate(variants):
        xs, means, stds = [], [], []
        for position, (dataset, view) in enumerate(groups):
            row = lookup.get((variant, dataset, view))
            if row is None:
                continue
            x = position - 0.4 + width * (index + 0.5)
            xs.append(x)
            means.append(row["mean_f1"])
            stds.append(row["std_f1"])
            ax.scatter([x] * len(row["f1s"]), row["f1s"], s=10, color="black", zorder=3)
        ax.bar(xs, means, width=width * 0.95, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{dataset}\n{view}" for dataset, view in groups], fontsize=8)
    ax.set_ylabel("micro-F1")
    ax.set_ylim(0, 1)
    ax.set_title("F1 by dataset × view (bars: mean, error bars: std across seeds, dots: seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_distilled_vs_undistilled(aggregated: list[dict[str, Any]], path: Path) -> bool:
    """Scatter of undistilled (x) against distilled (y) mean F1 per dataset × view; above the diagonal =
    distillation helped. Returns False when the run has no undistilled baseline."""
    by_key = {(row["variant"], row["dataset"], row["view"]): row for row in aggregated}
    pairs = [
        (key[1], key[2], by_key[("undistilled", key[1], key[2])], row)
        for key, row in by_key.items()
        if key[0] == "distilled" and ("undistilled", key[1], key[2]) in by_key
    ]
    if not pairs:
        return False
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for dataset, view, base, distilled in pairs:
        ax.errorbar(base["mean_f1"], distilled["mean_f1"], xerr=base["std_f1"], yerr=distilled["std_f1"],
                    fmt="o", capsize=3)
        ax.annotate(f"{dataset} {view}", (base["mean_f1"], distilled["mean_f1"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("undistilled F1")
    ax.set_ylabel("distilled F1")
    ax.set_title("Distilled vs undistilled (above the line: distillation helps)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_curves(curves: Mapping[str, list], path: Path) -> bool:
    """Loss curves in two panels, pretrain and finetune; returns False when there is nothing to draw."""
    panels = {"pretrain": {}, "finetune": {}}
    for name, points in curves.items():
        for panel, series in panels.items():
            if name.startswith(panel) and points:
                series[name] = points
    if not any(panels.values()):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (panel, series) in zip(axes, panels.items(), strict=True):
        losses = {name: points for name, points in series.items() if not name.endswith("f1")}
        scores = {name: points for name, points in series.items() if name.endswith("f1")}
        _draw_series(ax, losses, panel, "loss")
        if scores:  # F1 lives on 0-1, a loss does not: its own axis on the right
            _draw_series(ax.twinx(), scores, panel, "dev F1", linestyle="--")
        ax.set_title(f"{panel} loss" + (" (left) and dev F1 (right, dashed)" if scores else "")
                     if series else f"{panel}: no curves logged", fontsize=9)
        ax.set_xlabel("step" if panel == "pretrain" else "step / epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _draw_series(ax: Any, series: Mapping[str, list], panel: str, ylabel: str, linestyle: str = "-") -> None:
    for name, points in sorted(series.items()):
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="." if len(points) < 30 else None, linestyle=linestyle,
                label=name.removeprefix(panel + "/"))
    if series:
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="upper right" if ylabel == "loss" else "lower right")


def _plot_rejections(rejections: Mapping[str, int], path: Path) -> bool:
    counts = sorted(((reason, int(count)) for reason, count in rejections.items() if count), key=lambda x: x[1])
    if not counts:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(counts) + 1.4))
    ax.barh([reason[:60] for reason, _ in counts], [count for _, count in counts])
    ax.set_xlabel("rejected teacher responses")
    ax.set_title("Why teacher responses were rejected", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


TEACHER_QUALITY_NOTE = (
    "pair F1 scores the teacher's own analyses of gold-labelled train sentences as (term, polarity) predictions "
    "with the benchmark scorer (100 = every aspect and polarity right); target F1 ignores the polarity; "
    "acceptance = answers that passed validation and entered the corpus."
)


def teacher_quality_rows(quality: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """One row per teacher: acceptance, the gold-scored analyses (× 100) and the top rejection reasons."""
    rows = []
    for teacher, figures in quality.items():
        reasons = sorted((figures.get("rejected_by_reason") or {}).items(), key=lambda item: -item[1])
        scored = "pair_f1" in figures
        rows.append([
            teacher,
            f"{figures.get('accepted', 0)}/{figures.get('answers', 0)} ({100 * figures.get('acceptance_rate', 0):.0f}%)",
            str(figures.get("gold_analyses", 0)),
            f"{100 * figures['pair_precision']:.1f} / {100 * figures['pair_recall']:.1f} / "
            f"{100 * figures['pair_f1']:.1f}" if scored else "–",
            f"{100 * figures['target_f1']:.1f}" if scored else "–",
            ", ".join(f"{reason} {count}" for reason, count in reasons[:3]) or "–",
        ])
    return rows


def _plot_deltas(deltas: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    """Each arm's mean paired F1 difference to the baseline with its 95% bootstrap interval."""
    arms = [arm for arm, delta in deltas.items() if delta.get("ci95")]
    if not arms:
        return False
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(arms) + 1.5))
    for y, arm in enumerate(arms):
        low, high = deltas[arm]["ci95"]
        ax.errorbar([deltas[arm]["mean"]], [y], xerr=[[deltas[arm]["mean"] - low], [high - deltas[arm]["mean"]]],
                    fmt="o", capsize=4)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(arms)))
    ax.set_yticklabels(arms)
    ax.set_xlabel("F1 × 100 difference to the baseline (mean, 95% bootstrap interval)")
    ax.set_title("Paired difference to the undistilled student", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


CHAMPION_HEADERS = ["dataset", "view", "this run F1 × 100", "champion F1 × 100", "Δ F1 × 100", "95% interval"]


def versus_champion_section(comparison: Mapping[str, Any]) -> str:
    """This run beside the champion it was gated against (tasks/tracking/champion.py rows); empty without a gate."""
    if not comparison:
        return ""
    if comparison.get("champion_run_id") is None:
        return "<h2>This run vs the champion</h2><p>There was no champion before this run: nothing to compare.</p>"
    from fsa_distill.tasks.tracking.champion import comparison_lines

    note = (f"Champion: version {comparison.get('champion_version')} (MLflow run {comparison['champion_run_id']}), "
            "its logged test predictions rescored with this run's scorer on the same sentences, over the seeds "
            "both runs fine-tuned with. Interval: paired bootstrap over test sentences and seeds.")
    return ("<h2>This run vs the champion</h2>" + _table(CHAMPION_HEADERS, comparison_lines(comparison))
            + f"<p>{html.escape(note)}</p>")


KIND_COLOURS = {"right": "#1a7f37", "missed": "#9a6700", "wrong polarity": "#cf222e",
                "not a gold aspect": "#8250df", "not in the sentence": "#6e7781"}


def _marked_pairs(pairs: list[Mapping[str, Any]]) -> str:
    """Gold / predicted pairs of one sentence as coloured chips naming their kind."""
    chips = []
    for pair in pairs:
        polarity = pair["predicted"] or pair["gold"]
        detail = f" (gold {pair['gold']})" if pair["kind"] == "wrong polarity" else ""
        chips.append(f"<span class='pair' style='color:{KIND_COLOURS.get(pair['kind'], '#222')}'>"
                     f"{html.escape(str(pair['element']))} | {html.escape(str(polarity))}{html.escape(detail)} "
                     f"<small>[{html.escape(pair['kind'])}]</small></span>")
    return "<br>".join(chips) or "–"


def _raw_table(headers: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already HTML (escaped by the caller)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def errors_section(errors: Mapping[str, Mapping[str, Any]]) -> str:
    """Per dataset (tasks/tracking/error_analysis.py): error counts, polarity confusion matrix, the fixed sample."""
    parts = []
    for dataset, analysis in errors.items():
        counts = analysis["counts"]
        confusion = analysis["confusion"]
        columns = sorted({label for row in confusion.values() for label in row}, key=lambda x: (x.startswith("("), x))
        parts.append(
            f"<h3>{html.escape(dataset)} (seed {analysis['seed']}, whole test set)</h3>"
            + _table(list(counts), [list(counts.values())])
            + "<p>Polarity confusion (rows: gold, columns: predicted for the same element)</p>"
            + _table(["gold \\ predicted", *columns],
                     [[gold, *(row.get(label, 0) for label in columns)] for gold, row in confusion.items() if row])
            + "<p>The same sample of test sentences every run (fixed seed)</p>"
            + _raw_table(["#", "sentence", "raw output", "pairs"],
                         [[str(item["index"]), html.escape(item["sentence"]), html.escape(item["prediction"]),
                           _marked_pairs(item["pairs"])] for item in analysis["sample"]])
        )
    return "<h2>What the student gets wrong</h2>" + "".join(parts) if parts else ""


def teacher_samples_section(samples: Mapping[str, list[Mapping[str, Any]]]) -> str:
    """A few accepted and rejected teacher answers, the rejected ones with their reason."""
    rows = [[kind, html.escape(row["review"][:300]), html.escape(row["prompt"]),
             f"<pre>{html.escape(row['response'][:600])}</pre>", html.escape(row.get("reject_reason") or "–")]
            for kind, answers in samples.items() for row in answers]
    return ("<h2>Sample teacher answers</h2>" + _raw_table(["", "review", "prompt", "answer", "reason"], rows)
            if rows else "")


def cost_section(cost: Mapping[str, Any]) -> str:
    """Teacher tokens, answers generated vs served from the store, seconds per stage, device (tasks/tracking/cost.py)."""
    from fsa_distill.tasks.tracking.cost import cost_rows

    rows = cost_rows({key: value for key, value in cost.items() if isinstance(value, (int, float))})
    if cost.get("device"):
        rows.append(["device", str(cost["device"])])
    return "<h2>Cost of this run</h2>" + _table(["figure", "value"], rows) if rows else ""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _variety_section(variety: dict[str, dict[str, Any]]) -> str:
    """Output variety per fine-tuning run (benchmark/variety.py): a collapsed student shows here first."""
    rows = [[name, v["distinct_outputs"], f"{v['distinct_per_sentence']:.2f}", f"{100 * v['top_share']:.1f}%",
             str(v["top_output"])[:80]] for name, v in variety.items() if v]
    if not rows:
        return ""
    return ("<h2>Output variety</h2>"
            + _table(["run", "distinct outputs", "per test sentence", "most common output's share",
                      "most common output"], rows))


def build_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write `report.html`, its PNG plots and `results.json` into `out_dir`; returns the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = str(results.get("title") or "fsa-distill run report")
    sections: list[str] = []

    summary = results.get("summary") or {}
    if summary:
        sections.append("<h2>Summary</h2>" + _table(["key", "value"], [[k, _fmt(v)] for k, v in summary.items()]))

    champion = versus_champion_section(results.get("versus_champion") or {})
    if champion:
        sections.append(champion)

    aggregated = aggregate_scores(list(results.get("scores") or []))
    if aggregated:
        _plot_f1(aggregated, out_dir / "f1_by_dataset_view.png")
        rows = [[r["variant"], r["dataset"], r["view"], f"{r['mean_f1']:.4f}", f"{r['std_f1']:.4f}", r["n_seeds"]]
                for r in aggregated]
        sections.append(
            "<h2>F1 by dataset and view</h2><img src='f1_by_dataset_view.png' alt='F1 by dataset and view'>"
            + _table(["variant", "dataset", "view", "mean F1", "std", "seeds"], rows)
        )
        if _plot_distilled_vs_undistilled(aggregated, out_dir / "distilled_vs_undistilled.png"):
            sections.append("<h2>Distilled vs undistilled</h2>"
                            "<img src='distilled_vs_undistilled.png' alt='distilled vs undistilled'>")
    if variety := _variety_section(results.get("variety") or {}):
        sections.append(variety)
    if _plot_curves(results.get("curves") or {}, out_dir / "loss_curves.png"):
        sections.append("<h2>Loss curves</h2><img src='loss_curves.png' alt='loss curves'>")
    rejections = results.get("rejections") or {}
    if _plot_rejections(rejections, out_dir / "teacher_rejections.png"):
        sections.append("<h2>Teacher rejections</h2><img src='teacher_rejections.png' alt='teacher rejections'>"
                        + _table(["reason", "count"], sorted(rejections.items(), key=lambda x: -int(x[1]))))
    if _plot_deltas(results.get("deltas") or {}, out_dir / "deltas.png"):
        sections.append("<h2>Difference to the undistilled student</h2><img src='deltas.png' alt='deltas'>"
                        + _table(["arm", "mean Δ F1 × 100", "95% interval"],
                                 [[arm, f"{d['mean']:+.2f}", f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"]
                                  for arm, d in (results.get("deltas") or {}).items()]))
    sections.extend(section for section in (
        cost_section(results.get("cost") or {}),
        errors_section(results.get("errors") or {}),
        teacher_samples_section(results.get("teacher_samples") or {}),
    ) if section)
    quality = results.get("teacher_quality") or {}
    if quality:
        sections.append(
            "<h2>Teacher quality</h2>"
            + _table(["teacher", "accepted", "gold analyses", "pair P / R / F1 × 100", "target F1 × 100",
                      "top rejections"], teacher_quality_rows(quality))
            + f"<p>{html.escape(TEACHER_QUALITY_NOTE)}</p>"
        )
    if not sections:
        sections.append("<p>No scores, curves or rejections were recorded for this run.</p>")

    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )
    write_json_atomically(out_dir / "results.json", results, default=str)
    report = out_dir / "report.html"
    with atomic_file(report) as handle:
        handle.write(page)
    return report
