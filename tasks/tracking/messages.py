"""Messages when it matters: a scheduled or inbox run that fails or crashes, and a champion change, each send
one message to the webhook named by FSA_NOTIFY_WEBHOOK (`make deploy` sets them up when the variable is set).

Both are Prefect automations evaluated by the Prefect server, not a sending loop of our own:
- run failed or crashed: a reactive trigger on `prefect.flow-run.Failed` / `prefect.flow-run.Crashed` of runs
  of deployments tagged `scheduled` or `inbox` (deployments/prefect.yaml). The server evaluates it, so it also
  sees crashes the dying process cannot report: a run its worker reports Crashed, or one the zombie automation
  marks Crashed after its heartbeats stop. A flow `on_failure` / `on_crashed` hook runs inside the process
  that is failing, and not at all after a SIGKILL, an OOM kill or a lost machine.
- new champion: the gate (tasks/tracking/register.py) emits `fsa-distill.champion.changed` when @champion moves to
  another version, with both F1s and the run ids; the automation turns the event into the message.
Both actions are `CallWebhook` on one `Webhook` block. Its URL is a SecretStr (the API and the UI show stars),
and the action records a non-2xx answer rather than raising, so the URL never lands in an error message, a
server log or a retry (a CustomWebhookNotificationBlock keeps its URL as plain text, and its httpx errors
print the URL and are retried by the server). The payload is a JSON template: fields for programs, and `text`
for Slack- or Mattermost-style incoming webhooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsa_distill.core.errors import InputError
from fsa_distill.core.redact import redact_webhook
from fsa_distill.core.urls import host_port_problem, parse_url

WEBHOOK_ENV = "FSA_NOTIFY_WEBHOOK"
BLOCK_NAME = "fsa-distill-messages"
RUN_FAILED = "fsa-distill: message on failed or crashed runs"
NEW_CHAMPION = "fsa-distill: message on a new champion"
CHAMPION_EVENT = "fsa-distill.champion.changed"
WATCHED_TAGS = ("scheduled", "inbox")  # the tags of the weekly and inbox-poll deployments
DASHBOARD_MLFLOW_URL = "http://127.0.0.1:5050"  # deployments/dashboard.sh's MLflow UI


def webhook_from_env(environ: Mapping[str, str]) -> str | None:
    """The webhook URL in FSA_NOTIFY_WEBHOOK (None when unset: messages off), or an InputError naming the
    variable, with the URL redacted."""
    url = environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return None
    parts = parse_url(url)
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.host:
        raise InputError(None, WEBHOOK_ENV, f"not an http(s) URL ({redact_webhook(url)})")
    # checked here, not at the first message: the server would record a failed call and nobody would see it
    if any(char.isspace() for char in url):
        raise InputError(None, WEBHOOK_ENV, f"the URL contains a space ({redact_webhook(url)})")
    if (problem := host_port_problem(parts.host, required=True)) is not None:
        raise InputError(None, WEBHOOK_ENV, f"{problem} ({redact_webhook(url)})")
    return url


def mlflow_ui_url(tracking_uri: str | None) -> str:
    """Where message links open MLflow: a tracking server serves its UI at its own URL (without its
    credentials and query); a file or SQLite store has none, so the dashboard's MLflow UI."""
    parts = parse_url(tracking_uri or "")
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        return DASHBOARD_MLFLOW_URL
    return f"{parts.scheme}://{parts.host}{parts.path}".rstrip("/")


def run_failed_payload(mlflow_url: str) -> str:
    """The message for a failed or crashed flow run: deployment, run, state, reason, links (Jinja, rendered by
    the Prefect server with the run's objects; `tojson` quotes every value)."""
    runs = f"{mlflow_url}/#/runs/"
    return """{
  "kind": "run-failed",
  "text": {{ ("fsa-distill: " ~ flow.name ~ "/" ~ deployment.name ~ " run " ~ flow_run.name ~ " "
              ~ event.payload.validated_state.name ~ ": " ~ (event.payload.validated_state.message or "")
              ~ " " ~ ((flow_run|ui_url) or ""))|tojson }},
  "deployment": {{ (flow.name ~ "/" ~ deployment.name)|tojson }},
  "flow_run": {{ flow_run.name|tojson }},
  "flow_run_id": {{ (flow_run.id|string)|tojson }},
  "state": {{ event.payload.validated_state.name|tojson }},
  "reason": {{ event.payload.validated_state.message|tojson }},
  "links": {"prefect": {{ (flow_run|ui_url)|tojson }},
            "mlflow": [{% for tag in flow_run.tags if tag.startswith("mlflow:") -%}
                         {{ ("RUNS" ~ tag[7:])|tojson }}{% if not loop.last %}, {% endif %}
                       {%- endfor %}]}
}""".replace("RUNS", runs)


