"""Two cross-validation rows compared song by song: python scripts/crossval_compare.py ROOT ROW_A ROW_B [METHOD].

Reads ROOT/reports/crossval/<row>/per_song.csv of both rows (same songs, folds and seeds: the rows of
scripts/crossval_rows.sh; a row given as a path, e.g. /tmp/cvspec/reports/crossval/spectral, is read from
there: a row run in its own project folder), takes each song's METHOD value (default `dae`; spectral MAE, mean over its
instruments and seeds, as the reports do) and prints per group: the mean of each row, ratio A ÷ B
with a paired bootstrap 95 % interval, the two-sided Wilcoxon signed-rank p over songs
(stemdae.stats.paired_test) and the songs where A is lower. E.g. greedy pretraining on vs off:

    python scripts/crossval_compare.py /tmp/cv24 log_ratio log_ratio_nopretrain
    python scripts/crossval_compare.py /tmp/cv24 /tmp/cvspec/reports/crossval/spectral log_ratio
"""
import sys
from pathlib import Path

import pandas as pd

from stemdae.stats import paired_test

root, a, b = Path(sys.argv[1]) / "reports" / "crossval", sys.argv[2], sys.argv[3]
method = sys.argv[4] if len(sys.argv) > 4 else "dae"
metric = "spectral_mae"


def song_means(row: str) -> pd.DataFrame:
    d = pd.read_csv((Path(row) if "/" in row else root / row) / "per_song.csv")
    return d[d["method"] == method].groupby(["group", "song"])[metric].mean()


x, y = song_means(a), song_means(b)
a, b = Path(a).name, Path(b).name
print(f"| group | songs | {a} | {b} | {a} ÷ {b} [95 % CI] | p (Wilcoxon) | songs where {a} is lower |")
print("|---|---|---|---|---|---|---|")
for group in sorted(set(x.index.get_level_values(0)) & set(y.index.get_level_values(0))):
    xa, yb = x.loc[group], y.loc[group]
    common = xa.index.intersection(yb.index)
    t = paired_test(xa[common].to_numpy(), yb[common].to_numpy())
    print(f"| {group} | {t['n']:g} | {xa[common].mean():.4f} | {yb[common].mean():.4f} | {t['ratio']:.3f} "
          f"[{t['ratio_low']:.3f}, {t['ratio_high']:.3f}] | {t['p_value']:.2g} | {t['wins']:g}/{t['n']:g} |")
