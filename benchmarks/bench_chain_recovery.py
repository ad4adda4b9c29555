"""Chain model on the demo corpus: each group's fitted preset against the true chains of its training songs.

The demo corpus stores each stem's true chain in ``<Song>_CHAINS.json`` (``corpus/chains.py``). Per
group this compares, over the songs the chain was fitted on (the training split minus the
validation songs, as ``stemdae chain fit`` leaves them out):

- the EQ **shape** (each response minus its mean over the octave bands 62.5 Hz-8 kHz: segments are
  loudness-normalised, so the overall gain is not comparable) of the fitted preset against the mean
  of the true chains' shapes, with the songs' own spread (std per band);
- the compressor's ratio, and its threshold relative to the EQ's mean gain in segment scale
  (the true threshold plus the segment's raw gain), against the true ones;
- the reverb tail: an impulse through the true pedalboard ``Reverb`` (Freeverb) of each pair and
  through the fitted chain's reverb alone, as the wet-to-dry energy (dB) and the RT60 (T20 x 3 of
  the Schroeder decay; the truth also below and above 2 kHz, where Freeverb's damping differs).

Writes one figure per group (true EQ shapes thin, their mean thick, the fit dashed) and a JSON
with the figures, and prints a markdown table.

    stemdae --root ROOT chain fit --group G                     # every group (or: dvc repro chain)
    python benchmarks/bench_chain_recovery.py ROOT --out docs/figures [--groups bass guitar vocal keys]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from stemdae.chain import filters
from stemdae.chain.group import load_chain

OCT = 1000.0 * 2.0 ** np.arange(-4, 4)  # 62.5 Hz .. 8 kHz
GRID = np.geomspace(40.0, 16000.0, 200)


def true_eq_db(steps: list[dict], freqs: np.ndarray, sr: int) -> np.ndarray:
    """The linear filters before the compressor (high-pass, the distorted guitar's low-pass, EQ) of a true
    chain, in dB at ``freqs``; the fitted chain's curve has the same sections (its low-pass: saturation groups)."""
    h = np.ones(len(freqs), complex)
    t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    for s in steps:
        k = s["type"]
        if k == "compressor":
            break
        if k in ("highpass", "lowpass"):
            design = filters.highpass1_coefs if k == "highpass" else filters.lowpass1_coefs
            sections = [design(t(s["cutoff_hz"]), sr)] * int(s.get("order", 1))
        elif k in ("low_shelf", "high_shelf"):
            sections = [filters.shelf_coefs(t(s["freq_hz"]), t(s["gain_db"]), t(s.get("q", 0.7071)), sr,
                                            high=k == "high_shelf")]
        elif k == "peak":
            sections = [filters.peak_coefs(t(s["freq_hz"]), t(s["gain_db"]), t(s.get("q", 0.7071)), sr)]
        else:
            continue  # not an EQ step (saturation, reverb): not in the EQ curve
        for b, a in sections:
            h *= filters.response_at(b, a, freqs, sr).numpy()
    return 20 * np.log10(np.abs(h))


def _rt60(ir: np.ndarray, sr: int) -> float:
    """T20 x 3 of an impulse response: the Schroeder decay's slope between -5 and -25 dB."""
    e = np.cumsum(ir[::-1] ** 2)[::-1]
    db = 10 * np.log10(e / e[0] + 1e-30)
    return 3.0 * (int(np.argmax(db < -25)) - int(np.argmax(db < -5))) / sr


def reverb_tail(wet_ir: np.ndarray, dry_gain: float, sr: int) -> dict:
    """Wet-to-dry energy of an impulse's reverb (dB) and RT60 overall, below and above 2 kHz (s)."""
    spec, f = np.fft.rfft(wet_ir), np.fft.rfftfreq(wet_ir.size, 1 / sr)
    bands = {k: np.fft.irfft(spec * m, n=wet_ir.size) for k, m in (("lo", f < 2000), ("hi", f >= 2000))}
    return {"wet_db": float(10 * np.log10(np.sum(wet_ir**2) / dry_gain**2)), "rt60_s": _rt60(wet_ir, sr),
            "rt60_lo_s": _rt60(bands["lo"], sr), "rt60_hi_s": _rt60(bands["hi"], sr)}


def true_reverb(step: dict, sr: int) -> dict:
    """:func:`reverb_tail` of a true chain's pedalboard ``Reverb`` (Freeverb: the dry path gains 2 x dry_level)."""
    import pedalboard as pb

    x = np.zeros((1, 3 * sr), np.float32)
    x[0, 0] = 1.0
    y = pb.Reverb(room_size=step["room_size"], damping=step["damping"], wet_level=step["wet_level"],
                  dry_level=step["dry_level"], width=step.get("width", 1.0))(x, sr)[0].astype(np.float64)
    dry = 2.0 * step["dry_level"]
    y[0] -= dry
    return reverb_tail(y, dry, sr)


def fitted_reverb(settings: dict) -> dict | None:
    """:func:`reverb_tail` of the fitted chain's reverb: the impulse response ``render.py`` convolves with
    (unit energy, so the wet-to-dry energy is ``wet_db``; rendering it through the whole board would add
    the two 10 Hz high-pass sections' own tail, about -28 dB, to the measure)."""
    from stemdae.chain.render import impulse_response

    ir = impulse_response(settings)
    if ir is None:
        return None
    sr = settings["config"]["sr"]
    return reverb_tail(np.concatenate([ir * 10 ** (settings["reverb"]["wet_db"] / 20), np.zeros(2 * sr)]), 1.0, sr)


def fitted_songs(root: Path, group: str) -> list[dict]:
    """Manifest rows of the group's training segments the chain was fitted on (``chain fit``'s summary)."""
    rows = [r for r in csv.DictReader(open(root / "work/segments/manifest.csv"))
            if r["group"] == group and r["split"] == "train"]
    hist = root / "models" / "chain" / group / "fit_summary.json"
    val = set(json.loads(hist.read_text()).get("validation_songs", [])) if hist.is_file() else set()
    return [r for r in rows if r["song"] not in val]


def recover(root: Path, group: str, out: Path) -> dict:
    chain = load_chain(root / "models" / "chain" / group)
    sr = chain.config.sr
    with torch.no_grad():
        fit_oct, fit_grid = (chain.eq_response_db(f).numpy() for f in (OCT, GRID))
    shapes, grids, thr, rat, effects, tails = [], [], [], [], set(), []
    for r in fitted_songs(root, group):
        song, sid = r["song"], r["pair_id"].rsplit("_", 1)[1]
        steps = json.load(open(root / "data" / song / f"{song}_CHAINS.json"))[sid]["chain"]
        effects |= {s["type"] for s in steps}
        tails += [true_reverb(s, sr) for s in steps if s["type"] == "reverb"]
        eq = true_eq_db(steps, OCT, sr)
        shapes.append(eq - eq.mean())
        g = true_eq_db(steps, GRID, sr)
        grids.append(g - eq.mean())
        comp = [s for s in steps if s["type"] == "compressor"]
        if comp:
            thr.append(comp[0]["threshold_db"] + float(r["raw_gain_db"]) + eq.mean())
            rat.append(comp[0]["ratio"])
    shapes, mean_shape = np.array(shapes), np.mean(shapes, 0)
    fit_shape = fit_oct - fit_oct.mean()
    err = np.abs(fit_shape - mean_shape)
    comp = chain.settings()["compressor"]
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for g in grids:
        ax.semilogx(GRID, g, color="tab:blue", alpha=0.35, lw=0.8)
    ax.semilogx(GRID, np.mean(grids, 0), color="tab:blue", lw=2.2, label=f"true, mean of {len(grids)} training pairs")
    ax.semilogx(GRID, fit_grid - fit_oct.mean(), "--", color="black", lw=2, label="fitted preset")
    ax.set(xlabel="frequency (Hz)", ylabel="EQ shape (dB, minus its octave-band mean)",
           title=f"{group}: recovered EQ vs the demo engineer's", xlim=(GRID[0], GRID[-1]))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"chain_recovery_{group}.png", dpi=100)
    return {"group": group, "pairs": len(shapes), "true_effects": sorted(effects),
            "eq_shape_err_max_db": float(err.max()), "eq_shape_err_mean_db": float(err.mean()),
            "song_spread_db": [float(shapes.std(0).min()), float(shapes.std(0).max())],
            "flat_eq_err_max_db": float(np.abs(mean_shape).max()),
            "ratio_fit": comp["ratio"], "ratio_true": [float(min(rat)), float(max(rat))] if rat else None,
            "threshold_rel_fit_db": comp["threshold_db"] - float(fit_oct.mean()),
            "threshold_rel_true_db": [float(min(thr)), float(max(thr))] if thr else None,
            "reverb_fit": fitted_reverb(chain.settings()),
            "reverb_true": {k: [float(min(t[k] for t in tails)), float(max(t[k] for t in tails))] for k in tails[0]}
            if tails else None,
            "figure": str(out / f"chain_recovery_{group}.png")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--groups", nargs="+", default=["bass", "guitar", "vocal", "keys"])
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    res = [recover(a.root, g, a.out) for g in a.groups if (a.root / "models" / "chain" / g).is_dir()]
    print("| group | pairs | EQ shape error max / mean (dB) | pairs' spread (dB) | flat EQ error (dB) "
          "| ratio fit / true | threshold re EQ mean fit / true (dB) |")
    print("|---|---|---|---|---|---|---|")
    for r in res:
        rt = f"{r['ratio_true'][0]:.2g}–{r['ratio_true'][1]:.2g}" if r["ratio_true"] else "none"
        tt = f"{r['threshold_rel_true_db'][0]:.1f} to {r['threshold_rel_true_db'][1]:.1f}" if r["threshold_rel_true_db"] else "none"
        print(f"| {r['group']} | {r['pairs']} | {r['eq_shape_err_max_db']:.2f} / {r['eq_shape_err_mean_db']:.2f} "
              f"| {r['song_spread_db'][0]:.1f}–{r['song_spread_db'][1]:.1f} | {r['flat_eq_err_max_db']:.2f} "
              f"| {r['ratio_fit']:.2f} / {rt} | {r['threshold_rel_fit_db']:.1f} / {tt} |")
    print("\n| group | reverb wet ÷ dry (dB) fit / true | RT60 (s) fit / true | RT60 < 2 kHz / > 2 kHz, true |")
    print("|---|---|---|---|")
    for r in res:
        f, t = r["reverb_fit"], r["reverb_true"]
        fit_txt = (f"{f['wet_db']:.1f}", f"{f['rt60_s']:.2f}") if f else ("no reverb", "-")
        true_txt = ((f"{t['wet_db'][0]:.1f} to {t['wet_db'][1]:.1f}", f"{t['rt60_s'][0]:.2f}–{t['rt60_s'][1]:.2f}",
                     f"{t['rt60_lo_s'][0]:.2f}–{t['rt60_lo_s'][1]:.2f} / {t['rt60_hi_s'][0]:.2f}–{t['rt60_hi_s'][1]:.2f}")
                    if t else ("none", "-", "-"))
        print(f"| {r['group']} | {fit_txt[0]} / {true_txt[0]} | {fit_txt[1]} / {true_txt[1]} | {true_txt[2]} |")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
