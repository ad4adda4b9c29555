"""Stereo processing with a mono model: per channel, mid/side, or linked — measured on validation songs.

A DAE is trained on mono close-miked tracks; a stereo file has to be mapped
onto it somehow. Three ways, all with the same input gain (the mono
downmix's loudest window, :func:`stemdae.inference.render.loudness_gain_db`):

- ``per_channel``: L and R through the model on their own (what ``stemdae process`` did until now);
- ``mid_side``: M = (L + R) / 2 and S = (L - R) / 2 through the model, then L = M' + S', R = M' - S';
- ``linked``: the model sees the mid only; its per-bin gain |M'| / |M| is applied to
  L and R alike (a "linked" processor, as a stereo-linked compressor). This one is
  rendered by :func:`stemdae.process` itself, the code ``stemdae process`` runs
  (which refers the gain to 0.1 x the channels' RMS where the mid cancels);
- ``linked_rms``: as ``linked``, but the model sees the channels' RMS magnitude
  ``sqrt((|L|^2 + |R|^2) / 2)`` per bin instead of ``|M|`` (no division by a mid
  that cancels where the channels are out of phase).

Ground truth: a stereo scene built from a validation pair (raw ``x``, stem
``s``, both at ``target_lufs`` as the training segments): a source panned with
the constant-power law, ``(cos t * x, sin t * x)``, whose processed version is
the same pan of the stem, ``(cos t * s, sin t * s)`` (an engineer processes the
source, then pans it); and a spaced pair, ``(x, 0.7 * x delayed 0.5 ms)`` -> the
same of ``s``. Scores per output channel against the target channel: the
log-spectral distance (dB, :func:`stemdae.dsp.metrics.log_spectral_distance`)
and the inter-channel level error (dB, per frame, energy-weighted over frames).

Songs: the **validation** songs of each cross-validation fold's training
songs (the draw ``train.py`` made with the model's seed: ``data.split_songs``),
never a test song; the models: that fold's ``models/<group>``
(``stemdae crossval`` output; ``CV`` is the project's ``work/crossval``).

    python benchmarks/bench_stereo.py --cv CV --name log_ratio --folds 3 --seed 0 --out stereo.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

import stemdae
from stemdae.data import split_songs
from stemdae.dsp.metrics import log_spectral_distance, mean_ci
from stemdae.dsp.stft import istft, stft
from stemdae.inference.files import ArraySource
from stemdae.inference.models import load_model
from stemdae.inference.render import loudness_gain_db
from stemdae.segfile import read_segment, segment_path

MODES = ("per_channel", "mid_side", "linked", "linked_rms")


def scenes(x: np.ndarray, s: np.ndarray, sr: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (stereo input (2, n), stereo target (2, n))."""
    out = {}
    for deg in (45, 30, 10):
        t = math.radians(deg)
        g = np.array([[math.cos(t)], [math.sin(t)]], np.float32)
        out[f"pan {deg}°"] = (g * x, g * s)
    d = round(0.0005 * sr)
    delay = lambda y: np.concatenate([np.zeros(d, np.float32), y[:-d]])  # noqa: E731
    out["spaced pair"] = (np.stack([x, 0.7 * delay(x)]), np.stack([s, 0.7 * delay(s)]))
    e = round(0.015 * sr)  # a wide source: an out-of-phase 15 ms reflection in the side (anti-phase bins in M)
    echo = lambda y: 0.5 * np.concatenate([np.zeros(e, np.float32), y[:-e]])  # noqa: E731
    out["wide (M/S echo)"] = (np.stack([x + echo(x), x - echo(x)]), np.stack([s + echo(s), s - echo(s)]))
    return out


def _model_spec(pred, spec: np.ndarray) -> np.ndarray:
    """Complex spectrum (bins, frames) -> the model's output magnitudes (bins, frames)."""
    return pred.predict_magnitude(np.abs(spec).T.astype(np.float32)).T


def render_modes(xs: np.ndarray, pred, fe, gain: float) -> dict[str, np.ndarray]:
    """The three renderings of the stereo input ``xs`` (2, n), in the model's domain (gain applied)."""
    kw = dict(n_fft=fe.n_fft, hop=fe.hop)
    n = xs.shape[1]

    def back(mag, spec):
        return istft(mag, np.angle(spec), **kw, length=n)

    L, R = (gain * xs).astype(np.float32)
    SL, SR = stft(L, **kw), stft(R, **kw)
    out = {"per_channel": np.stack([back(_model_spec(pred, SL), SL), back(_model_spec(pred, SR), SR)])}
    SM, SS = stft((L + R) / 2, **kw), stft((L - R) / 2, **kw)
    m, s = back(_model_spec(pred, SM), SM), back(_model_spec(pred, SS), SS)
    out["mid_side"] = np.stack([m + s, m - s])
    out["linked"] = stemdae.process(xs, fe.sr, model=pred)  # what `stemdae process` ships (render.py)
    rms = np.sqrt((np.abs(SL) ** 2 + np.abs(SR) ** 2) / 2).astype(np.float32)
    g = np.divide(pred.predict_magnitude(rms.T).T, rms, out=np.zeros(rms.shape, np.float32), where=rms > 0)
    out["linked_rms"] = np.stack([back(np.abs(SL) * g, SL), back(np.abs(SR) * g, SR)])
    return out


