#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for tests and local distributed sweeps.
#
#   scripts/postgres.sh start DIR [PORT]   # install if missing, initdb, start; prints the URL
#   scripts/postgres.sh url   DIR          # print the URL of the cluster in DIR
#   scripts/postgres.sh stop  DIR          # stop it (a no-op when it is not running)
#   scripts/postgres.sh status DIR         # exit 0 when it accepts connections
#
# Idempotent: `start` on a running cluster only prints its URL; `stop` twice is fine.
# As root (CI), the Debian package `postgresql` is installed with apt-get when no
# server binaries are found, and the server runs as the `postgres` user (it refuses
# to run as root). The cluster listens on 127.0.0.1 only, its socket lives in DIR,
# and its one role `stemdae` (password `stemdae`) owns the database `stemdae`.
# Nothing here touches the system cluster of the package (port 5432).
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  sed -n '2,7p' "$0" >&2
  exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
data="$dir/data"
user=stemdae
password=stemdae
db=stemdae

die() { echo "[postgres.sh] $*" >&2; exit 1; }

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

install_server() {
  [ "$(id -u)" = 0 ] || die "PostgreSQL server binaries not found and not root: install the package 'postgresql'"
  echo "[postgres.sh] installing the Debian package postgresql (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
}

bin="$(find_bin || true)"
if [ -z "$bin" ] && [ "$cmd" = start ]; then
  install_server
  bin="$(find_bin)" || die "postgresql installed but no initdb found under /usr/lib/postgresql/*/bin"
fi

# Run a server binary as the cluster's owner (postgres when we are root).
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_of() { [ -f "$dir/port" ] && cat "$dir/port"; }

url() {
  echo "postgresql+psycopg2://$user:$password@127.0.0.1:$(port_of)/$db"
}

running() {
  [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

case "$cmd" in
  start)
    if running; then url; exit 0; fi
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || die "user 'postgres' missing (the package creates it)"
      chown postgres: "$dir"
      runuser -u postgres -- test -x "$dir" || die "$dir is not reachable by user postgres (a parent folder is private); use a folder under /tmp"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      pwfile="$dir/.pw"
      printf '%s\n' "$password" > "$pwfile"
      [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
      as_owner "$bin/initdb" -D "$data" -U "$user" --pwfile="$pwfile" -A scram-sha-256 \
        --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
      rm -f "$pwfile"
    fi
    port="${3:-$(port_of || true)}"
    [ -n "$port" ] || port="$(free_port)"
    echo "$port" > "$dir/port"
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=100 -c fsync=off" start >&2 \
      || { tail -20 "$dir/postgres.log" >&2; die "server did not start (log: $dir/postgres.log)"; }
    if ! as_owner "$bin/psql" -h "$dir" -p "$port" -U "$user" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
      as_owner "$bin/psql" -h "$dir" -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE $db" >&2
    fi
    url
    ;;
  url)
    [ -f "$dir/port" ] || die "no cluster in $dir"
    url
    ;;
  status)
    running
    ;;
  stop)
    if running; then
      as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
    fi
    ;;
  *)
    die "unknown command '$cmd' (start, url, status, stop)"
    ;;
esac
