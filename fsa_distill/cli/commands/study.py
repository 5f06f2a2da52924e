"""`fsa-distill study`: the controlled distillation study of issue #13 (a benchmark: hours, never run in CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fsa_distill.cli.console import print_json, user_errors


def _print_results(results: dict[str, Any]) -> None:
    console = Console()
    table = Table(title="Study: F1 × 100 on the normal view (mean ± std over seeds); Δ = paired difference to A")
    for column in ("arm", *results["datasets"], "mean", "Δ vs A [95% CI]", "zero-shot acc"):
        table.add_column(column)
    for arm, arm_results in results["arms"].items():
        cells = [f"{arm_results['f1'][d]['normal']['mean']:.1f} ± {arm_results['f1'][d]['normal']['std']:.1f}"
                 for d in results["datasets"]]
        delta = results["delta_vs_A"].get(arm)
        delta_cell = f"{delta['mean']:+.1f} [{delta['ci95'][0]:+.1f}, {delta['ci95'][1]:+.1f}]" if delta else "–"
        zero_shot = [z["accuracy"] for z in arm_results["zero_shot"].values()]
        table.add_row(arm_results["label"], *cells, f"{arm_results['f1_normal_mean']:.1f}", delta_cell,
                      f"{sum(zero_shot) / len(zero_shot):.3f}" if zero_shot else "–")
    console.print(table)
    for goal in results["goals"]:
        console.print(f"{'MET   ' if goal['met'] else 'MISSED'} {goal['goal']}: {goal['value']:+.2f} "
                      f"[{goal['ci95'][0]:+.2f}, {goal['ci95'][1]:+.2f}] ({goal['detail']})")
    console.print(f"results: {results.get('results_path')}   report: {results.get('report_path')}")


def study(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file merged over the study profile.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override one key, e.g. --set work_dir=/data/study.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON line.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's tables (markdown).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Engine logs (vLLM, Prefect) on the terminal too; "
                                                           "otherwise they go to <work_dir>/logs/engines.log.")] = False,
) -> None:
    """Run every arm of the study (A none, B denoising, C SmolLM2, D imported answers, D′ SmolLM2 on D's
    reviews); resumable: a rerun continues from the stage caches. Writes `study.results_path`."""
    with user_errors():
        from fsa_distill.cli.inputs import check_config_paths
        from fsa_distill.cli.lifecycle import flow_command
        from fsa_distill.core.config import resolve_config
        from fsa_distill.core.paths import check_input_file

        if config is not None:
            check_input_file(config, "config file")
        resolved = resolve_config("study", config, overrides or [])
        check_config_paths(resolved)  # before any stage creates the work dir
        with flow_command(resolved.work_dir, resolved.tracking.prefect_api_url, verbose):
            from fsa_distill.flows.study import study as study_flow

            results = study_flow(config=resolved)
    if as_json:
        print_json(results)
    elif markdown:
        from fsa_distill.tasks.study.results import markdown_tables

        print(markdown_tables(results))
    else:
        _print_results(results)
