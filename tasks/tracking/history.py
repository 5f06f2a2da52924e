"""The history page: every flow run of one experiment on one self-contained HTML page.

F1 per dataset and view over run time with every champion change marked, teacher quality, corpus size and new
answers, stage seconds and cost per run, the registered versions with their aliases, and from each point and row
a link to the run's report and its MLflow run. Everything is read through MLflow's client, so the page works
on whichever tracking store the user configured (SQLite or PostgreSQL).

Plotly draws the charts: a well-kept library whose figures are interactive (hover for a run's figures, zoom into
a stretch of weeks, click a point to open the run) and whose `to_html` embeds its JavaScript inline, so the
written file opens from a mail or an archive with nothing else beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fsa_distill.core.errors import InputError, StoreError
from fsa_distill.core.urls import POSTGRES, SQLITE, libpq_url, parse_url, url_password
from fsa_distill.tasks.tracking.cost import COST_PREFIX, DEVICE_TAG

F1_METRIC = re.compile(r"^distilled\.(?P<dataset>[^.]+)\.(?P<view>[^.]+)\.f1_mean$")
PROMOTED = "promoted"
# a click on a point opens its run: each point carries its run's index into RUN_URLS (numbers, not strings:
# plotly copies string arrays element by element); plotly passes each figure's div id as {plot_id}
CLICK_SCRIPT = ("document.getElementById('{plot_id}').on('plotly_click', function (event) {"
                " var url = RUN_URLS[event.points[0].customdata]; if (url) { window.open(url, '_blank'); } });")


@dataclass(frozen=True)
class RunPoint:
    """One parent run of the experiment, as the page needs it."""

    run_id: str
    name: str
    started: dt.datetime
    status: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    links: Mapping[str, str] = field(default_factory=dict)  # "report" / "mlflow" → URL

    @property
    def promoted(self) -> bool:
        return self.tags.get("gate.decision") == PROMOTED


def read_runs(client: Any, experiment_id: str) -> list[RunPoint]:
    """The experiment's parent runs (flow runs, not their stage runs), oldest first. The store filters them
    (every flow run's parent carries the `profile` tag, no stage run does): a run has ~10 stage runs."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string="tags.profile LIKE '%'", max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs.extend(run for run in page if "mlflow.parentRunId" not in run.data.tags)
        token = page.token
        if not token:
            break
    return [RunPoint(run.info.run_id, run.info.run_name or run.info.run_id[:8],
                     dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC), run.info.status,
                     dict(run.data.metrics), dict(run.data.tags)) for run in runs]


def read_versions(client: Any, model_name: str) -> list[dict[str, Any]]:
    """The registered versions of `model_name`, newest first, with their aliases and gate tags."""
    from mlflow.exceptions import MlflowException

    try:  # search results carry no aliases: the registered model has them (alias → version)
        aliases = client.get_registered_model(model_name).aliases or {}
    except MlflowException:  # no run has registered a model yet
        return []
    versions = client.search_model_versions(f"name='{model_name}'")
    return sorted(({"version": int(v.version), "run_id": v.run_id,
                    "aliases": sorted(a for a, number in aliases.items() if str(number) == str(v.version)),
                    "created": dt.datetime.fromtimestamp(v.creation_timestamp / 1000, tz=dt.UTC),
                    "mean_f1": v.tags.get("mean_f1", ""), "decision": v.tags.get("gate_decision", "")}
                   for v in versions), key=lambda v: -v["version"])


def with_links(runs: Sequence[RunPoint], experiment_id: str, mlflow_url: str, report_base: str) -> list[RunPoint]:
    """Each run with the URL of its report (`<report_base><run id>/report.html`) and of its MLflow run page."""
    return [RunPoint(run.run_id, run.name, run.started, run.status, run.metrics, run.tags, {
        "report": f"{report_base}{run.run_id}/report.html",
        "mlflow": f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run.run_id}",
    }) for run in runs]


def _series(runs: Sequence[RunPoint], metric: str, scale: float = 1.0) -> tuple[Any, Any, Any]:
    """Run times, values and MLflow links of the runs that logged `metric`, as numpy arrays: plotly deep-copies
    Python lists element by element, which at 200 runs costs more than drawing the page."""
    import numpy as np

    picked = [index for index, run in enumerate(runs) if metric in run.metrics]
    return (np.array([runs[i].started.replace(tzinfo=None) for i in picked], dtype="datetime64[ms]"),
            scale * np.array([runs[i].metrics[metric] for i in picked], dtype=float), np.array(picked, dtype=int))


