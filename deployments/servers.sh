#!/usr/bin/env bash
# Production mode: a Prefect server and an MLflow tracking server (artifacts served through it), both on
# PostgreSQL, bound to 127.0.0.1, with pid files and logs under work/servers/.
#
#   deployments/servers.sh start [prefect|mlflow]   create the databases if missing, start, wait until healthy
#   deployments/servers.sh stop [prefect|mlflow]
#   deployments/servers.sh status                   exit 0 only when both answer their health endpoints
#   eval "$(deployments/servers.sh env)"            point this shell's flows and CLIs at the servers
#
# Settings (environment): FSA_SERVERS_DIR (work/servers), FSA_PREFECT_PORT (4200), FSA_MLFLOW_PORT (5000),
# FSA_PG_HOST (127.0.0.1), FSA_PG_PORT (5432), FSA_PG_USER (postgres), FSA_PG_PASSWORD (empty: trust auth),
# FSA_PREFECT_DB (fsa_prefect), FSA_MLFLOW_DB (fsa_mlflow), FSA_MLFLOW_ARTIFACTS (<servers dir>/mlflow-artifacts),
# FSA_SERVER_START_TIMEOUT (180 seconds), VENV (.venv).
#
# The database password never appears on a command line (where `ps` shows it) nor in a URL: with
# FSA_PG_PASSWORD set, it is written to <servers dir>/pgpass (mode 0600) and every client (psql, MLflow's
# psycopg2, Prefect's asyncpg) finds it through PGPASSFILE. Without it, an existing PGPASSFILE / ~/.pgpass or
# trust authentication is used as is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
SERVERS_DIR="${FSA_SERVERS_DIR:-$ROOT/work/servers}"
HOST=127.0.0.1
PREFECT_PORT="${FSA_PREFECT_PORT:-4200}"
MLFLOW_PORT="${FSA_MLFLOW_PORT:-5000}"
PG_HOST="${FSA_PG_HOST:-127.0.0.1}"
PG_PORT="${FSA_PG_PORT:-5432}"
PG_USER="${FSA_PG_USER:-postgres}"
PG_PASSWORD="${FSA_PG_PASSWORD:-}"
PREFECT_DB="${FSA_PREFECT_DB:-fsa_prefect}"
MLFLOW_DB="${FSA_MLFLOW_DB:-fsa_mlflow}"
ARTIFACTS="${FSA_MLFLOW_ARTIFACTS:-$SERVERS_DIR/mlflow-artifacts}"
START_TIMEOUT="${FSA_SERVER_START_TIMEOUT:-180}"

# No password in the URLs: libpq (psql, psycopg2) and asyncpg read it from PGPASSFILE (write_pgpass).
PREFECT_DB_URL="postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$PREFECT_DB"
# SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; psycopg2-binary is what we install.
MLFLOW_DB_URL="postgresql+psycopg2://$PG_USER@$PG_HOST:$PG_PORT/$MLFLOW_DB"
PREFECT_API="http://$HOST:$PREFECT_PORT/api"
MLFLOW_URL="http://$HOST:$MLFLOW_PORT"

log() { echo "servers: $*" >&2; }

write_pgpass() {  # FSA_PG_PASSWORD → a 0600 password file named by PGPASSFILE (inherited by the servers)
  [ -n "$PG_PASSWORD" ] || return 0
  local file="$SERVERS_DIR/pgpass" escaped
  escaped="$(printf '%s' "$PG_PASSWORD" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')"  # pgpass escapes \ and :
  (umask 077; printf '%s:%s:*:%s:%s\n' "$PG_HOST" "$PG_PORT" "$PG_USER" "$escaped" >"$file")
  export PGPASSFILE="$file"
}

