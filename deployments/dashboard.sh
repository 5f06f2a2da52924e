#!/usr/bin/env bash
# The dashboard: the MLflow UI (runs, metrics, report artifacts, registered models), the Prefect UI (flow runs,
# schedules, work pools) and the history page (every run of the experiment: fsa-distill history) on 127.0.0.1.
#
#   deployments/dashboard.sh start    production servers up (servers.sh)? print their URLs; else start the
#                                     MLflow UI on <work_dir>/mlflow.db and a local Prefect server (its UI)
#   deployments/dashboard.sh stop
#
# Settings: FSA_WORK_DIR (work), FSA_DASHBOARD_MLFLOW_PORT (5050), FSA_DASHBOARD_PREFECT_PORT (4250),
# FSA_DASHBOARD_HISTORY_PORT (5060), VENV (.venv),
# plus servers.sh's FSA_PREFECT_PORT / FSA_MLFLOW_PORT to find production servers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
WORK_DIR="${FSA_WORK_DIR:-$ROOT/work}"
case "$WORK_DIR" in /*) ;; *) WORK_DIR="$ROOT/$WORK_DIR" ;; esac
RUN_DIR="$WORK_DIR/servers"
HOST=127.0.0.1
MLFLOW_PORT="${FSA_DASHBOARD_MLFLOW_PORT:-5050}"
PREFECT_PORT="${FSA_DASHBOARD_PREFECT_PORT:-4250}"
HISTORY_PORT="${FSA_DASHBOARD_HISTORY_PORT:-5060}"
TIMEOUT="${FSA_SERVER_START_TIMEOUT:-180}"

log() { echo "dashboard: $*" >&2; }
healthy() { curl -fsS --max-time 5 "$1" >/dev/null 2>&1; }
is_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_healthy() {  # name, url, pidfile, logfile
  local waited=0
  until healthy "$2"; do
    is_running "$3" || { log "$1 exited; last lines of $4:"; tail -n 30 "$4" >&2; exit 1; }
    [ "$waited" -lt "$TIMEOUT" ] || { log "$1 not up after ${TIMEOUT}s; see $4"; exit 1; }
    sleep 1; waited=$((waited + 1))
  done
}

start() {
  mkdir -p "$RUN_DIR"
  if "$ROOT/deployments/servers.sh" status >/dev/null 2>&1; then
    eval "$("$ROOT/deployments/servers.sh" env)"
    log "production servers are up:"
    launch_history "$MLFLOW_TRACKING_URI"
    wait_healthy history "http://$HOST:$HISTORY_PORT/" "$RUN_DIR/dashboard-history.pid" "$RUN_DIR/dashboard-history.log"
    echo "MLflow UI:  $MLFLOW_TRACKING_URI"
    echo "Prefect UI: ${PREFECT_API_URL%/api}"
    echo "History:    http://$HOST:$HISTORY_PORT"
    return
  fi
  # The three servers start together (none needs another to be up), then each is waited for: each spends its
  # first seconds importing and opening its database, and one after the other those waits add up.
  local pidfile="$RUN_DIR/dashboard-mlflow.pid" logfile="$RUN_DIR/dashboard-mlflow.log"
  if ! is_running "$pidfile"; then
    mkdir -p "$WORK_DIR"
    # `mlflow server` on the flow's own SQLite store; artifacts are the local files the runs logged.
    setsid nohup "$VENV/bin/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
      --backend-store-uri "sqlite:///$WORK_DIR/mlflow.db" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  pidfile="$RUN_DIR/dashboard-prefect.pid"; logfile="$RUN_DIR/dashboard-prefect.log"
  if ! is_running "$pidfile"; then
    # Same PREFECT_HOME (hence the same SQLite database) as the flows' ephemeral server: their history shows.
    PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL="http://$HOST:$PREFECT_PORT/api" \
      setsid nohup "$VENV/bin/prefect" server start --host "$HOST" --port "$PREFECT_PORT" \
      >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  launch_history "http://$HOST:$MLFLOW_PORT"
  wait_healthy mlflow "http://$HOST:$MLFLOW_PORT/health" "$RUN_DIR/dashboard-mlflow.pid" "$RUN_DIR/dashboard-mlflow.log"
  wait_healthy prefect "http://$HOST:$PREFECT_PORT/api/health" "$RUN_DIR/dashboard-prefect.pid" \
    "$RUN_DIR/dashboard-prefect.log"
  wait_healthy history "http://$HOST:$HISTORY_PORT/" "$RUN_DIR/dashboard-history.pid" "$RUN_DIR/dashboard-history.log"
  echo "MLflow UI:  http://$HOST:$MLFLOW_PORT"
  echo "Prefect UI: http://$HOST:$PREFECT_PORT"
  echo "History:    http://$HOST:$HISTORY_PORT"
}

launch_history() {  # the history page (fsa-distill history --serve), its run links pointing at the MLflow UI $1
  local pidfile="$RUN_DIR/dashboard-history.pid" logfile="$RUN_DIR/dashboard-history.log"
  if ! is_running "$pidfile"; then
    setsid nohup "$VENV/bin/fsa-distill" history --serve "$HISTORY_PORT" --mlflow-url "$1" \
      --set "work_dir=\"$WORK_DIR\"" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
}

stop() {
  for name in dashboard-mlflow dashboard-prefect dashboard-history; do
    local pidfile="$RUN_DIR/$name.pid"
    if is_running "$pidfile"; then
      kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || kill -TERM "$(cat "$pidfile")" || true
      log "$name stopped"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
