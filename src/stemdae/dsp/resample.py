"""High-quality sample-rate conversion (soxr 'HQ').

soxr's 'HQ' setting is a linear-phase converter with 20-bit precision and a
passband to about 91% of the lower Nyquist frequency, its filter delay
compensated, so sample ``k`` of the output is at time
``k / sr_out`` of the input. The output length is made exactly
``round(n * sr_out / sr_in)`` (soxr may differ by one sample).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Resampler", "resample", "resampled_length"]


def resampled_length(n_samples: int, sr_in: int, sr_out: int) -> int:
    """``round(n_samples * sr_out / sr_in)`` in exact integer arithmetic (half rounds up).

    Examples
    --------
    >>> resampled_length(441000, 44100, 48000)
    480000
    >>> resampled_length(1, 2, 1)
    1
    """
    return (2 * n_samples * sr_out + sr_in) // (2 * sr_in)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr 'HQ'.

    Parameters
    ----------
    x
        Shape ``(samples,)`` or ``(channels, samples)``, float.
    sr_in, sr_out
        Sample rates in Hz (positive integers).

    Returns
    -------
    np.ndarray
        float32 (float64 for float64 input), shape ``(..., round(samples * sr_out / sr_in))``.
        The same array (not a copy) when the rates are equal.

    Raises
    ------
    ValueError
        A non-positive rate, more than 2 dimensions, or non-finite samples.

    Examples
    --------
    >>> y = resample(np.zeros((2, 48000), np.float32), 48000, 44100)
    >>> y.shape, y.dtype
    ((2, 44100), dtype('float32'))
    """
    import soxr

    if sr_in <= 0 or sr_out <= 0 or int(sr_in) != sr_in or int(sr_out) != sr_out:
        raise ValueError(f"resample: sample rates must be positive integers, found {sr_in} and {sr_out}")
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"resample: expected (samples,) or (channels, samples), found shape {x.shape}")
    if sr_in == sr_out:
        return x
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    n_out = resampled_length(x.shape[-1], int(sr_in), int(sr_out))
    if x.shape[-1] == 0:
        return np.zeros((*x.shape[:-1], 0), dtype)
    if not np.all(np.isfinite(x)):
        raise ValueError("resample: input contains NaN or infinite samples")
    frames = np.ascontiguousarray(x.astype(dtype, copy=False).T)  # soxr wants (samples, channels)
    y = soxr.resample(frames, int(sr_in), int(sr_out), quality="HQ").T
    if y.shape[-1] >= n_out:
        y = y[..., :n_out]
    else:
        y = np.concatenate([y, np.zeros((*y.shape[:-1], n_out - y.shape[-1]), dtype)], axis=-1)
    return np.ascontiguousarray(y, dtype=dtype)


class Resampler:
    """soxr 'HQ' resampling of a stream (chunk by chunk); a pass-through when the rates are equal.

    Mono (``(samples,)`` chunks) by default, or ``channels`` channels
    (``(channels, samples)`` chunks, resampled alike). soxr's stream output
    does not depend on how the input is chunked. The caller trims or pads the
    total to the length it wants (soxr's total may differ from
    :func:`resampled_length` by a sample).
    """

    def __init__(self, sr_in: int, sr_out: int, *, channels: int | None = None) -> None:
        self.sr_in, self.sr_out, self.channels = int(sr_in), int(sr_out), channels
        self._stream = None
        if self.sr_in != self.sr_out:
            import soxr

            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, channels or 1, dtype="float32", quality="HQ")

    def push(self, x: np.ndarray, *, last: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self._stream is None:
            return np.ascontiguousarray(x)
        if self.channels is None:
            return self._stream.resample_chunk(np.ascontiguousarray(x), last=last)
        y = self._stream.resample_chunk(np.ascontiguousarray(x.reshape(self.channels, -1).T), last=last)
        return np.ascontiguousarray(y.reshape(-1, self.channels).T)