ensure_database() {  # create database $1 unless it exists (psql client, trust or password auth)
  local name="$1"
  if ! command -v psql >/dev/null; then
    log "psql not found: create database $name yourself (or apt-get install postgresql-client)"; return 0
  fi
  local exists
  # The name travels as a psql variable, quoted by psql itself (:'name' a literal, :"name" an identifier);
  # psql expands variables only in what it reads, not in -c, hence the here-strings.
  exists="$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tA -v name="$name" \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'name'")" \
    || { log "cannot reach PostgreSQL at $PG_HOST:$PG_PORT as $PG_USER"; exit 1; }
  if [ "$exists" != "1" ]; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -q -v ON_ERROR_STOP=1 -v name="$name" \
      <<<'CREATE DATABASE :"name"' >/dev/null
    log "created database $name"
  fi
}

is_running() {  # pid file $1 names a live process
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

healthy() {  # URL $1 answers 2xx
  curl -fsS --max-time 5 "$1" >/dev/null 2>&1
}

wait_healthy() {  # name, health URL, pid file, log file
  local name="$1" url="$2" pidfile="$3" logfile="$4" waited=0
  until healthy "$url"; do
    if ! is_running "$pidfile"; then
      log "$name exited during start-up; last lines of $logfile:"; tail -n 30 "$logfile" >&2; exit 1
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      log "$name not healthy at $url after ${START_TIMEOUT}s; see $logfile"; exit 1
    fi
    sleep 1; waited=$((waited + 1))
  done
  log "$name ready at ${url%/*} (${waited}s)"
}

start_prefect() {
  local pidfile="$SERVERS_DIR/prefect.pid" logfile="$SERVERS_DIR/prefect.log"
  if is_running "$pidfile"; then log "prefect already running (pid $(cat "$pidfile"))"; return; fi
  ensure_database "$PREFECT_DB"
  mkdir -p "$SERVERS_DIR/prefect-home"
  # setsid: the server and its children form one process group that `stop` ends together.
  PREFECT_HOME="$SERVERS_DIR/prefect-home" \
  PREFECT_API_DATABASE_CONNECTION_URL="$PREFECT_DB_URL" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false \
  PREFECT_UI_API_URL="$PREFECT_API" \
  PREFECT_UI_URL="${PREFECT_API%/api}" \
    setsid nohup "$VENV/bin/prefect" server start --host "$HOST" --port "$PREFECT_PORT" \
    >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_healthy prefect "$PREFECT_API/health" "$pidfile" "$logfile"
}

start_mlflow() {
  local pidfile="$SERVERS_DIR/mlflow.pid" logfile="$SERVERS_DIR/mlflow.log"
  if is_running "$pidfile"; then log "mlflow already running (pid $(cat "$pidfile"))"; return; fi
  ensure_database "$MLFLOW_DB"
  mkdir -p "$ARTIFACTS"
  # One worker: this is a 2-core machine shared with others; raise -w on a real server.
  setsid nohup "$VENV/bin/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "$MLFLOW_DB_URL" --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_healthy mlflow "$MLFLOW_URL/health" "$pidfile" "$logfile"
}

stop_one() {
  local name="$1" pidfile="$SERVERS_DIR/$1.pid"
  if ! is_running "$pidfile"; then rm -f "$pidfile"; log "$name not running"; return; fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
  log "$name stopped"
}

status() {
  local rc=0
  if healthy "$PREFECT_API/health"; then log "prefect up   $PREFECT_API (UI http://$HOST:$PREFECT_PORT)";
  else log "prefect down ($PREFECT_API)"; rc=1; fi
  if healthy "$MLFLOW_URL/health"; then log "mlflow  up   $MLFLOW_URL";
  else log "mlflow  down ($MLFLOW_URL)"; rc=1; fi
  return $rc
}

mkdir -p "$SERVERS_DIR"
write_pgpass
command="${1:-status}"
which="${2:-all}"
case "$command" in
  start)
    [ "$which" = mlflow ] || start_prefect
    [ "$which" = prefect ] || start_mlflow
    ;;
  stop)
    [ "$which" = mlflow ] || stop_one prefect
    [ "$which" = prefect ] || stop_one mlflow
    ;;
  status) status ;;
  env)
    echo "export PREFECT_API_URL=$PREFECT_API"
    echo "export MLFLOW_TRACKING_URI=$MLFLOW_URL"
    ;;
  *) echo "usage: $0 start|stop|status|env [prefect|mlflow]" >&2; exit 2 ;;
esac
