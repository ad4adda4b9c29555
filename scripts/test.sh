#!/usr/bin/env bash
# One command: create the environment and run the test suite.
#   bash scripts/test.sh            # the whole suite (what CI runs)
#   bash scripts/test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pytest "$@"