def new_champion_payload(mlflow_url: str) -> str:
    """The message for a champion change: model, both versions and F1s, the run that made it, links."""
    return """{
  "kind": "new-champion",
  "text": {{ ("fsa-distill: new champion " ~ event.payload.model ~ " v" ~ event.payload.version
              ~ " (mean F1 " ~ event.payload.mean_f1 ~ "), was "
              ~ (("v" ~ event.payload.previous_version ~ " (mean F1 " ~ event.payload.previous_mean_f1 ~ ")")
                 if event.payload.previous_version else "no champion")
              ~ "; run " ~ (flow_run.name if flow_run else "?")
              ~ " " ~ (((flow_run|ui_url) or "") if flow_run else ""))|tojson }},
  "deployment": {% if deployment %}{{ (flow.name ~ "/" ~ deployment.name)|tojson }}{% else %}null{% endif %},
  "flow_run": {% if flow_run %}{{ flow_run.name|tojson }}{% else %}null{% endif %},
  "flow_run_id": {% if flow_run %}{{ (flow_run.id|string)|tojson }}{% else %}null{% endif %},
  "model": {{ event.payload.model|tojson }},
  "version": {{ event.payload.version|tojson }},
  "mean_f1": {{ event.payload.mean_f1|tojson }},
  "previous_version": {{ event.payload.previous_version|tojson }},
  "previous_mean_f1": {{ event.payload.previous_mean_f1|tojson }},
  "mlflow_run_id": {{ event.payload.mlflow_run_id|tojson }},
  "links": {"prefect": {% if flow_run %}{{ (flow_run|ui_url)|tojson }}{% else %}null{% endif %},
            "mlflow_run": {{ ("MLFLOW/#/experiments/" ~ event.payload.experiment_id ~ "/runs/"
                              ~ event.payload.mlflow_run_id)|tojson }},
            "model_version": {{ ("MLFLOW/#/models/" ~ event.payload.model ~ "/versions/"
                                 ~ event.payload.version)|tojson }}}
}""".replace("MLFLOW", mlflow_url)


def automations(block_id: Any, mlflow_url: str) -> list[Any]:
    """The two automations, both calling the webhook block `block_id`."""
    from prefect.automations import Automation
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    failed = EventTrigger(
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        # a run of a watched deployment: the subflows of an inbox run have no deployment (no second message)
        match_related=[{"prefect.resource.role": "tag",
                        "prefect.resource.id": [f"prefect.tag.{tag}" for tag in WATCHED_TAGS]},
                       {"prefect.resource.role": "deployment"}],
        posture=Posture.Reactive, threshold=1)
    champion = EventTrigger(expect={CHAMPION_EVENT}, match={"prefect.resource.id": "fsa-distill.model.*"},
                            posture=Posture.Reactive, threshold=1)
    return [
        Automation(name=RUN_FAILED, trigger=failed,
                   description="A scheduled or inbox run failed or crashed: one webhook message.",
                   actions=[CallWebhook(block_document_id=block_id, payload=run_failed_payload(mlflow_url))]),
        Automation(name=NEW_CHAMPION, trigger=champion,
                   description="@champion moved to another version: one webhook message.",
                   actions=[CallWebhook(block_document_id=block_id,
                                        payload=new_champion_payload(mlflow_url))]),
    ]


def set_up_messages(webhook_url: str, mlflow_url: str) -> list[str]:
    """Save the webhook block and (re)create both automations on the Prefect server of PREFECT_API_URL;
    returns the automations' names. Re-running replaces them (the URL or the MLflow URL may have changed)."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook

    block_id = Webhook(url=webhook_url, headers={"Content-Type": "application/json"}).save(BLOCK_NAME,
                                                                                          overwrite=True)
    created = []
    for automation in automations(block_id, mlflow_url):
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            pass  # not there yet
        created.append(automation.create().name)
    return created


def announce_champion(model_name: str, version: str, mean_f1: float, previous_version: str | None,
                      previous_f1: float | None, mlflow_run_id: str, experiment_id: str) -> None:
    """Emit the champion-change event from the running flow (its flow run, deployment and tags ride along as
    related resources). Outside a flow run there is nothing to link and emitting would start a temporary
    Prefect server, so nothing is sent."""
    from prefect.context import FlowRunContext
    from prefect.events import emit_event

    if FlowRunContext.get() is None:
        return
    payload = {"model": model_name, "version": version, "mean_f1": round(mean_f1, 6),
               "previous_version": previous_version,
               "previous_mean_f1": None if previous_f1 is None else round(previous_f1, 6),
               "mlflow_run_id": mlflow_run_id, "experiment_id": experiment_id}
    emit_event(CHAMPION_EVENT, resource={"prefect.resource.id": f"fsa-distill.model.{model_name}",
                                         "prefect.resource.name": model_name}, payload=payload)
