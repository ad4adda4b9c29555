"""The demo corpus's "engineer": per-group effect chains, drawn, stored as JSON, applied with pedalboard.

A chain is a list of plain dicts (the ``chain`` entry of ``<Song>_CHAINS.json``), applied in
order by :func:`apply_chain`. Step types and their keys (all floats unless said):

=============  ===============================================================================
``highpass``   ``cutoff_hz``, ``order`` (int, cascaded first-order 6 dB/oct sections; default 1)
``lowpass``    ``cutoff_hz``, ``order`` (as above)
``low_shelf``  ``freq_hz``, ``gain_db``, ``q`` (default 0.7071)
``high_shelf`` ``freq_hz``, ``gain_db``, ``q``
``peak``       ``freq_hz``, ``gain_db``, ``q``
``compressor`` ``threshold_db`` (dBFS), ``ratio``, ``attack_ms``, ``release_ms``
``distortion`` ``drive_db`` (tanh waveshaper)
``reverb``     ``room_size``, ``damping``, ``wet_level``, ``dry_level``, ``width`` (0..1)
``gain``       ``gain_db``
=============  ===============================================================================

A stem with several raw tracks is ``apply_chain(blend_raws(raws, raw_mix_db), sr, chain)``.

Styles: each group has a mean chain (order: high-pass, [drive, cabinet low-pass], shelves
and bells, compressor, [reverb], gain); a song's engineer draws every value around that
mean with a moderate spread (:func:`draw_chain`). The compressor threshold and the output
gain depend on the signal, so they are drawn relative to it (``depth_db``, ``target_db``)
and resolved by the renderer (:func:`resolve_threshold`, :func:`loud_level_db`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pedalboard as pb

from stemdae.errors import CorpusError

_Q = 0.7071

#: Keys each step type accepts: required, then optional with defaults.
STEP_KEYS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "highpass": (("cutoff_hz",), {"order": 1}),
    "lowpass": (("cutoff_hz",), {"order": 1}),
    "low_shelf": (("freq_hz", "gain_db"), {"q": _Q}),
    "high_shelf": (("freq_hz", "gain_db"), {"q": _Q}),
    "peak": (("freq_hz", "gain_db"), {"q": _Q}),
    "compressor": (("threshold_db", "ratio"), {"attack_ms": 10.0, "release_ms": 100.0}),
    "distortion": (("drive_db",), {}),
    "reverb": ((), {"room_size": 0.5, "damping": 0.5, "wet_level": 0.2, "dry_level": 0.8, "width": 1.0}),
    "gain": (("gain_db",), {}),
}


def _step(i: int, step: Mapping) -> tuple[str, dict[str, float]]:
    if not isinstance(step, Mapping) or "type" not in step:
        raise CorpusError(f"chain step {i}: expected a mapping with a 'type', found {step!r}")
    kind = step["type"]
    if kind not in STEP_KEYS:
        raise CorpusError(f"chain step {i}: unknown type {kind!r}, expected one of {sorted(STEP_KEYS)}")
    required, optional = STEP_KEYS[kind]
    missing = [k for k in required if k not in step]
    unknown = sorted(set(step) - {"type", *required, *optional})
    if missing or unknown:
        raise CorpusError(f"chain step {i} ({kind}): missing keys {missing}, unknown keys {unknown}")
    values = {**optional, **{k: v for k, v in step.items() if k != "type"}}
    for k, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            raise CorpusError(f"chain step {i} ({kind}): {k} must be a finite number, found {v!r}")
    return kind, values


def _plugins(kind: str, v: dict[str, float]) -> list:
    if kind in ("highpass", "lowpass"):
        cls = pb.HighpassFilter if kind == "highpass" else pb.LowpassFilter
        return [cls(cutoff_frequency_hz=v["cutoff_hz"]) for _ in range(max(1, int(v["order"])))]
    if kind in ("low_shelf", "high_shelf", "peak"):
        cls = {"low_shelf": pb.LowShelfFilter, "high_shelf": pb.HighShelfFilter, "peak": pb.PeakFilter}[kind]
        return [cls(cutoff_frequency_hz=v["freq_hz"], gain_db=v["gain_db"], q=v["q"])]
    if kind == "compressor":
        return [pb.Compressor(threshold_db=v["threshold_db"], ratio=v["ratio"],
                              attack_ms=v["attack_ms"], release_ms=v["release_ms"])]
    if kind == "distortion":
        return [pb.Distortion(drive_db=v["drive_db"])]
    if kind == "reverb":
        return [pb.Reverb(room_size=v["room_size"], damping=v["damping"], wet_level=v["wet_level"],
                          dry_level=v["dry_level"], width=v["width"])]
    return [pb.Gain(gain_db=v["gain_db"])]


def apply_chain(audio: np.ndarray, sr: int, chain: Sequence[Mapping]) -> np.ndarray:
    """Apply an effect chain (the JSON form, see the module docstring) with pedalboard.

    Parameters
    ----------
    audio
        Shape ``(samples,)`` or ``(channels, samples)``, finite.
    sr
        Sample rate in Hz.
    chain
        Steps applied in order; an empty chain returns a float32 copy.

    Returns
    -------
    np.ndarray
        float32, same shape as ``audio`` (reverb tails past the end are cut).

    Raises
    ------
    CorpusError
        An unknown step type, a missing or unknown key, a non-finite value.
    ValueError
        Audio that is not 1-D/2-D or not finite.

    Examples
    --------
    >>> x = np.zeros(4410, dtype=np.float32); x[0] = 1.0
    >>> y = apply_chain(x, 44100, [{"type": "gain", "gain_db": -6.0}])
    >>> round(float(y[0]), 3)
    0.501
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim not in (1, 2) or x.size == 0:
        raise ValueError(f"audio: expected shape (samples,) or (channels, samples), found {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio: contains NaN or infinite samples")
    plugins = [p for i, s in enumerate(chain) for p in _plugins(*_step(i, s))]
    if not plugins:
        return x.copy()
    y = pb.Pedalboard(plugins)(x[None, :] if x.ndim == 1 else x, float(sr), reset=True)
    return np.ascontiguousarray(y[0] if x.ndim == 1 else y, dtype=np.float32)


