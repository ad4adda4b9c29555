#!/usr/bin/env bash
# One command: create the environment and run the test suite (what CI runs).
#   bash scripts/test.sh                  # the whole suite
#   bash scripts/test.sh -m "not slow"    # extra arguments go to pytest
# A throwaway PostgreSQL server (installed with apt-get if missing) runs on
# 127.0.0.1 for the distributed-sweep tests and is stopped on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
pgdir="$(mktemp -d /tmp/stemdae-pg.XXXXXX)"
trap 'bash scripts/postgres.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
STEMDAE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh start "$pgdir")"
export STEMDAE_TEST_POSTGRES_URL
python -m pytest "$@"