def f1_figure(runs: Sequence[RunPoint]) -> Any:
    """F1 × 100 per dataset × view over run time; champion changes as stars and dotted vertical lines."""
    import plotly.graph_objects as go

    keys = sorted({(m["dataset"], m["view"]) for run in runs for name in run.metrics
                   if (m := F1_METRIC.match(name))})
    figure = go.Figure()
    for dataset, view in keys:
        x, y, urls = _series(runs, f"distilled.{dataset}.{view}.f1_mean", 100)
        figure.add_scatter(x=x, y=y, customdata=urls, mode="lines+markers",
                           name=f"{dataset.replace('-', '/', 1)} {view}")
    x, y, indices = _series([run if run.promoted else RunPoint(**{**vars(run), "metrics": {}}) for run in runs],
                            "mean_f1", 100)
    promoted = [run for run in runs if run.promoted and "mean_f1" in run.metrics]
    figure.add_scatter(x=x, y=y, customdata=indices, mode="markers",
                       marker={"symbol": "star", "size": 14, "color": "gold", "line": {"width": 1}},
                       name="champion change (gate metric)")
    # one list of shapes: plotly's add_vline re-validates every shape so far on each call (seconds at 200 runs)
    figure.update_layout(shapes=[{"type": "line", "xref": "x", "yref": "paper", "x0": run.started,
                                  "x1": run.started, "y0": 0, "y1": 1, "opacity": 0.6,
                                  "line": {"dash": "dot", "color": "goldenrod"}} for run in promoted])
    figure.update_layout(title="Student F1 × 100 per dataset and view (stars: a new champion)",
                         xaxis_title="run start", yaxis_title="micro-F1 × 100", height=420)
    return figure


def lines_figure(runs: Sequence[RunPoint], metrics: Mapping[str, str], title: str, scale: float = 1.0) -> Any:
    """One line per metric (its label → MLflow name) over run time."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for label, metric in metrics.items():
        x, y, urls = _series(runs, metric, scale)
        figure.add_scatter(x=x, y=y, customdata=urls, mode="lines+markers", name=label)
    figure.update_layout(title=title, xaxis_title="run start", height=340)
    return figure


def seconds_figure(runs: Sequence[RunPoint]) -> Any:
    """Seconds per stage, stacked per run."""
    import plotly.graph_objects as go

    prefix = f"{COST_PREFIX}seconds/"
    stages = sorted({name.removeprefix(prefix) for run in runs for name in run.metrics
                     if name.startswith(prefix) and not name.endswith("/total")})
    figure = go.Figure()
    for stage in stages:
        x, y, urls = _series(runs, f"{prefix}{stage}")
        figure.add_bar(x=x, y=y, customdata=urls, name=stage)
    figure.update_layout(barmode="stack", title="Seconds per stage", xaxis_title="run start",
                         yaxis_title="seconds", height=340)
    return figure


def _number(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * value:,.{digits}f}"


def _link(url: str, text: str, css: str) -> str:
    return f"<a class='{css}' href='{html.escape(url, quote=True)}' target='_blank'>{html.escape(text)}</a>"


def runs_table(runs: Sequence[RunPoint]) -> str:
    """One row per run, newest first: quality, gate, corpus, cost, and its links."""
    headers = ["started (UTC)", "run", "status", "mean F1 × 100", "gate", "version", "reviews", "answers generated",
               "from store", "teacher tokens (prompt + completion)", "seconds", "device", "links"]
    rows = []
    for run in reversed(runs):
        m = run.metrics
        tokens = (None if f"{COST_PREFIX}teacher_completion_tokens" not in m else
                  m.get(f"{COST_PREFIX}teacher_prompt_tokens", 0) + m[f"{COST_PREFIX}teacher_completion_tokens"])
        cells = [run.started.strftime("%Y-%m-%d %H:%M"), run.name, run.status,
                 _number(m.get("mean_f1"), 2, 100), run.tags.get("gate.decision", "–"),
                 run.tags.get("registered_model", "–"), _number(m.get("reviews")),
                 _number(m.get(f"{COST_PREFIX}answers_generated")), _number(m.get(f"{COST_PREFIX}answers_from_store")),
                 _number(tokens), _number(m.get(f"{COST_PREFIX}seconds/total", m.get("flow_seconds")), 1),
                 run.tags.get(DEVICE_TAG, "–")]
        links = " · ".join([_link(run.links["report"], "report", "report"), _link(run.links["mlflow"], "MLflow run",
                                                                                   "mlflow")]) if run.links else ""
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{links}</td></tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table id='cost'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def versions_table(versions: Sequence[Mapping[str, Any]], links: Mapping[str, str]) -> str:
    """Registered versions with their aliases; each links to the run that registered it."""
    rows = []
    for v in versions:
        run = _link(links[v["run_id"]], v["run_id"][:8], "version-run") if v["run_id"] in links else v["run_id"]
        cells = [str(v["version"]), ", ".join(f"@{a}" for a in v["aliases"]) or "–", v["mean_f1"] or "–",
                 v["decision"] or "–", v["created"].strftime("%Y-%m-%d %H:%M")]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{run}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("version", "aliases", "mean F1", "gate", "created (UTC)", "run"))
    return f"<table id='versions'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


PAGE_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
              "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}")


def render_page(title: str, runs: Sequence[RunPoint], versions: Sequence[Mapping[str, Any]]) -> str:
    """The whole page; plotly's JavaScript is inlined once, with the first chart."""
    figures = [
        ("f1", f1_figure(runs)),
        ("teacher", lines_figure(runs, {"pair F1 × 100": "teacher_quality/pair_f1",
                                        "acceptance rate × 100": "teacher_quality/acceptance_rate"},
                                 "Teacher quality per run (gold-scored analyses, answers accepted)", 100)),
        ("corpus", lines_figure(runs, {"reviews collected": "reviews",
                                       "teacher answers generated (new)": f"{COST_PREFIX}answers_generated",
                                       "answers served from the store": f"{COST_PREFIX}answers_from_store"},
                                "Corpus size and new answers per run")),
        ("seconds", seconds_figure(runs)),
    ]
    charts = "".join(
        f"<div class='chart' id='chart-{name}'>" + figure.to_html(full_html=False, include_plotlyjs=index == 0,
                                                                  post_script=CLICK_SCRIPT, div_id=f"plot-{name}")
        + "</div>" for index, (name, figure) in enumerate(figures))
    links = {run.run_id: run.links["mlflow"] for run in runs if run.links}
    urls = json.dumps([run.links.get("mlflow", "") for run in runs]).replace("</", "<\\/")
    promoted = sum(run.promoted for run in runs)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style><script>const RUN_URLS = {urls};</script></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(runs)} runs, {promoted} champion changes, {len(versions)} registered versions. "
            "Click a point to open its MLflow run.</p>" + charts
            + "<h2>Runs: quality, gate and cost</h2>" + runs_table(runs)
            + "<h2>Registered versions</h2>" + versions_table(versions, links) + "</body></html>")


