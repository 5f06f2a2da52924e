"""`fsa-distill history`: every run of the configured experiment on one self-contained HTML page."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import user_errors
from fsa_distill.core.config import PROFILES, ConfigError, resolve_config

DASHBOARD_MLFLOW_URL = "http://127.0.0.1:5050"  # deployments/dashboard.sh's MLflow UI


def _page_or_reason(render: Callable[[], str]) -> str:
    """The served page; before the first run there is no experiment yet, and the page says so, as it says that
    the store went away (a server restarting) rather than dropping the visit with a traceback."""
    import html

    from fsa_distill.core.errors import InputError, StoreError

    try:
        return render()
    except InputError as error:
        return f"<!doctype html><title>fsa-distill history</title><p>No runs to show yet: {html.escape(str(error))}</p>"
    except StoreError as error:  # its message is already redacted
        return (f"<!doctype html><title>fsa-distill history</title><p>The tracking store cannot be read: "
                f"{html.escape(str(error))}</p>")


def serve_history(host: str, port: int, render: Callable[[], str], reports_dir: Path) -> None:
    """Serve the page at `/` (rendered afresh on every visit, so a run that just finished shows) and the runs'
    reports under `/reports/`. The standard library's HTTP server: one local page needs no web framework."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib names the method
            if self.path.split("?")[0] in ("/", "/index.html"):
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path.startswith("/reports/"):
                self.path = self.path.removeprefix("/reports")
                super().do_GET()
            else:
                self.send_error(404)

    from fsa_distill.core.errors import InputError

    try:
        server = ThreadingHTTPServer((host, port), functools.partial(Handler, directory=str(reports_dir)))
    except OSError as error:  # the port is taken, or below 1024 for a normal user
        raise InputError(None, "--serve", f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    typer.echo(f"history page: http://{host}:{port}/")
    server.serve_forever()


def history(
    out: Annotated[Path | None, typer.Option("--out", help="The HTML file to write (one file, charts included).")
                   ] = None,
    serve: Annotated[int | None, typer.Option(min=1, max=65535, help="Instead of --out: serve the page on 127.0.0.1:PORT, fresh on "
                                                   "every visit, with the reports (make dashboard does).")] = None,
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
    from fsa_distill.core.errors import InputError
    from fsa_distill.core.files import atomic_file
    from fsa_distill.core.paths import check_input_file, check_output_file
    from fsa_distill.core.redact import redact_url
    from fsa_distill.tasks.tracking.history import check_tracking_store, history_page

    with user_errors():
        if (out is None) == (serve is None):
            raise ConfigError("give either --out FILE.html or --serve PORT")
        if config is not None:
            check_input_file(config, "config file")
        if out is not None:
            check_output_file(out, "--out")
        resolved = resolve_config(profile, config, overrides or [])
        reports = resolved.work_dir / "reports"
        base = report_base or ("/reports/" if serve is not None else reports.resolve().as_uri() + "/")
        render = functools.partial(history_page, resolved.mlflow_uri, resolved.tracking.experiment_name,
                                   resolved.registry.model_name, mlflow_url, base)
        if out is None:
            with contextlib.suppress(InputError):  # no store yet: the page says so until the first run
                check_tracking_store(resolved.mlflow_uri)  # a folder or a non-database: one error line now
            reports.mkdir(parents=True, exist_ok=True)
            serve_history("127.0.0.1", serve, functools.partial(_page_or_reason, render), reports)
            return
        page = render()
        with atomic_file(out) as handle:
            handle.write(page)
    typer.echo(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB) from {redact_url(resolved.mlflow_uri)}")
