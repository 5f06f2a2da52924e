"""`fsa-distill history`: every run of the configured experiment on one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import user_errors
from fsa_distill.core.config import PROFILES, resolve_config

DASHBOARD_MLFLOW_URL = "http://127.0.0.1:5050"  # deployments/dashboard.sh's MLflow UI


def history(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one file, charts included).")],
    profile: Annotated[str, typer.Option(help=f"One of {', '.join(PROFILES)}.")] = "demo",
    config: Annotated[Path | None, typer.Option("--config", help="YAML file merged over the profile.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override one key, e.g. --set tracking.experiment_name=x.")
    ] = None,
    mlflow_url: Annotated[str, typer.Option(help="The MLflow UI the run links open.")] = DASHBOARD_MLFLOW_URL,
    report_base: Annotated[str | None, typer.Option(help="URL prefix of the runs' reports (<prefix><run id>/"
                                                         "report.html); default: <work_dir>/reports/ as a file URL.")
                           ] = None,
) -> None:
    """Write the history page of the configured tracking store's experiment (SQLite or PostgreSQL)."""
    from fsa_distill.core.files import atomic_file
    from fsa_distill.core.paths import check_input_file, check_output_file
    from fsa_distill.core.redact import redact_url
    from fsa_distill.tasks.history import history_page

    with user_errors():
        if config is not None:
            check_input_file(config, "config file")
        check_output_file(out, "--out")
        resolved = resolve_config(profile, config, overrides or [])
        base = report_base if report_base is not None else (resolved.work_dir / "reports").resolve().as_uri() + "/"
        page = history_page(resolved.mlflow_uri, resolved.tracking.experiment_name, resolved.registry.model_name,
                            mlflow_url, base)
        with atomic_file(out) as handle:
            handle.write(page)
    typer.echo(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB) from {redact_url(resolved.mlflow_uri)}")
