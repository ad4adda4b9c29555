"""Chain model on the demo corpus: a fitted preset against the true chains of the group's training songs.

The demo corpus stores each stem's true chain in ``<Song>_CHAINS.json``. This prints the EQ
shape (octave bands 62.5 Hz-8 kHz, each response minus its mean: segments are loudness
normalised, so overall gain is not comparable) of the fitted preset and of the mean true chain,
the songs' spread, and the compressor threshold (in segment scale: plus the segment's raw gain,
relative to the EQ's mean gain) and ratio.

    stemdae --root ROOT chain fit --group bass     # needs ROOT/work/segments
    python benchmarks/bench_chain_recovery.py ROOT bass
"""
import csv, json, sys, glob
import numpy as np, torch
from pathlib import Path
from stemdae.chain import filters
from stemdae.chain.group import load_chain
root = Path(sys.argv[1]); group = sys.argv[2]
OCT = 1000.0 * 2.0 ** np.arange(-4, 4)
chain = load_chain(root / "models" / "chain" / group)
sr = chain.config.sr
fit_db = chain.eq_response_db(OCT).detach().numpy()
def true_eq_db(steps):
    h = np.ones(len(OCT), complex)
    t = lambda v: torch.tensor(float(v), dtype=torch.float64)
    for s in steps:
        k = s["type"]
        if k == "highpass":
            b, a = filters.highpass1_coefs(t(s["cutoff_hz"]), sr); bb = [(b, a)] * int(s.get("order", 1))
        elif k in ("low_shelf", "high_shelf"):
            bb = [filters.shelf_coefs(t(s["freq_hz"]), t(s["gain_db"]), t(s.get("q", 0.7071)), sr, high=k == "high_shelf")]
        elif k == "peak":
            bb = [filters.peak_coefs(t(s["freq_hz"]), t(s["gain_db"]), t(s.get("q", 0.7071)), sr)]
        elif k == "compressor":
            break
        else:
            print("  (true step not in EQ model:", k, ")"); continue
        for b, a in bb:
            h *= filters.response_at(b, a, OCT, sr).numpy()
    return 20 * np.log10(np.abs(h))
rows = [r for r in csv.DictReader(open(root / "work/segments/manifest.csv")) if r["group"] == group and r["split"] == "train"]
shapes, thr, rat = [], [], []
for r in rows:
    song, sid = r["song"], r["pair_id"].rsplit("_", 1)[1]
    entry = json.load(open(root / "data" / song / f"{song}_CHAINS.json"))[sid]
    steps = entry["chain"]
    eq = true_eq_db(steps); shapes.append(eq - eq.mean())
    comp = [s for s in steps if s["type"] == "compressor"]
    if comp:
        thr.append(comp[0]["threshold_db"] + float(r["raw_gain_db"]) + eq.mean()); rat.append(comp[0]["ratio"])
shapes = np.array(shapes); mean_shape = shapes.mean(0)
fit_shape = fit_db - fit_db.mean()
print("octave bands Hz      ", OCT.round(1).tolist())
print("fitted shape dB      ", fit_shape.round(2).tolist())
print("true mean shape dB   ", mean_shape.round(2).tolist())
print("|fit - mean| max dB  ", np.abs(fit_shape - mean_shape).max().round(2), " mean", np.abs(fit_shape - mean_shape).mean().round(2))
print("song spread (std) dB ", shapes.std(0).round(2).tolist())
print("flat EQ |0 - mean| max", np.abs(mean_shape).max().round(2))
s = chain.settings()["compressor"]
print("compressor fitted", s, "(threshold rel. EQ mean", round(s["threshold_db"] - fit_db.mean(), 2), ")")
print("true thresholds (segment scale, rel. EQ mean)", np.round(thr, 1).tolist(), "ratios", np.round(rat, 2).tolist())
