"""Ground-truth chain check: which of the true effects does the output reproduce?

The demo corpus writes ``data/<Song>/<Song>_CHAINS.json`` with the effect chain
that turned each raw into its stem. For test segments whose chain is known,
one measure per effect type compares the output with the stem, both relative to
the raw (lower is better; the identity baseline's value is what doing nothing
costs):

| effect type | measure |
|---|---|
| highpass, lowpass, peak, low_shelf, high_shelf | ``band_gain_err_db``: mean over octave bands (31.5 Hz-16 kHz, bands within 60 dB of the raw's loudest band) of ``|G_out(b) - G_stem(b)|``, ``G_x(b) = 10·log10(E_x(b) / E_raw(b))`` |
| compressor | ``level_slope_err``: ``|s_out - s_stem|``, ``s_x`` = least-squares slope of the frame level of x (dB, blocks of ``hop``) against the raw's frame level, frames within 40 dB of the raw's 95th-percentile level |
| distortion | ``crest_err_db``: ``|crest(out) - crest(stem)|`` (peak/RMS, dB) |
| reverb | ``tail_level_err_db``: ``|T_out - T_stem|``, ``T_x`` = mean level of x (dB re its 95th-percentile frame level) over the frames where the raw is more than 30 dB below its own 95th percentile, i.e. after notes end; NaN when the raw has no such frames |
| gain | not measured: loudness normalisation of raw and stem removes it |

A frame-wise model sees one raw frame at a time: a static spectral change (EQ)
and a level-dependent gain (compression) are functions of that frame, a reverb
tail after a note ends is not (the raw frame there is near-silent and carries no
memory of the note). The measures are deliberately simple; read them as
"fraction of the identity's error removed", not as perceptual scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MEASURE_FOR_EFFECT = {
    "highpass": "band_gain_err_db",
    "lowpass": "band_gain_err_db",
    "peak": "band_gain_err_db",
    "low_shelf": "band_gain_err_db",
    "high_shelf": "band_gain_err_db",
    "compressor": "level_slope_err",
    "distortion": "crest_err_db",
    "reverb": "tail_level_err_db",
}
OCTAVE_CENTRES_HZ = 31.25 * 2.0 ** np.arange(10)


def load_chains(corpus_root: Path, song: str) -> dict[str, Any] | None:
    """The song's ``<Song>_CHAINS.json`` as a dict, or None when absent or unreadable."""
    path = Path(corpus_root) / song / f"{song}_CHAINS.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable chain file (%s)", path, err)
        return None
    return data if isinstance(data, dict) else None


def chain_for_stem(chains: dict[str, Any] | None, stem_id: Any) -> list[dict[str, Any]] | None:
    """The chain of one stem; ``stem_id`` may be ``3``, ``"03"`` or ``"S03"``."""
    if not chains:
        return None
    keys = [str(stem_id)]
    try:
        keys.append(f"S{int(str(stem_id).lstrip('Ss')):02d}")
    except ValueError:
        pass
    for key in keys:
        entry = chains.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("chain"), list):
            return entry["chain"]
    return None


def effect_types(chain: list[dict[str, Any]]) -> list[str]:
    """Distinct effect types of a chain, in order."""
    seen: list[str] = []
    for fx in chain:
        t = str(fx.get("type", ""))
        if t and t not in seen:
            seen.append(t)
    return seen


def _frame_levels_db(x: np.ndarray, hop: int) -> np.ndarray:
    n = x.size // hop
    blocks = np.asarray(x[: n * hop], dtype=np.float64).reshape(n, hop)
    return 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-12)


def _octave_energy(x: np.ndarray, sr: int) -> np.ndarray:
    spec = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    lo, hi = OCTAVE_CENTRES_HZ / np.sqrt(2), OCTAVE_CENTRES_HZ * np.sqrt(2)
    return np.array([spec[(freqs >= a) & (freqs < b)].sum() for a, b in zip(lo, hi)])


