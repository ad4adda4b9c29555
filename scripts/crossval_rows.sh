#!/usr/bin/env bash
# The README's cross-validation tables (issue 14): every row `stemdae crossval --folds 3 --seeds 2`
# with ONE short schedule (profile off; 1 pretraining epoch per phase, 4 fine-tuning epochs of
# 20 000 frames, batch 1024, bf16, no early stopping), rows differing in one setting only:
#   linear, log, log_standardized, log_ratio (model.scaling), log_ratio_nopretrain (training.pretrain)
# plus log_ratio tested on a timbre-shifted corpus (--shifted). Rows share work/crossval/common.
# Usage: scripts/crossval_rows.sh ROOT [SHIFTED_DIR]   (ROOT holds data/, params.yaml; run `stemdae pairs` first)
# Then: python scripts/crossval_table.py ROOT   (markdown tables over the rows)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
root=$(realpath "$1"); shifted=${2:-}
mkdir -p "$root/logs"
python - "$root" <<'PY'
import copy, sys, yaml
root = sys.argv[1]
base = yaml.safe_load(open(f"{root}/params.yaml"))
base["training"].update(profile=None, pretrain=True, pretrain_epochs=1, finetune_epochs=4, frames_per_epoch=20000,
                        batch_size=1024, precision="bf16-mixed", early_stopping_patience=None)
rows = {"log_ratio": ("log_ratio", True), "linear": ("linear", True), "log_ratio_nopretrain": ("log_ratio", False),
        "log": ("log", True), "log_standardized": ("log_standardized", True)}
for name, (scaling, pretrain) in rows.items():
    p = copy.deepcopy(base)
    p["model"]["scaling"], p["training"]["pretrain"] = scaling, pretrain
    yaml.safe_dump(p, open(f"{root}/params-{name}.yaml", "w"), sort_keys=False)
PY
row() {  # row LOG_NAME PARAMS_ROW [crossval args]: nice 19 (a shared machine; the metrics do not depend on it)
  local tag=$1 name=$2; shift 2
  echo "$(date -u +%FT%TZ) start $tag" >> "$root/logs/progress.log"
  rc=0
  nice -n 19 /usr/bin/time -v -o "$root/logs/$tag.time" stemdae --params "$root/params-$name.yaml" --root "$root" \
      crossval --folds 3 --seeds 2 --name "$name" "$@" > "$root/logs/$tag.log" 2>&1 || rc=$?
  echo "$(date -u +%FT%TZ) end $tag rc=$rc" >> "$root/logs/progress.log"
}
row log_ratio log_ratio
if [ -n "$shifted" ]; then row log_ratio_shifted log_ratio --shifted "$(realpath "$shifted")"; fi
for name in linear log_ratio_nopretrain log log_standardized; do row "$name" "$name"; done
echo "$(date -u +%FT%TZ) all rows done" >> "$root/logs/progress.log"
