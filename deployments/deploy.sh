#!/usr/bin/env bash
# Register the work pool and every deployment of deployments/prefect.yaml on a running Prefect server.
#   make deploy                       # against the production servers (deployments/servers.sh)
#   PREFECT_API_URL=http://host:4200/api FSA_PROFILE=study FSA_INBOX=s3://bucket/inbox make deploy
#   FSA_NOTIFY_WEBHOOK=https://hooks.example.com/... make deploy   # also: messages (docs/watching-runs.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
POOL="${FSA_WORK_POOL:-fsa-distill-pool}"

# Default to the production servers of servers.sh; explicit PREFECT_API_URL / MLFLOW_TRACKING_URI win.
eval "$("$ROOT/deployments/servers.sh" env | sed 's/^export \([A-Z_]*\)=\(.*\)$/export \1="${\1:-\2}"/')"
export FSA_PROFILE="${FSA_PROFILE:-demo}"
export FSA_INBOX="${FSA_INBOX:-$ROOT/work/inbox}"
export FSA_WORK_DIR="${FSA_WORK_DIR:-$ROOT/work}"
case "$FSA_INBOX" in *://*) ;; *) mkdir -p "$FSA_INBOX" ;; esac

if ! curl -fsS --max-time 5 "$PREFECT_API_URL/health" >/dev/null; then
  echo "deploy: no Prefect server at $PREFECT_API_URL (make servers, or set PREFECT_API_URL)" >&2; exit 1
fi
cd "$ROOT"
if ! "$VENV/bin/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
  "$VENV/bin/prefect" work-pool create "$POOL" --type process
fi
"$VENV/bin/prefect" --no-prompt deploy --all --prefect-file deployments/prefect.yaml
# Zombie runs (heartbeats stopped: killed process, lost machine) become Crashed instead of Running forever.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
"$VENV/bin/python" deployments/zombie_automation.py
# Messages (a scheduled or inbox run failed or crashed; a new champion) to the webhook in FSA_NOTIFY_WEBHOOK.
if [ -n "${FSA_NOTIFY_WEBHOOK:-}" ]; then
  "$VENV/bin/python" deployments/message_automations.py
fi
"$VENV/bin/prefect" deployment ls