def chain_measures(raw: np.ndarray, stem: np.ndarray, out: np.ndarray, *, sr: int, hop: int) -> dict[str, float]:
    """All four measures for one segment (see the module docstring); waveforms ``(samples,)``."""
    n = min(raw.size, stem.size, out.size)
    raw, stem, out = raw[:n], stem[:n], out[:n]
    res: dict[str, float] = {}

    e_raw, e_stem, e_out = (_octave_energy(x, sr) for x in (raw, stem, out))
    keep = e_raw > e_raw.max() * 1e-6
    g_stem = 10 * np.log10((e_stem[keep] + 1e-20) / e_raw[keep])
    g_out = 10 * np.log10((e_out[keep] + 1e-20) / e_raw[keep])
    res["band_gain_err_db"] = float(np.mean(np.abs(g_out - g_stem))) if keep.any() else float("nan")

    l_raw, l_stem, l_out = (_frame_levels_db(x, hop) for x in (raw, stem, out))
    ref = np.percentile(l_raw, 95)
    active = l_raw > ref - 40.0
    if active.sum() >= 3 and np.ptp(l_raw[active]) > 1.0:
        s_stem = np.polyfit(l_raw[active], l_stem[active], 1)[0]
        s_out = np.polyfit(l_raw[active], l_out[active], 1)[0]
        res["level_slope_err"] = float(abs(s_out - s_stem))
    else:
        res["level_slope_err"] = float("nan")

    def crest(x: np.ndarray) -> float:
        rms = np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))
        return float(20 * np.log10(np.max(np.abs(x)) / rms)) if rms > 0 else 0.0

    res["crest_err_db"] = abs(crest(out) - crest(stem))

    quiet = l_raw < ref - 30.0
    if quiet.any():
        t_stem = np.mean(l_stem[quiet]) - np.percentile(l_stem, 95)
        t_out = np.mean(l_out[quiet]) - np.percentile(l_out, 95)
        res["tail_level_err_db"] = float(abs(t_out - t_stem))
    else:
        res["tail_level_err_db"] = float("nan")
    return res


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Per effect type and method: segments and the mean of its measure.

    When any segment has a DAE record, only segments with one are kept, so every
    method is averaged over the same segments.

    ``records`` rows: ``group, pair_id, method, effects`` (list of types) and
    the four measures. Returns columns ``effect, measure, method, n, mean``.
    """
    with_dae = {(r.get("group"), r["pair_id"]) for r in records if r["method"] == "dae"}
    if with_dae:  # compare every method on the same segments: those the DAE was evaluated on
        records = [r for r in records if (r.get("group"), r["pair_id"]) in with_dae]
    rows = []
    for rec in records:
        for fx in rec["effects"]:
            measure = MEASURE_FOR_EFFECT.get(fx)
            if measure is None or not np.isfinite(rec.get(measure, np.nan)):
                continue
            rows.append({"effect": fx, "measure": measure, "method": rec["method"], "value": rec[measure]})
    if not rows:
        return pd.DataFrame(columns=["effect", "measure", "method", "n", "mean"])
    df = pd.DataFrame(rows)
    return df.groupby(["effect", "measure", "method"], as_index=False).agg(n=("value", "size"), mean=("value", "mean"))


def markdown(table: pd.DataFrame, methods: list[str]) -> str:
    """The chain check as a markdown table, with the share of the identity's error the DAE removes."""
    if table.empty:
        return "No test segment has a known effect chain (`<Song>_CHAINS.json`); chain check skipped.\n"
    wide = table.pivot_table(index=["effect", "measure"], columns="method", values="mean")
    counts = table.groupby(["effect", "measure"])["n"].max()
    cols = [m for m in methods if m in wide.columns]
    head = "| effect | measure | segments | " + " | ".join(cols) + " | DAE removes |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for (fx, measure), row in wide.iterrows():
        vals = " | ".join(f"{row[m]:.3f}" for m in cols)
        learned = "n/a"
        if "dae" in row and "identity" in row and row["identity"] > 0 and np.isfinite(row["dae"]):
            learned = f"{100 * (1 - row['dae'] / row['identity']):.0f} %"
        lines.append(f"| {fx} | {measure} | {int(counts[(fx, measure)])} | {vals} | {learned} |")
    return "\n".join(lines) + "\n"
