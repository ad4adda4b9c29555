"""Objective metrics for processed stems: spectral, waveform and mixing features.

Pure numpy/scipy (plus pyloudnorm's public K-weighting filter class); no file
I/O, no torch. Magnitude frames are ``(frames, bins)`` as in the feature
caches; waveforms are mono ``(samples,)``.

Definitions (lower is better unless stated):

- ``spectral_mae``: mean absolute difference of linear STFT magnitudes.
- ``lsd_db``: log-spectral distance, per frame the RMS over bins of the dB
  difference, then the mean over frames. Both spectra are floored at
  ``floor_db`` (-80 dB) below the reference's peak so near-silent bins do not
  dominate.
- ``mrstft``: multi-resolution STFT distance, the mean over FFT sizes (hop
  n/4, Hann) of spectral convergence ``||S - Ŝ||_F / ||S||_F`` plus the mean
  absolute log-magnitude difference (natural log, magnitudes + 1e-7).
- ``si_sdr`` (higher is better): scale-invariant SDR in dB (Le Roux et al.
  2019, zero-mean signals), clipped to ``±cap_db`` (100 dB) so an identical
  estimate gives 100 instead of +inf and means stay finite.
- Mixing features (:func:`mixing_features`): integrated loudness (BS.1770,
  pyloudnorm, floored at -70 LUFS), loudness range (EBU Tech 3342: 3 s
  short-term loudness every 0.1 s, absolute gate -70 LUFS, relative gate -20 LU,
  95th minus 10th percentile; a signal under 3 s has one window, LRA 0), crest
  factor (peak/RMS in dB), and from the long-term average power spectrum
  (Hann n_fft/hop): centroid, bandwidth (power-weighted standard deviation
  around the centroid), 85 % roll-off, and the share of power in each band
  between ``band_edges_hz`` in dB (floored at -80 dB).
  :func:`feature_differences` gives ``|feature(output) - feature(stem)|``.
- :func:`mean_ci`: mean, sample std and a Student-t confidence interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.signal
import scipy.stats

from stemdae.dsp.loudness import k_weighting_filters
from stemdae.dsp.stft import stft

EPS = 1e-12
LUFS_FLOOR = -70.0


def _check_pair(est: np.ndarray, ref: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"{what}: estimate shape {est.shape} differs from reference shape {ref.shape}")
    if est.size == 0:
        raise ValueError(f"{what}: empty input")
    if not (np.isfinite(est).all() and np.isfinite(ref).all()):
        raise ValueError(f"{what}: non-finite values in the input")
    return est, ref


# ------------------------------------------------------------------ magnitudes


def spectral_mae(est: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error of magnitude frames ``(frames, bins)``.

    Examples
    --------
    >>> spectral_mae(np.ones((2, 3)), np.zeros((2, 3)))
    1.0
    """
    est, ref = _check_pair(est, ref, "spectral_mae")
    return float(np.mean(np.abs(est - ref)))