def blend_raws(raws: Sequence[np.ndarray], gains_db: Sequence[float]) -> np.ndarray:
    """``sum(raw * 10**(gain_db/20))`` in float64, returned as float32, shape ``(samples,)``.

    Raw tracks of different lengths are zero-padded to the longest.
    """
    if len(raws) != len(gains_db) or not raws:
        raise ValueError(f"blend_raws: {len(raws)} raws but {len(gains_db)} gains")
    n = max(len(r) for r in raws)
    out = np.zeros(n, dtype=np.float64)
    for r, g in zip(raws, gains_db):
        out[: len(r)] += np.asarray(r, dtype=np.float64) * 10.0 ** (float(g) / 20.0)
    return out.astype(np.float32)


def loud_level_db(x: np.ndarray, sr: int, *, percentile: float = 95.0, frame_s: float = 0.05) -> float:
    """The level of the loud passages: a high percentile of 50 ms frame RMS, in dBFS."""
    hop = max(1, int(frame_s * sr))
    n = len(x) // hop
    if n == 0:
        return -120.0
    frames = np.asarray(x[: n * hop], dtype=np.float64).reshape(n, hop)
    rms_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return float(np.percentile(rms_db, percentile))


# --------------------------------------------------------------------------- styles

def _r(x: float, nd: int = 2) -> float:
    return float(round(float(x), nd))


def _around(rng: np.random.Generator, mean: float, spread: float, lo: float, hi: float) -> float:
    return float(np.clip(mean + spread * rng.standard_normal(), lo, hi))


def _freq(rng: np.random.Generator, mean_hz: float, rel: float = 0.15) -> float:
    return _r(mean_hz * float(np.exp(rel * np.clip(rng.standard_normal(), -2.5, 2.5))), 1)


#: Per group: high-pass, EQ (type, freq, gain), compressor (depth below the loud level,
#: ratio, attack, release), reverb (room, wet) or None, and the loud-passage target level.
STYLES: dict[str, dict] = {
    "bass": dict(hp=38.0, eq=[("low_shelf", 90.0, 3.0), ("peak", 320.0, -3.5), ("peak", 1000.0, 3.0),
                              ("high_shelf", 5000.0, -2.0)],
                 comp=(11.0, 4.5, 8.0, 120.0), reverb=None, target=-17.0),
    "guitar": dict(hp=95.0, eq=[("low_shelf", 180.0, -2.0), ("peak", 350.0, -3.0), ("peak", 3000.0, 3.5),
                                ("high_shelf", 7000.0, 2.0)],
                   comp=(9.0, 3.0, 15.0, 160.0), reverb=(0.35, 0.08), target=-20.0),
    "vocal": dict(hp=110.0, eq=[("low_shelf", 200.0, -2.0), ("peak", 400.0, -3.0), ("peak", 3200.0, 3.5),
                                ("high_shelf", 10000.0, 4.0)],
                  comp=(13.0, 4.0, 4.0, 90.0), reverb=(0.55, 0.2), target=-16.0),
    "keys": dict(hp=55.0, eq=[("low_shelf", 150.0, -2.5), ("peak", 600.0, -2.0), ("peak", 2500.0, 2.5),
                              ("high_shelf", 8000.0, 3.0)],
                 comp=(8.0, 2.5, 20.0, 200.0), reverb=(0.45, 0.12), target=-20.0),
    None: dict(hp=40.0, eq=[("low_shelf", 100.0, 1.0), ("peak", 500.0, -2.0), ("high_shelf", 8000.0, 1.5)],
               comp=(6.0, 2.5, 10.0, 120.0), reverb=None, target=-19.0),
}