def check_tracking_store(tracking_uri: str) -> None:
    """The page only reads, so the store is checked before MLflow opens it: MLflow creates a missing SQLite file
    (and its folders) with empty tables, and retries a store it cannot open for about 100 s before a traceback.
    A missing SQLite file: InputError (no run yet); a folder, a non-database, a PostgreSQL server that is down
    or refuses the login: StoreError, its password never quoted."""
    parts = parse_url(tracking_uri)
    if parts is not None and parts.dialect == POSTGRES:
        _check_postgres(tracking_uri)
    if parts is None or parts.dialect != SQLITE or parts.path in ("", "/", "/:memory:"):
        return  # a server, a folder (MLflow's file store), or an in-memory store
    path = Path(unquote(parts.path[1:]))  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
    if not path.exists():
        raise InputError(path, None, "no tracking store here: no run has been tracked with this work dir or "
                                     "tracking.mlflow_tracking_uri yet")
    if path.is_dir():
        raise StoreError(f"tracking store {path}", "is a folder, not an SQLite file")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"tracking store {path}", f"cannot be read as an SQLite database ({error})") from None


def _check_postgres(tracking_uri: str) -> None:
    """One connection attempt (10 s at most) to a PostgreSQL tracking store."""
    import psycopg

    from fsa_distill.core.redact import REDACTED, redact_text, redact_url

    try:
        psycopg.connect(libpq_url(tracking_uri), connect_timeout=10).close()
    except psycopg.Error as error:
        problem = redact_text(" ".join(str(error).split()))
        password = url_password(tracking_uri) or ""
        for secret in sorted({password, unquote(password)} - {""}, key=len, reverse=True):
            problem = problem.replace(secret, REDACTED)  # libpq may quote a piece of the conninfo
        raise StoreError(f"tracking store {redact_url(tracking_uri)}", problem) from None


def history_page(tracking_uri: str, experiment_name: str, model_name: str, mlflow_url: str,
                 report_base: str) -> str:
    """Read the experiment's runs and the model's versions from the tracking store and render the page."""
    from mlflow.tracking import MlflowClient

    from fsa_distill.core.redact import redact_url

    check_tracking_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise InputError(redact_url(tracking_uri), f"experiment {experiment_name!r}", "no such experiment")
    runs = with_links(read_runs(client, experiment.experiment_id), experiment.experiment_id, mlflow_url, report_base)
    return render_page(f"fsa-distill history — {experiment_name}", runs, read_versions(client, model_name))
