"""Turn messages on: save the webhook of FSA_NOTIFY_WEBHOOK as a Prefect Webhook block and (re)create the two
automations of tasks/tracking/messages.py (a scheduled or inbox run failed or crashed; a new champion) on the
Prefect server of PREFECT_API_URL. Called by deploy.sh when FSA_NOTIFY_WEBHOOK is set; prints the webhook
redacted. Message links open the MLflow UI at MLFLOW_TRACKING_URI when it is a tracking server, else the
dashboard's.
"""

from __future__ import annotations

import os
import sys

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from fsa_distill.core.errors import InputError
from fsa_distill.core.redact import redact_text, redact_url, redact_webhook
from fsa_distill.tasks.tracking.messages import WEBHOOK_ENV, mlflow_ui_url, set_up_messages, webhook_from_env


def main() -> None:
    try:
        webhook = webhook_from_env(os.environ)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if webhook is None:
        print(f"messages: {WEBHOOK_ENV} is not set; no message automations", file=sys.stderr)
        return
    try:
        names = set_up_messages(webhook, mlflow_ui_url(os.environ.get("MLFLOW_TRACKING_URI")))
    except (httpx.HTTPError, PrefectHTTPStatusError) as error:  # no server there, or it refused the call
        server = redact_url(os.environ.get("PREFECT_API_URL") or "the ephemeral Prefect server")
        print(f"error: {server}: cannot set up the message automations "
              f"({redact_text(str(error).splitlines()[0] if str(error) else type(error).__name__)})", file=sys.stderr)
        sys.exit(2)
    print(f"messages to {redact_webhook(webhook)}: " + "; ".join(repr(name) for name in names))


if __name__ == "__main__":
    main()
