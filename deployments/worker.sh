#!/usr/bin/env bash
# A process worker on fsa-distill-pool: polls the Prefect server and runs scheduled flow runs as subprocesses of
# this machine, with this repository's .venv. Runs in the foreground (use systemd, tmux or nohup to keep it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
eval "$("$ROOT/deployments/servers.sh" env | sed 's/^export \([A-Z_]*\)=\(.*\)$/export \1="${\1:-\2}"/')"
export FSA_WORK_DIR="${FSA_WORK_DIR:-$ROOT/work}"
# Flow runs send a heartbeat every 30 s; deploy.sh's automation marks a run Crashed after 3 missed ones.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
cd "$ROOT"
exec "$VENV/bin/prefect" worker start --pool "${FSA_WORK_POOL:-fsa-distill-pool}" --type process "$@"