def draw_chain(group: str | None, instrument: str, rng: np.random.Generator) -> dict:
    """Draw one engineer's chain for a stem, around the group's style.

    Returns
    -------
    dict
        ``{"chain": [...], "depth_db": float, "target_db": float}``; the chain's compressor
        has ``threshold_db`` 0.0 and its gain step ``gain_db`` 0.0 until resolved against the
        signal (see :func:`resolve_threshold`).
    """
    style = STYLES[group if group in STYLES else None]
    chain: list[dict] = [{"type": "highpass", "cutoff_hz": _freq(rng, style["hp"], 0.2), "order": 2}]
    if instrument == "distorted electric guitar":
        chain.append({"type": "distortion", "drive_db": _r(_around(rng, 12.0, 3.0, 5.0, 22.0))})
        chain.append({"type": "lowpass", "cutoff_hz": _freq(rng, 6500.0, 0.15), "order": 2})
    for kind, f, g in style["eq"]:
        step = {"type": kind, "freq_hz": _freq(rng, f), "gain_db": _r(_around(rng, g, 1.2, -9, 9))}
        step["q"] = _r(_around(rng, 1.0, 0.2, 0.5, 2.0)) if kind == "peak" else _Q
        chain.append(step)
    depth, ratio, attack, release = style["comp"]
    chain.append({"type": "compressor", "threshold_db": 0.0,
                  "ratio": _r(_around(rng, ratio, 0.6, 1.8, 10.0)),
                  "attack_ms": _r(_around(rng, attack, attack * 0.25, 0.5, 60.0)),
                  "release_ms": _r(_around(rng, release, release * 0.2, 30.0, 600.0))})
    if style["reverb"] is not None:
        room, wet = style["reverb"]
        chain.append({"type": "reverb", "room_size": _r(_around(rng, room, 0.08, 0.1, 0.9), 3),
                      "damping": _r(_around(rng, 0.5, 0.1, 0.1, 0.9), 3),
                      "wet_level": _r(_around(rng, wet, wet * 0.2, 0.01, 0.5), 3),
                      "dry_level": _r(_around(rng, 0.85, 0.05, 0.6, 1.0), 3), "width": 1.0})
    chain.append({"type": "gain", "gain_db": 0.0})
    return {"chain": chain, "depth_db": _r(_around(rng, depth, 1.5, 4.0, 20.0)),
            "target_db": _r(_around(rng, style["target"], 1.5, -30.0, -10.0))}


def pre_compressor(chain: Sequence[Mapping]) -> list[dict]:
    """The steps before the compressor (where its threshold is measured)."""
    out = []
    for step in chain:
        if step["type"] == "compressor":
            break
        out.append(dict(step))
    return out


def with_values(chain: Sequence[Mapping], kind: str, **values: float) -> list[dict]:
    """A copy of ``chain`` whose steps of type ``kind`` get ``values`` (rounded to 0.01)."""
    return [{**s, **{k: _r(v) for k, v in values.items()}} if s["type"] == kind else dict(s) for s in chain]


def resolve_threshold(chain: Sequence[Mapping], audio: np.ndarray, sr: int, depth_db: float) -> list[dict]:
    """Set the compressor threshold ``depth_db`` below the loud level at its input."""
    level = loud_level_db(apply_chain(audio, sr, pre_compressor(chain)), sr)
    return with_values(chain, "compressor", threshold_db=min(level - depth_db, -1.0))


__all__ = ["STEP_KEYS", "STYLES", "apply_chain", "blend_raws", "draw_chain", "loud_level_db",
           "pre_compressor", "resolve_threshold", "with_values"]