def spectral_mae_per_bin(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean absolute error per bin over frames, shape ``(bins,)``."""
    est, ref = _check_pair(est, ref, "spectral_mae_per_bin")
    return np.mean(np.abs(est - ref), axis=0)


def log_spectral_distance(est: np.ndarray, ref: np.ndarray, *, floor_db: float = -80.0) -> float:
    """Log-spectral distance in dB between magnitude frames ``(frames, bins)``.

    Examples
    --------
    >>> round(log_spectral_distance(np.full((4, 8), 2.0), np.ones((4, 8))), 3)
    6.021
    """
    est, ref = _check_pair(est, ref, "log_spectral_distance")
    floor = max(float(ref.max()), EPS) * 10 ** (floor_db / 20)
    diff_db = 20 * np.log10(np.maximum(est, floor) / np.maximum(ref, floor))
    return float(np.mean(np.sqrt(np.mean(diff_db**2, axis=-1))))


def stft_magnitude(x: np.ndarray, *, n_fft: int, hop: int) -> np.ndarray:
    """Hann STFT magnitude with centre (zero) padding, shape ``(frames, n_fft // 2 + 1)`` (:func:`stemdae.dsp.stft.stft`)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        x = np.pad(x, (0, 2 - x.size))
    return np.abs(stft(x, n_fft=n_fft, hop=hop, pad_mode="constant")).T


def mrstft_distance(est: np.ndarray, ref: np.ndarray, *, ffts: Sequence[int] = (512, 1024, 2048)) -> float:
    """Multi-resolution STFT distance between waveforms (see the module docstring).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(8000)
    >>> mrstft_distance(x, x)
    0.0
    """
    est, ref = _check_pair(est, ref, "mrstft_distance")
    if not ffts:
        raise ValueError("mrstft_distance: at least one FFT size is required")
    total = 0.0
    for n_fft in ffts:
        s_est = stft_magnitude(est, n_fft=n_fft, hop=max(1, n_fft // 4))
        s_ref = stft_magnitude(ref, n_fft=n_fft, hop=max(1, n_fft // 4))
        sc = np.linalg.norm(s_ref - s_est) / max(np.linalg.norm(s_ref), EPS)
        logmag = np.mean(np.abs(np.log(s_ref + 1e-7) - np.log(s_est + 1e-7)))
        total += sc + logmag
    return float(total / len(ffts))


# ------------------------------------------------------------------ waveforms


def si_sdr(est: np.ndarray, ref: np.ndarray, *, cap_db: float = 100.0) -> float:
    """Scale-invariant SDR in dB, clipped to ``[-cap_db, cap_db]``.

    Raises
    ------
    ValueError
        Shapes differ, input empty or non-finite, or the reference is silent.

    Examples
    --------
    >>> x = np.sin(np.linspace(0, 100, 4000))
    >>> si_sdr(0.5 * x, x)
    100.0
    """
    est, ref = _check_pair(est, ref, "si_sdr")
    est = est - est.mean()
    ref = ref - ref.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy <= EPS:
        raise ValueError("si_sdr: the reference is silent")
    target = (np.dot(est, ref) / ref_energy) * ref
    noise = est - target
    value = 10 * np.log10((np.dot(target, target) + EPS * EPS) / (np.dot(noise, noise) + EPS * EPS))
    return float(np.clip(value, -cap_db, cap_db))


def crest_factor_db(x: np.ndarray) -> float:
    """Peak over RMS in dB (a full-scale sine gives 3.01 dB)."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x**2))
    if rms <= EPS:
        return 0.0
    return float(20 * np.log10(np.max(np.abs(x)) / rms))


# ------------------------------------------------------------------ loudness


def k_weighting_power(freqs_hz: np.ndarray, *, sr: int) -> np.ndarray:
    """Power response ``|K(f)|²`` of the BS.1770 K-weighting at ``freqs_hz``."""
    h = np.ones(len(freqs_hz), dtype=complex)
    for f in k_weighting_filters(sr):
        _, hf = scipy.signal.freqz(f.b, f.a, worN=np.asarray(freqs_hz, dtype=np.float64), fs=sr)
        h *= hf * f.passband_gain
    return np.abs(h) ** 2


def integrated_lufs(x: np.ndarray, *, sr: int) -> float:
    """BS.1770 integrated loudness (:func:`stemdae.dsp.loudness.integrated_lufs`), floored at -70 LUFS (silence)."""
    from stemdae.dsp import loudness

    x = np.asarray(x, dtype=np.float64)
    if x.size < int(0.4 * sr):
        raise ValueError(f"integrated_lufs: {x.size} samples, need at least 0.4 s ({int(0.4 * sr)})")
    return max(loudness.integrated_lufs(x, sr), LUFS_FLOOR)


def short_term_lufs(x: np.ndarray, *, sr: int, window_s: float = 3.0, hop_s: float = 0.1) -> np.ndarray:
    """K-weighted loudness of ``window_s`` windows every ``hop_s`` (ungated), in LUFS."""
    y = np.asarray(x, dtype=np.float64)
    for f in k_weighting_filters(sr):
        y = f.apply_filter(y)
    win = min(int(window_s * sr), y.size)
    hop = max(1, int(hop_s * sr))
    csum = np.concatenate([[0.0], np.cumsum(y**2)])
    starts = np.arange(0, y.size - win + 1, hop)
    ms = (csum[starts + win] - csum[starts]) / max(win, 1)
    return -0.691 + 10 * np.log10(np.maximum(ms, 1e-20))


def loudness_range(x: np.ndarray, *, sr: int) -> float:
    """EBU Tech 3342 loudness range (LU) from 3 s short-term loudness."""
    st = short_term_lufs(x, sr=sr)
    st = st[st > LUFS_FLOOR]
    if st.size < 2:
        return 0.0
    mean_power = 10 * np.log10(np.mean(10 ** (st / 10)))
    st = st[st > mean_power - 20.0]
    return float(np.percentile(st, 95) - np.percentile(st, 10))


# ------------------------------------------------------------------ spectral shape


def band_names(band_edges_hz: Sequence[float]) -> list[str]:
    """``low, mid, high`` for two edges, otherwise ``band0 .. bandN``."""
    n = len(band_edges_hz) + 1
    return ["low", "mid", "high"] if n == 3 else [f"band{i}" for i in range(n)]


def spectral_shape(
    x: np.ndarray, *, sr: int, n_fft: int = 2048, hop: int = 1024, band_edges_hz: Sequence[float] = (250.0, 4000.0)
) -> dict[str, float]:
    """Centroid, bandwidth, 85 % roll-off (Hz) and band power shares (dB) of the long-term power spectrum.

    Examples
    --------
    >>> t = np.arange(44100) / 44100
    >>> round(spectral_shape(np.sin(2 * np.pi * 1000 * t), sr=44100)["centroid_hz"])
    1000
    """
    power = np.mean(stft_magnitude(x, n_fft=n_fft, hop=hop) ** 2, axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    total = float(power.sum())
    out: dict[str, float] = {}
    if total <= EPS:
        out.update(centroid_hz=0.0, bandwidth_hz=0.0, rolloff_hz=0.0)
        out.update({f"band_{b}_db": -80.0 for b in band_names(band_edges_hz)})
        return out
    w = power / total
    centroid = float(np.sum(w * freqs))
    out["centroid_hz"] = centroid
    out["bandwidth_hz"] = float(np.sqrt(np.sum(w * (freqs - centroid) ** 2)))
    out["rolloff_hz"] = float(freqs[min(np.searchsorted(np.cumsum(w), 0.85), len(freqs) - 1)])
    edges = [0.0, *band_edges_hz, np.inf]
    for name, lo, hi in zip(band_names(band_edges_hz), edges[:-1], edges[1:]):
        share = float(w[(freqs >= lo) & (freqs < hi)].sum())
        out[f"band_{name}_db"] = float(10 * np.log10(max(share, 1e-8)))
    return out


def mixing_features(
    x: np.ndarray, *, sr: int, n_fft: int = 2048, hop: int = 1024, band_edges_hz: Sequence[float] = (250.0, 4000.0)
) -> dict[str, float]:
    """Loudness (LUFS), loudness range (LU), crest factor (dB) and :func:`spectral_shape`."""
    feats = {
        "loudness_lufs": integrated_lufs(x, sr=sr),
        "loudness_range_lu": loudness_range(x, sr=sr),
        "crest_factor_db": crest_factor_db(x),
    }
    feats.update(spectral_shape(x, sr=sr, n_fft=n_fft, hop=hop, band_edges_hz=band_edges_hz))
    return feats


def feature_differences(out: dict[str, float], ref: dict[str, float]) -> dict[str, float]:
    """``|out[k] - ref[k]|`` for every feature, keys suffixed ``_diff``."""
    return {f"{k}_diff": float(abs(out[k] - ref[k])) for k in ref}


# ------------------------------------------------------------------ aggregation


def mean_ci(values: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean.

    Non-finite values are dropped; with one value the std is 0 and the
    interval collapses to the mean; with none everything is NaN.

    Examples
    --------
    >>> mean_ci([1.0, 2.0, 3.0])["mean"]
    2.0
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean, "n": 1}
    std = float(v.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}