def scores(y: np.ndarray, t: np.ndarray, fe) -> dict[str, float]:
    kw = dict(n_fft=fe.n_fft, hop=fe.hop)
    mags = [np.abs(stft(c, **kw)).T for c in (*y, *t)]
    lsd = np.mean([log_spectral_distance(mags[i], mags[i + 2]) for i in (0, 1)])
    e = [np.sum(m**2, axis=1) + 1e-12 for m in mags]
    ild_y, ild_t = 10 * np.log10(e[0] / e[1]), 10 * np.log10(e[2] / e[3])
    w = e[2] + e[3]
    return {"lsd_db": float(lsd), "ild_err_db": float(np.sum(np.abs(ild_y - ild_t) * w) / np.sum(w))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", type=Path, required=True, help="work/crossval of a project that ran `stemdae crossval`")
    ap.add_argument("--name", default="log_ratio", help="the crossval run's --name")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0, help="the models' training.seed (the validation draw)")
    ap.add_argument("--out", type=Path, default=Path("stereo.json"))
    a = ap.parse_args()
    rows = []
    for fold in range(a.folds):
        work = a.cv / "common" / f"k{a.folds}-split0" / f"fold{fold}" / "work"
        rows += fold_rows(work, a.cv / a.name / f"fold{fold}" / f"seed{a.seed}" / "models", a)
    report(pd.DataFrame(rows), a.out)


def fold_rows(work: Path, models: Path, a: argparse.Namespace) -> list[dict]:
    pairs = pd.read_csv(work / "pairs.csv")
    rows = []
    for group in sorted(pairs["group"].unique()):
        train = pairs[(pairs["group"] == group) & (pairs["split"] == "train")]
        _, val = split_songs(train, val_fraction=a.val_fraction, seed=a.seed)
        pred = load_model(str(models / group))
        fe = pred.frontend
        for _, r in train[train["song"].isin(val)].iterrows():
            x, s = read_segment(segment_path(work / "segments", r["pair_id"]))
            for scene, (xs, ts) in scenes(x, s, fe.sr).items():
                gain = 10 ** (loudness_gain_db(ArraySource(xs, fe.sr), fe)[0] / 20)
                for mode, y in render_modes(xs, pred, fe, gain).items():
                    rows.append({"group": group, "song": r["song"], "pair": r["pair_id"], "scene": scene,
                                 "mode": mode, **scores(y, gain * ts, fe)})
            print(work.parent.name, group, r["pair_id"], flush=True)
    return rows


def report(df: pd.DataFrame, out: Path) -> None:
    # per song first (songs are the unit), then mean and 95 % interval over songs
    per_song = df.groupby(["scene", "mode", "song"])[["lsd_db", "ild_err_db"]].mean().reset_index()
    summary = {}
    for (scene, mode), d in per_song.groupby(["scene", "mode"]):
        summary.setdefault(scene, {})[mode] = {m: mean_ci(d[m].tolist()) for m in ("lsd_db", "ild_err_db")}
    wins = {}
    for scene, d in per_song.groupby("scene"):
        p = d.pivot(index="song", columns="mode", values="lsd_db")
        wins[scene] = {m: int((p[m] <= p.min(axis=1) + 1e-12).sum()) for m in MODES}
    res = {"songs": sorted(per_song["song"].unique()), "n_pairs": int(df["pair"].nunique()),
           "summary": summary, "best_lsd_per_song": wins}
    out.write_text(json.dumps(res, indent=1))
    print(f"{len(res['songs'])} validation songs, {res['n_pairs']} pairs")
    print("| scene | mode | LSD dB (95 % CI over songs) | level-difference error dB | best LSD on songs |")
    print("|---|---|---|---|---|")
    for scene, modes in summary.items():
        for mode, m in modes.items():
            f = lambda v: f"{v['mean']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]"  # noqa: E731
            print(f"| {scene} | {mode} | {f(m['lsd_db'])} | {f(m['ild_err_db'])} | {wins[scene][mode]} |")


if __name__ == "__main__":
    main()
