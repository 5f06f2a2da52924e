"""`fsa-distill run`: the whole distillation flow for a profile, with the config validated before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fsa_distill.cli.console import print_json, user_errors
from fsa_distill.cli.options import Profile
from fsa_distill.core.config import resolve_config


def teacher_quality_lines(quality: dict[str, Any]) -> list[str]:
    """The teacher-quality line(s) under the results table, and one sentence on what they mean."""
    from fsa_distill.tasks.tracking.report import TEACHER_QUALITY_NOTE, teacher_quality_rows

    lines = [f"teacher quality ({teacher}, wrote the pretraining corpus): accepted {accepted}; "
             f"{gold} gold-labelled analyses scored, pair P/R/F1 × 100 {pairs}, target F1 {targets}; "
             f"rejected: {reasons}"
             for teacher, accepted, gold, pairs, targets, reasons in teacher_quality_rows(quality)]
    return [*lines, f"  ({TEACHER_QUALITY_NOTE})"] if lines else []


def variety_lines(summary: dict[str, Any]) -> list[str]:
    """Which student the run started from, how varied its test outputs are, and a warning for a collapsed one."""
    from fsa_distill.benchmark.variety import collapse_warning

    lines = [f"student: {summary['student']}"] if summary.get("student") else []
    for name, variety in summary.get("variety", {}).items():
        if variety:
            lines.append(f"output variety {name}: {variety['distinct_outputs']} distinct outputs "
                         f"({variety['distinct_per_sentence']:.2f} per test sentence), most common output on "
                         f"{100 * variety['top_share']:.1f}% of them")
            if warning := collapse_warning(name, variety):
                lines.append(warning)
    return lines


def champion_lines(comparison: dict[str, Any]) -> list[str]:
    """This run vs the champion it was gated against, one line per dataset × view (F1 × 100)."""
    from fsa_distill.tasks.tracking.champion import comparison_lines

    if not comparison:
        return []
    if comparison.get("champion_run_id") is None:
        return ["vs champion: no champion before this run"]
    lines = [f"vs champion v{comparison.get('champion_version')} (run {comparison['champion_run_id']}), F1 × 100:"]
    for dataset, view, ours, theirs, delta, interval in comparison_lines(comparison):
        lines.append(f"  {dataset} {view}: not comparable ({interval})" if delta == "not comparable"
                     else f"  {dataset} {view}: {ours} vs {theirs}, Δ {delta}, 95% interval {interval}")
    return lines


def _print_summary(summary: dict[str, Any], views: list[str]) -> None:
    from fsa_distill.tasks.tracking.tables import format_table

    console = Console()
    table = Table(title=f"F1 × 100 (mean ± std over seeds) — gate metric mean_f1 = {100 * summary['mean_f1']:.2f}")
    for column in ("model", "dataset", *views):
        table.add_column(column)
    for row in format_table(summary["results"], views):
        table.add_row(*row)
    for dataset, scores in summary.get("teacher", {}).items():
        extraction = scores.get("extraction", {})
        cells = [f"{100 * extraction[view]['f1']:.2f}" if view in extraction else "–" for view in views]
        table.add_row("teacher (few-shot)", dataset, *cells)
    console.print(table)
    for dataset, scores in summary.get("zero_shot", {}).items():
        console.print(f"zero-shot student on {dataset}: accuracy {scores.get('accuracy', float('nan')):.3f}, "
                      f"macro-F1 {scores.get('macro_f1', float('nan')):.3f}")
    for dataset, scores in summary.get("teacher", {}).items():
        if "zero_shot" in scores:
            console.print(f"zero-shot teacher on {dataset}: accuracy {scores['zero_shot'].get('accuracy', float('nan')):.3f}, "
                          f"macro-F1 {scores['zero_shot'].get('macro_f1', float('nan')):.3f}")
    for line in teacher_quality_lines(summary.get("teacher_quality", {})):
        console.print(line)
    for line in variety_lines(summary):
        console.print(line, highlight=False)
    for line in champion_lines(summary.get("versus_champion") or {}):
        console.print(line)
    cost = summary.get("cost") or {}
    if cost:
        console.print(f"cost: teacher tokens {cost.get('cost/teacher_prompt_tokens', 0):,.0f} prompt + "
                      f"{cost.get('cost/teacher_completion_tokens', 0):,.0f} completion; answers "
                      f"{cost.get('cost/answers_generated', 0):,.0f} generated, "
                      f"{cost.get('cost/answers_from_store', 0):,.0f} from the store; on {summary.get('device')}")
    stages = ", ".join(f"{name}: {outcome}" for name, outcome in summary["stages"].items())
    console.print(f"stages — {stages}")
    champion = "now champion" if summary["champion"] else "champion kept (gate not passed)"
    console.print(
        f"registered {summary['model_name']} v{summary['model_version']} @challenger, {champion}\n"
        f"MLflow run {summary['mlflow_run_id']} (experiment {summary['experiment']}); "
        f"Prefect flow run {summary['flow_run_id']}\n"
        f"look at it: mlflow ui --backend-store-uri {summary['tracking_uri']}   (or `make dashboard`)\n"
        f"took {summary['seconds']:.0f} s"
    )


def run(
    profile: Profile = "demo",
    config: Annotated[Path | None, typer.Option("--config", help="YAML file merged over the profile.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override one key, e.g. --set finetune.epochs=3.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then "
                                                       "./data/fsa_datasets, ../shared/fsa_datasets).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Engine logs (vLLM, Prefect, Ray) on the terminal too; "
                                                           "otherwise they go to <work_dir>/logs/engines.log.")] = False,
) -> None:
    """Run the `distill` flow (generate → corpus → pretrain → finetune → evaluate → register)."""
    from fsa_distill.cli.inputs import check_config_paths
    from fsa_distill.cli.lifecycle import flow_command
    from fsa_distill.core.paths import check_input_file

    # JSON is YAML: a quoted string survives any character a path may hold
    overrides = [*(overrides or []), *([f"data.data_dir={json.dumps(str(data_dir))}"] if data_dir else [])]
    with user_errors():
        if config is not None:
            check_input_file(config, "config file")
        resolved = resolve_config(profile, config, overrides)
        check_config_paths(resolved)  # before the flow takes locks or creates the work dir
        with flow_command(resolved.work_dir, resolved.tracking.prefect_api_url, verbose):
            from fsa_distill.flows.distill import distill

            summary = distill(config=resolved)  # resolved once, here: the flow uses it as it is
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary, resolved.evaluate.views)
