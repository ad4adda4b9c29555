#!/usr/bin/env bash
# Lean caches (issue 15): librosa float32 vs float16 vs spectral on a small demo corpus.
# Usage: benchmarks/lean_caches.sh OUT_DIR [SONGS] [SECONDS]
# Per variant: augment+features wall time, peak RSS, work/ bytes, then train@bass
# with one short schedule (same seed) and its held-out validation metrics.
set -euo pipefail
OUT=$(realpath -m "$1"); SONGS=${2:-8}; SECONDS_=${3:-20}
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/base"
cd "$OUT/base"
cp "$SRC/params.yaml" .
python - <<'PY'
import yaml
p = yaml.safe_load(open("params.yaml"))
p["training"]["profiles"]["demo"].update(pretrain_epochs=1, finetune_epochs=6, frames_per_epoch=20000)
p["training"]["accelerator"] = "cpu"
p["tracking"]["log_audio"] = False
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
[ -d data ] || stemdae demo-corpus data --songs "$SONGS" --seconds "$SECONDS_" >/dev/null
/usr/bin/time -f "pairs %e s %M KB" stemdae pairs >/dev/null
/usr/bin/time -f "segments %e s %M KB" stemdae segments >/dev/null
for v in f32 f16 spectral; do
  rm -rf "$OUT/$v"; mkdir -p "$OUT/$v"; cp -r data params.yaml "$OUT/$v/"; mkdir -p "$OUT/$v/work"
  cp -r work/pairs.csv work/segments "$OUT/$v/work/"
  (cd "$OUT/$v"
   python - "$v" <<'PY'
import sys, yaml
v = sys.argv[1]; p = yaml.safe_load(open("params.yaml"))
if v == "f16": p["features"]["dtype"] = "float16"
if v == "spectral": p["augmentation"]["method"] = "spectral"
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
   /usr/bin/time -f "$v augment %e s %M KB" stemdae augment >/dev/null
   /usr/bin/time -f "$v features %e s %M KB" stemdae features > features.txt
   echo "$v work/features $(du -sb work/features | cut -f1) B; work/augmented $(du -sb work/augmented | cut -f1) B"
   /usr/bin/time -f "$v train@bass %e s %M KB" stemdae train --group bass >/dev/null 2>train.log
   python -c "import json; m=json.load(open('reports/train/bass/metrics.json')); print('$v', {k: m[k] for k in ('val_loss','val_mag_mae','val_log_mae','train_frames','val_frames','elapsed_s')})")
done
python - "$OUT" <<'PY'
import pandas as pd, sys
from pathlib import Path
plan = pd.read_csv(Path(sys.argv[1]) / "f32/work/augmented/manifest.csv")
print("augmented training segments (manifest rows):", len(plan), "pairs:", plan.pair_id.nunique())
PY
