"""Markdown tables over the rows of scripts/crossval_rows.sh: python scripts/crossval_table.py ROOT.

Reads ROOT/reports/crossval/<row>/metrics.json; per group and row: the DAE's spectral MAE over songs
(95 % t-interval) and DAE / baseline (paired bootstrap interval, Wilcoxon p, songs won), seed spread.
"""
import json, sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cv24") / "reports" / "crossval"
ROWS = ["linear", "log", "log_standardized", "log_ratio", "log_ratio_nopretrain"]
BASE = [("identity", "identity"), ("static_eq", "static EQ"), ("static_eq_gain", "static EQ + gain")]
metric = "spectral_mae"


def cell(c):
    return (f"{c['ratio']:.2f} [{c['ratio_low']:.2f}, {c['ratio_high']:.2f}] p={c['p_value']:.2g}"
            f" ({int(c['wins'])}/{int(c['n'])})")


for key, title in (("groups", "held-out folds"), ("shifted", "timbre-shifted songs")):
    rows = [(r, json.loads((ROOT / r / "metrics.json").read_text())) for r in ROWS if (ROOT / r / "metrics.json").is_file()]
    rows = [(r, m) for r, m in rows if key in m]
    if not rows:
        continue
    print(f"\n### {title}\n")
    print("| group | row | songs | DAE " + metric + " [95 % CI] | " + " | ".join(f"÷ {b}" for _, b in BASE) + " | seed spread |")
    print("|---|---|---|---|" + "---|" * len(BASE) + "---|")
    groups = list(rows[0][1][key])
    for g in groups:
        for r, m in rows:
            x = m[key].get(g)
            if not x or "dae" not in x:
                continue
            d = x["dae"][metric]
            sp = x.get("seed_spread", {})
            print(f"| {g} | {r} | {x['n_songs']} | {d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}] | "
                  + " | ".join(cell(x[f"dae_vs_{b}"]) if f"dae_vs_{b}" in x else "n/a" for b, _ in BASE)
                  + f" | {sp.get('min', float('nan')):.4f}–{sp.get('max', float('nan')):.4f} |")
