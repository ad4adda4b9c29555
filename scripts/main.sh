#!/usr/bin/env bash
# One command: create the environment, synthesise the demo corpus into data/
# when no dataset is there, and run the pipeline (dvc repro) to trained,
# evaluated, registered models in MLflow.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec stemdae main "$@"
