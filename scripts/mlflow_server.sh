#!/usr/bin/env bash
# A real MLflow tracking server for the pipeline, on this machine.
#
#   bash scripts/mlflow_server.sh start  [--port 5000] [--host 127.0.0.1]
#                                        [--backend URI] [--artifacts DIR] [--dir DIR]
#   bash scripts/mlflow_server.sh status [--port N] [--dir DIR]
#   bash scripts/mlflow_server.sh stop   [--dir DIR]
#
# Then point the pipeline at it:
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
#   stemdae main        # or dvc repro, stemdae retrain
#
# Defaults: SQLite backend store <dir>/mlflow.db, artifacts on disk in
# <dir>/artifacts served by the server itself (--serve-artifacts, so clients
# need no direct access to the folder), bound to 127.0.0.1 only, one worker.
# <dir> is mlruns/server (git-ignored). --backend takes any SQLAlchemy URI,
# e.g. postgresql://user@localhost:5432/mlflow (give the password in
# ~/.pgpass or PGPASSWORD, not on the command line).
#
# The server answers /health after about 5-8 s. It runs several processes
# (gunicorn/uvicorn workers) in its own process group: `stop` ends that group.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"
[ $# -gt 0 ] && shift
port=5000
host=127.0.0.1
dir="${STEMDAE_MLFLOW_SERVER_DIR:-$repo/mlruns/server}"
backend=""
artifacts=""
timeout_s="${STEMDAE_MLFLOW_START_TIMEOUT_S:-90}"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --artifacts) artifacts="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "mlflow_server.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
backend="${backend:-sqlite:///$dir/mlflow.db}"
artifacts="${artifacts:-$dir/artifacts}"
pidfile="$dir/server.pid"   # process group id, then port, one per line
logfile="$dir/server.log"

# The venv's mlflow when there is one (scripts/env.sh creates it).
if [ -x "$repo/.venv/bin/mlflow" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  PATH="$repo/.venv/bin:$PATH"
fi
PY="$(command -v python || command -v python3)"

# Print a URI without its password (user:pass@ -> user:***@).
redact() { sed -E 's#(//[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

healthy() {  # healthy PORT [HOST]: 0 when http://HOST:PORT/health answers OK
  local h="${2:-$host}"
  [ "$h" = "0.0.0.0" ] && h=127.0.0.1
  "$PY" - "$h" "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

running_pgid() {  # the recorded process group, when it still has a process
  [ -f "$pidfile" ] || return 1
  local pgid
  pgid="$(sed -n 1p "$pidfile")"
  [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null && echo "$pgid"
}

start() {
  if pgid="$(running_pgid)"; then
    echo "mlflow server already running (process group $pgid, port $(sed -n 2p "$pidfile")); stop it first" >&2
    return 1
  fi
  if healthy "$port"; then
    echo "port $port already answers /health: another server is running there" >&2
    return 1
  fi
  mkdir -p "$artifacts"
  echo "starting mlflow server on http://$host:$port (backend $(redact "$backend"), artifacts $artifacts, log $logfile)"
  # setsid: the server and its workers get their own process group, which
  # `stop` signals as a whole.
  setsid mlflow server --host "$host" --port "$port" --workers 1 \
    --backend-store-uri "$backend" --artifacts-destination "$artifacts" --serve-artifacts \
    >"$logfile" 2>&1 </dev/null &
  local pid=$! pgid
  pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
  printf '%s\n%s\n' "${pgid:-$pid}" "$port" >"$pidfile"
  local t0=$SECONDS
  until healthy "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "mlflow server exited during start-up; last lines of $logfile:" >&2
      tail -n 20 "$logfile" >&2
      rm -f "$pidfile"
      return 1
    fi
    if [ $((SECONDS - t0)) -ge "$timeout_s" ]; then
      echo "mlflow server did not answer /health within ${timeout_s} s; stopping it (log: $logfile)" >&2
      stop >/dev/null
      return 1
    fi
    sleep 0.5
  done
  echo "mlflow server ready after $((SECONDS - t0)) s: export MLFLOW_TRACKING_URI=http://$host:$port"
}

stop() {
  local pgid
  if ! pgid="$(running_pgid)"; then
    echo "mlflow server not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 -- "-$pgid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "mlflow server stopped (process group $pgid)"
}

status() {
  local pgid p
  if pgid="$(running_pgid)"; then
    p="$(sed -n 2p "$pidfile")"
    if healthy "$p"; then
      echo "mlflow server running: http://$host:$p (process group $pgid)"
      return 0
    fi
    echo "mlflow server process group $pgid exists but http://$host:$p/health does not answer (log: $logfile)"
    return 1
  fi
  echo "mlflow server not running"
  return 3
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
