#!/usr/bin/env bash
# One command: create the environment and run the test suite (what CI runs).
#   bash scripts/test.sh                  # the whole suite
#   bash scripts/test.sh -m "not slow"    # extra arguments go to pytest
# A throwaway PostgreSQL server (installed with apt-get if missing) runs on
# 127.0.0.1 for the distributed-sweep tests and is stopped on exit. Chromium and its
# driver (Debian packages, installed with apt-get if missing) run the listening-page test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# The listening-test browser test drives Debian's Chromium through its chromedriver (no download).
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test.sh] installing Debian's chromium and chromium-driver (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "[test.sh] chromium/chromedriver missing and not root: install the Debian packages chromium chromium-driver" >&2
  fi
fi
pgdir="$(mktemp -d /tmp/stemdae-pg.XXXXXX)"
trap 'bash scripts/postgres.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
STEMDAE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh start "$pgdir")"
export STEMDAE_TEST_POSTGRES_URL
python -m pytest "$@"
