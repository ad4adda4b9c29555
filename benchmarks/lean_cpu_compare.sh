#!/usr/bin/env bash
# CPU time of the old two stages (augment writes audio, features reads it) against the fused
# features stage, on 4 training pairs of /tmp/lean_bench/base (benchmarks/lean_caches.sh first).
# The old code: git archive ce81ba7 src | tar -x -C /tmp/oldsrc
set -e
B=/tmp/lean_cpu; rm -rf $B; mkdir -p $B/proj/work/segments
cd $B/proj
cp /tmp/lean_bench/base/params.yaml .
python - <<'PY'
import pandas as pd, shutil, yaml
m = pd.read_csv("/tmp/lean_bench/base/work/segments/manifest.csv", dtype=str)
m = m[m.split == "train"].sort_values("pair_id").head(4)
m.to_csv("work/segments/manifest.csv", index=False)
for pid in m.pair_id:
    shutil.copy(f"/tmp/lean_bench/base/work/segments/{pid}.npy", f"work/segments/{pid}.npy")
p = yaml.safe_load(open("params.yaml")); p["augmentation"]["n_jobs"] = 1; p["features"]["n_jobs"] = 1
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
cp -r $B/proj $B/old
cd $B/old
python - <<'PY'
import yaml
p = yaml.safe_load(open("params.yaml")); p["features"].pop("n_jobs"); p["augmentation"].pop("spectral_shifts")
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
PYTHONPATH=/tmp/oldsrc/src /usr/bin/time -f "old augment wall %e user %U sys %S" python -m stemdae.cli augment >/dev/null
PYTHONPATH=/tmp/oldsrc/src /usr/bin/time -f "old features wall %e user %U sys %S" python -m stemdae.cli features >/dev/null
echo "old work/augmented+features $(du -sb work/augmented | cut -f1) + $(du -sb work/features | cut -f1) B"
cd $B/proj
/usr/bin/time -f "new augment wall %e user %U sys %S" python -m stemdae.cli augment >/dev/null
/usr/bin/time -f "new features wall %e user %U sys %S" python -m stemdae.cli features >/dev/null
echo "new work/augmented+features $(du -sb work/augmented | cut -f1) + $(du -sb work/features | cut -f1) B"
python - <<'PY'
import numpy as np
for g in ("bass","guitar","vocal","keys"):
    a = np.load(f"/tmp/lean_cpu/old/work/features/train/{g}/stem.npy", mmap_mode="r"); b = np.load(f"/tmp/lean_cpu/proj/work/features/train/{g}/stem.npy", mmap_mode="r")
    print(g, a.shape, "identical" if np.array_equal(a, b) else f"max abs diff {np.max(np.abs(a - b))}")
PY
