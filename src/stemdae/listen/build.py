"""``stemdae listen build``: a MUSHRA test from held-out songs.

One trial per test-split pair (at most ``trials_per_group`` per group, drawn
with the seed). The reference is the processed stem; the conditions are the
hidden reference (the very same samples), the BS.1534-3 low anchor (reference
low-passed at 3.5 kHz) and mid anchor (7 kHz), the raw track, static EQ + gain
(``baselines.py``), the DAE (``stemdae.process``) and every other model family
found for the group (``models/<group>-<family>/model.pt``, or given
explicitly). Each condition is computed on the pair's whole window (the
``segments`` stage's 10 s), then an excerpt of ``excerpt_s`` at a seeded
offset is cut, faded in and out (raised cosine), and every condition of the
trial is loudness-matched (BS.1770, :func:`stemdae.dsp.loudness.normalize_loudness`)
to one common level: ``target_lufs``, or lower when a condition's peak would
otherwise pass ``peak_ceiling_dbfs`` (never clipped).

Outputs in the test folder: ``audio/<trial>/<condition>.wav`` (24-bit PCM),
``manifest.json`` (trials, files, loudness, model versions, seed) and
``webmushra.yaml`` (the same test for webMUSHRA).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stemdae import baselines
from stemdae.config import Params, Paths
from stemdae.dsp.loudness import integrated_lufs, normalize_loudness
from stemdae.dsp.stft import istft, magnitude_phase
from stemdae.errors import AudioError, ConfigError, StemdaeError
from stemdae.io import read_json, write_json, write_text, write_wav
from stemdae.segfile import read_segment, segment_path
from stemdae.listen import ANCHORS, BASELINE, HIDDEN_REFERENCE, MANIFEST
from stemdae.summary import Summary

log = logging.getLogger(__name__)

FORMAT = "stemdae-listen-1"
SUBTYPE = "PCM_24"
FIR_TAPS = 2047  # anchors: about 0.1 kHz transition band, > 80 dB stop band at 44.1 kHz


@dataclass(frozen=True)
class BuildSettings:
    """What ``stemdae listen build`` takes besides params and paths."""

    out_dir: Path
    excerpt_s: float = 5.0
    fade_s: float = 0.05
    seed: int = 0
    trials_per_group: int = 2
    target_lufs: float = -23.0
    peak_ceiling_dbfs: float = -1.0
    groups: tuple[str, ...] = ()
    models: dict[str, str] = field(default_factory=dict)  # "<group>:<family>" -> source
    webmushra_prefix: str = "configs/resources/stemdae/"


# ------------------------------------------------------------------ pure DSP


def lowpass(x: np.ndarray, sr: int, *, cutoff_hz: float) -> np.ndarray:
    """Zero-phase linear-phase FIR low-pass (Kaiser window), same length as ``x`` (float64)."""
    from scipy.signal import fftconvolve, firwin

    if not 0 < cutoff_hz < sr / 2:
        raise ConfigError(f"anchor cutoff {cutoff_hz} Hz: expected between 0 and {sr / 2} Hz")
    taps = firwin(FIR_TAPS, cutoff_hz, window=("kaiser", 9.0), fs=sr)
    return fftconvolve(np.asarray(x, np.float64), taps, mode="same")


def fade(x: np.ndarray, sr: int, *, fade_s: float) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of ``fade_s`` each (float64 copy)."""
    y = np.array(x, dtype=np.float64)
    n = min(int(round(fade_s * sr)), y.size // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
    return y


def common_level(excerpts: dict[str, np.ndarray], sr: int, *, target_lufs: float,
                 peak_ceiling_dbfs: float) -> float:
    """The loudest common level (<= ``target_lufs``) at which no excerpt's peak passes the ceiling.

    Raises
    ------
    AudioError
        A silent excerpt (no loudness to match).
    """
    level = target_lufs
    for name, x in excerpts.items():
        lufs = integrated_lufs(x, sr)
        if not math.isfinite(lufs):
            raise AudioError(f"condition {name}: silent excerpt, cannot be loudness-matched")
        peak = float(np.max(np.abs(x)))
        level = min(level, peak_ceiling_dbfs - 20 * math.log10(peak) + lufs - 0.05)
    return level


def match_loudness(excerpts: dict[str, np.ndarray], sr: int, *, target_lufs: float,
                   peak_ceiling_dbfs: float) -> tuple[dict[str, np.ndarray], float]:
    """Every excerpt at one common integrated loudness, peaks under the ceiling; ``(out, level)``."""
    level = common_level(excerpts, sr, target_lufs=target_lufs, peak_ceiling_dbfs=peak_ceiling_dbfs)
    out = {k: normalize_loudness(x, sr, target_lufs=level, peak_ceiling_dbfs=peak_ceiling_dbfs)[0]
           for k, x in excerpts.items()}
    return out, level


# ------------------------------------------------------------------ conditions


def static_eq_audio(raw: np.ndarray, stem: np.ndarray, eq: baselines.StaticEQ, *, sr: int, n_fft: int,
                    hop: int) -> np.ndarray:
    """Static EQ + gain on the raw window's magnitudes, rebuilt with the raw phase (as ``evaluate``)."""
    mag, phase = magnitude_phase(raw, n_fft=n_fft, hop=hop)
    stem_mag = magnitude_phase(stem, n_fft=n_fft, hop=hop)[0]
    out = baselines.static_eq_gain(mag.T, eq, stem_mag.T, sr=sr, n_fft=n_fft)
    return istft(out.T, phase, n_fft=n_fft, hop=hop, length=raw.size)


def fit_group_eq(group: str, params: Params, paths: Paths) -> baselines.StaticEQ:
    """The group's static EQ, fitted on its training cache exactly as ``evaluate`` does."""
    from stemdae.featcache import open_cache

    cache = open_cache(paths.features_group("train", group), n_bins=params.features.n_bins)
    return baselines.fit_static_eq(cache.raw, cache.stem, cache.index)


def model_sources(group: str, paths: Paths, explicit: dict[str, str]) -> dict[str, str]:
    """``family -> source``: ``dae`` = ``models/<group>``, others ``models/<group>-<family>``, then ``explicit``."""
    found: dict[str, str] = {}
    if (paths.model_dir(group) / "model.pt").is_file():
        found["dae"] = str(paths.model_dir(group))
    for pt in sorted(paths.models_dir.glob(f"{group}-*/model.pt")):
        found[pt.parent.name[len(group) + 1:]] = str(pt.parent)
    for key, source in explicit.items():
        g, _, family = key.partition(":")
        if g == group:
            found[family or "dae"] = source
    return found


def model_version(source: str) -> dict[str, Any]:
    """Where a model came from: its source, the file's SHA-256 and ``mlflow.json`` (run, registered version)."""
    info: dict[str, Any] = {"source": source}
    p = Path(source)
    pt = p / "model.pt" if p.is_dir() else p
    if pt.is_file():
        info["sha256"] = hashlib.sha256(pt.read_bytes()).hexdigest()
        run = pt.parent / "mlflow.json"
        if run.is_file():
            try:
                d = read_json(run)
                info.update({k: d.get(k) for k in ("run_id", "model_uri", "registered_name", "registered_version")})
            except StemdaeError as err:
                info["mlflow_json_error"] = str(err)
    return info


def conditions_for(raw: np.ndarray, stem: np.ndarray, *, eq: baselines.StaticEQ | None, models: dict[str, str],
                   params: Params, paths: Paths, problems: list[str]) -> dict[str, np.ndarray]:
    """Every condition of one trial over the pair's whole window, reference first (float64, mono)."""
    import stemdae

    sr, f = params.segments.sr, params.features
    out = {"reference": np.asarray(stem, np.float64)}
    out.update({name: lowpass(stem, sr, cutoff_hz=hz) for name, hz in ANCHORS.items()})
    out["raw"] = np.asarray(raw, np.float64)
    if eq is not None:
        out[BASELINE] = static_eq_audio(raw, stem, eq, sr=sr, n_fft=f.n_fft, hop=f.hop)
    for family, source in models.items():
        try:
            out[family] = np.asarray(stemdae.process(raw, sr, model=source, params=params, paths=paths), np.float64)
        except StemdaeError as err:
            problems.append(f"{source}: model {family!r} failed ({err}); condition left out")
    return out


# ------------------------------------------------------------------ trials


def test_pairs(group: str, paths: Paths) -> pd.DataFrame:
    """Held-out pairs of ``group`` (split ``test`` in ``work/pairs.csv``)."""
    try:
        pairs = pd.read_csv(paths.pairs_csv, dtype=str)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{paths.pairs_csv}: cannot read the pairs table ({err}); run `stemdae pairs`") from None
    missing = {"pair_id", "group", "split"} - set(pairs.columns)
    if missing:
        raise ConfigError(f"{paths.pairs_csv}: missing columns {sorted(missing)}")
    return pairs[(pairs["group"] == group) & (pairs["split"] == "test")].reset_index(drop=True)


def excerpt_start(n: int, excerpt_n: int, *, seed: int, pair_id: str) -> int:
    """A seeded offset (samples) of an ``excerpt_n`` excerpt inside an ``n``-sample window."""
    if excerpt_n > n:
        raise ConfigError(f"excerpt_s: {excerpt_n} samples asked, the pair {pair_id} window has only {n}")
    rng = np.random.default_rng([seed, zlib.crc32(pair_id.encode())])
    return int(rng.integers(0, n - excerpt_n + 1))


def make_trial(trial_id: str, row: pd.Series, seg: np.ndarray, *, eq, models: dict[str, str], st: BuildSettings,
               params: Params, paths: Paths, problems: list[str]) -> dict[str, Any]:
    """Render one trial's files under ``st.out_dir`` and return its manifest entry."""
    sr = params.segments.sr
    raw, stem = np.asarray(seg[0], np.float64), np.asarray(seg[1], np.float64)
    full = conditions_for(raw, stem, eq=eq, models=models, params=params, paths=paths, problems=problems)
    n = int(round(st.excerpt_s * sr))
    a = excerpt_start(stem.size, n, seed=st.seed, pair_id=str(row["pair_id"]))
    cut = {k: fade(x[a:a + n], sr, fade_s=st.fade_s) for k, x in full.items()}
    matched, level = match_loudness(cut, sr, target_lufs=st.target_lufs, peak_ceiling_dbfs=st.peak_ceiling_dbfs)
    matched[HIDDEN_REFERENCE] = matched["reference"]  # the same samples: bit-identical files
    files = {}
    for name, x in matched.items():
        rel = f"audio/{trial_id}/{name}.wav"
        write_wav(st.out_dir / rel, x, sr, subtype=SUBTYPE)
        files[name] = rel
    return {"id": trial_id, "group": str(row["group"]), "pair_id": str(row["pair_id"]),
            "song": str(row.get("song", "")), "instrument": str(row.get("instrument", "")),
            "start_s": a / sr, "duration_s": n / sr, "level_lufs": level,
            "reference": files.pop("reference"), "conditions": files,
            "lufs": {k: integrated_lufs(x, sr) for k, x in matched.items()},
            "peak_dbfs": {k: 20 * math.log10(max(float(np.max(np.abs(x))), 1e-12)) for k, x in matched.items()}}


def build_group(group: str, st: BuildSettings, params: Params, paths: Paths, summary: Summary,
                manifest: dict[str, Any]) -> None:
    pairs = test_pairs(group, paths)
    if pairs.empty:
        summary.skip(group, f"{paths.pairs_csv}: no test-split pair of group {group!r}")
        return
    order = np.random.default_rng([st.seed, zlib.crc32(group.encode())]).permutation(len(pairs))
    eq = None
    try:
        eq = fit_group_eq(group, params, paths)
    except (StemdaeError, OSError, ValueError) as err:
        summary.skip(group, f"{paths.features_group('train', group)}: static EQ not fitted ({err}); "
                            f"condition {BASELINE} left out")
    models = model_sources(group, paths, st.models)
    manifest["models"][group] = {fam: model_version(src) for fam, src in models.items()}
    k = 0
    for i in order:
        if k >= st.trials_per_group:
            break
        row = pairs.iloc[int(i)]
        seg_path = segment_path(paths.segments_dir, row["pair_id"])
        problems: list[str] = []
        try:
            seg = read_segment(seg_path)
            trial = make_trial(f"{group}-{k + 1:02d}", row, seg, eq=eq, models=models, st=st, params=params,
                               paths=paths, problems=problems)
        except (StemdaeError, OSError, ValueError) as err:
            summary.skip(group, f"{seg_path}: trial not built ({err})")
            continue
        for p in problems:
            summary.skip(group, p)
        manifest["trials"].append(trial)
        k += 1


def run(st: BuildSettings, params: Params, paths: Paths) -> Summary:
    """Build the test in ``st.out_dir``: audio, ``manifest.json``, ``webmushra.yaml``.

    Raises
    ------
    ConfigError
        Bad settings, an unknown group, or no trial could be built.
    """
    summary = Summary("listen-build")
    if not 0 < st.fade_s < st.excerpt_s / 2:
        raise ConfigError(f"fade_s: expected between 0 and half of excerpt_s ({st.excerpt_s} s), found {st.fade_s}")
    groups = st.groups or tuple(params.groups)
    unknown = [g for g in groups if g not in params.groups]
    if unknown:
        raise ConfigError(f"groups: {unknown} not in params.yaml groups {sorted(params.groups)}")
    log.info("listen build: groups %s -> %s", ", ".join(groups), st.out_dir)
    manifest: dict[str, Any] = {
        "format": FORMAT, "name": st.out_dir.resolve().name, "created_unix": time.time(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(st).items()},
        "sr": params.segments.sr, "baseline": BASELINE, "hidden_reference": HIDDEN_REFERENCE,
        "anchors": ANCHORS, "models": {}, "trials": []}
    for group in groups:
        build_group(group, st, params, paths, summary, manifest)
    if not manifest["trials"]:
        raise ConfigError(f"{paths.pairs_csv}: no trial could be built for groups {list(groups)} "
                          f"({'; '.join(s.text() for s in summary.skips) or 'no test pairs'})")
    manifest["conditions"] = sorted({c for t in manifest["trials"] for c in t["conditions"]})
    manifest["training_trial"] = manifest["trials"][0]["id"]
    write_json(st.out_dir / MANIFEST, manifest)
    from stemdae.listen.webmushra import to_yaml

    write_text(st.out_dir / "webmushra.yaml", to_yaml(manifest, prefix=st.webmushra_prefix))
    summary.counts.update(trials=len(manifest["trials"]), conditions=len(manifest["conditions"]))
    summary.outputs += [str(st.out_dir / MANIFEST), str(st.out_dir / "webmushra.yaml")]
    return summary.done()
