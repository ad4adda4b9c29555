"""Streaming building blocks for ``stemdae process``: memory bounded by the block, not the file.

Three pieces, each fed chunk by chunk and then finished, each giving exactly
what the whole-array version gives:

- :class:`LoudnessMeter`: ITU-R BS.1770-4 integrated loudness of a mono
  stream. The K-weighting filter keeps its state across chunks, and the
  gating blocks (400 ms, 75 % overlap) are summed from energies recorded at
  their boundaries, so memory is ten numbers per second of audio and the
  result is pyloudnorm's ``Meter(sr).integrated_loudness`` on the whole
  signal (same boundaries, same block count, same gates; it agrees to 1e-6 LU
  in ``tests/test_process.py``). pyloudnorm itself works on one array only.
- :class:`Resampler`: soxr 'HQ' as a stream; soxr's stream output does not
  depend on how the input is chunked (bit-identical to one call).
- :class:`FrameProcessor`: centred STFT (periodic Hann, reflect padding, as
  :func:`stemdae.dsp.stft.stft`) -> a per-frame magnitude transform -> the raw
  phase -> windowed overlap-add normalised by the summed squared window (as
  :func:`stemdae.dsp.stft.istft`). The model maps each frame on its own, so a
  frame needs only its own ``n_fft`` samples: the processor keeps ``n_fft -
  hop`` samples of input and of overlap-add state between chunks, emits every
  output sample as soon as no later frame can touch it, and reflects the two
  ends exactly as the whole-signal STFT does. Chunked and one-go results are
  equal up to float rounding.

Shapes: mono signals ``(samples,)``; magnitudes ``(frames, bins)`` (the
model's layout).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["FrameProcessor", "LoudnessMeter", "Resampler", "griffin_lim_frames", "k_weighting_sos", "unit_phasor",
           "with_raw_phase"]

_T_G = 0.4  # BS.1770 gating block, s
_STEP = 0.25  # 75 % overlap
_ABS_GATE = -70.0
_REL_GATE = -10.0


def _biquad(kind: str, *, gain_db: float, q: float, fc: float, sr: int) -> np.ndarray:
    """RBJ cookbook biquad as an ``sos`` row, the formulas pyloudnorm's K-weighting uses."""
    a_ = 10 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * fc / sr
    alpha = math.sin(w0) / (2.0 * q)
    cw, sa = math.cos(w0), 2 * math.sqrt(a_) * alpha
    if kind == "high_shelf":
        b = [a_ * ((a_ + 1) + (a_ - 1) * cw + sa), -2 * a_ * ((a_ - 1) + (a_ + 1) * cw),
             a_ * ((a_ + 1) + (a_ - 1) * cw - sa)]
        a = [(a_ + 1) - (a_ - 1) * cw + sa, 2 * ((a_ - 1) - (a_ + 1) * cw), (a_ + 1) - (a_ - 1) * cw - sa]
    else:  # high_pass
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    return np.array([*(np.array(b) / a[0]), *(np.array(a) / a[0])])


def k_weighting_sos(sr: int) -> np.ndarray:
    """BS.1770 K-weighting (1.5 kHz +4 dB shelf, 38 Hz high-pass) at ``sr``, shape ``(2, 6)``."""
    return np.stack([
        _biquad("high_shelf", gain_db=4.0, q=1 / math.sqrt(2), fc=1500.0, sr=sr),
        _biquad("high_pass", gain_db=0.0, q=0.5, fc=38.0, sr=sr),
    ])


class LoudnessMeter:
    """Integrated loudness (BS.1770-4, pyloudnorm's gating) of a mono stream, chunk by chunk.

    Signals shorter than one 400 ms block, where BS.1770 defines no gated
    loudness, get the ungated K-weighted mean square instead (absolute gate
    still applied).

    Examples
    --------
    >>> sr = 48000
    >>> x = 0.1 * np.sin(2 * np.pi * 997 * np.arange(3 * sr) / sr)
    >>> m = LoudnessMeter(sr)
    >>> for chunk in np.array_split(x, 7):
    ...     m.update(chunk)
    >>> round(m.lufs(), 2)  # -20 dBFS sine: -23.01 LUFS
    -23.01
    """

    def __init__(self, sr: int) -> None:
        self.sr = int(sr)
        self._sos = k_weighting_sos(self.sr)
        self._zi = np.zeros((2, 2))
        self.n = 0
        self._energy = 0.0
        self.peak = 0.0
        self._lower: list[float] = []  # energy before sample int(T_g * (j * step) * sr), j = 0, 1, ...
        self._upper: list[float] = []  # energy before sample int(T_g * (j * step + 1) * sr)

    def _record(self, marks: list[float], offset: float, cum: np.ndarray, n0: int, n1: int) -> None:
        j0 = len(marks)
        while True:
            js = np.arange(j0, j0 + 64, dtype=np.float64)
            idx = (_T_G * (js * _STEP + offset) * self.sr).astype(np.int64)  # pyloudnorm's float expression
            idx = idx[idx <= n1]
            for k in idx:
                marks.append(self._energy + (float(cum[k - n0 - 1]) if k > n0 else 0.0))
            if len(idx) < 64:
                return
            j0 += 64

    def update(self, x: np.ndarray) -> None:
        """Add the next chunk (mono, finite)."""
        from scipy.signal import sosfilt

        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if not x.size:
            return
        self.peak = max(self.peak, float(np.max(np.abs(x))))
        y, self._zi = sosfilt(self._sos, x, zi=self._zi)
        cum = np.cumsum(y * y)
        n0, n1 = self.n, self.n + x.size
        self._record(self._lower, 0.0, cum, n0, n1)
        self._record(self._upper, 1.0, cum, n0, n1)
        self._energy += float(cum[-1])
        self.n = n1

    def lufs(self, *, gain_db: float = 0.0) -> float:
        """Integrated loudness of everything fed so far, LUFS (``-inf``: silence or nothing).

        ``gain_db``: the loudness the signal would have after that gain, from the
        same block energies (the -70 LUFS absolute gate may admit or drop blocks).
        """
        if self.n == 0:
            return -math.inf
        if self.n < _T_G * self.sr:
            z = np.array([self._energy / self.n])
        else:
            n_blocks = int(np.round((self.n / self.sr - _T_G) / (_T_G * _STEP))) + 1
            lo = np.array([self._lower[j] if j < len(self._lower) else self._energy for j in range(n_blocks)])
            hi = np.array([self._upper[j] if j < len(self._upper) else self._energy for j in range(n_blocks)])
            z = np.maximum(hi - lo, 0.0) / (_T_G * self.sr)
        z = z * 10.0 ** (gain_db / 10.0)
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10.0 * np.log10(z)
            gated = z[loud >= _ABS_GATE]
            if not gated.size:
                return -math.inf
            rel = -0.691 + 10.0 * np.log10(gated.mean()) + _REL_GATE
            final = z[(loud > rel) & (loud > _ABS_GATE)]
            if not final.size:
                return -math.inf
            return float(-0.691 + 10.0 * np.log10(final.mean()))


class Resampler:
    """soxr 'HQ' resampling of a mono stream; a pass-through when the rates are equal.

    The caller trims or pads the total to the length it wants (soxr's total
    may differ from ``round(n * sr_out / sr_in)`` by a sample).
    """

    def __init__(self, sr_in: int, sr_out: int) -> None:
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._stream = None
        if self.sr_in != self.sr_out:
            import soxr

            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")

    def push(self, x: np.ndarray, *, last: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._stream is None:
            return x
        return self._stream.resample_chunk(x, last=last)


def _ola(frames: np.ndarray, hop: int) -> np.ndarray:
    """Overlap-add ``frames (count, n_fft)`` every ``hop`` samples -> ``((count - 1) * hop + n_fft,)``."""
    count, n_fft = frames.shape
    n_blocks = -(-n_fft // hop)
    blocks = np.zeros((count, n_blocks * hop), dtype=frames.dtype)
    blocks[:, :n_fft] = frames
    blocks = blocks.reshape(count, n_blocks, hop)
    out = np.zeros((count + n_blocks - 1, hop), dtype=frames.dtype)
    for j in range(n_blocks):
        out[j:j + count] += blocks[:, j]
    return out.reshape(-1)[: (count - 1) * hop + n_fft]


def griffin_lim_frames(mag: np.ndarray, phasor: np.ndarray, *, window: np.ndarray, hop: int,
                       n_iter: int = 32, momentum: float = 0.99) -> np.ndarray:
    """Fast Griffin-Lim (Perraudin et al. 2013, as librosa) on a run of consecutive frames.

    Starts from ``phasor`` (the raw input's unit phasors), so it refines the
    raw phase towards a signal whose STFT magnitude matches ``mag``.

    Parameters
    ----------
    mag
        Target magnitudes ``(frames, bins)``.
    phasor
        Initial unit phasors ``(frames, bins)``, complex.
    window, hop
        Analysis/synthesis window (``n_fft`` samples) and hop.

    Returns
    -------
    np.ndarray
        Unit phasors ``(frames, bins)``, complex64.
    """
    import scipy.fft

    n_fft = window.shape[0]
    count = mag.shape[0]
    wss = _ola(np.broadcast_to(window**2, (count, n_fft)), hop)
    wss = np.where(wss > 1e-8, wss, 1.0)
    angles = phasor.astype(np.complex64)
    prev = np.zeros_like(angles)
    for _ in range(n_iter):
        frames = scipy.fft.irfft(mag * angles, n=n_fft, axis=-1) * window
        y = _ola(frames, hop) / wss
        view = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:count]
        rebuilt = scipy.fft.rfft(view * window, axis=-1).astype(np.complex64)
        angles = rebuilt - (momentum / (1 + momentum)) * prev
        angles /= np.abs(angles) + 1e-16
        prev = rebuilt
    return angles


#: transform(mag (frames, bins) float32, spec (frames, bins) complex64) -> output spectrum, complex.
Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]


def with_raw_phase(out_mag: np.ndarray, mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """``out_mag * exp(i * angle(spec))``: new magnitudes on the input's phase (phase 0 where ``mag == 0``).

    Computed as ``spec * (out_mag / mag)``, one pass instead of angle/exp.
    """
    ratio = np.divide(out_mag, mag, out=np.zeros_like(out_mag), where=mag > 0)
    out = spec * ratio
    zero = mag <= 0
    if zero.any():
        out[zero] = out_mag[zero]
    return out


def unit_phasor(mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """``exp(i * angle(spec))`` (1 where ``mag == 0``), complex64."""
    return with_raw_phase(np.ones_like(mag), mag, spec).astype(np.complex64, copy=False)


class FrameProcessor:
    """STFT -> per-frame transform -> iSTFT of a mono stream, exactly as on the whole signal.

    Parameters
    ----------
    transform
        Maps a run of consecutive frames' magnitudes and complex spectra to
        the output spectrum ``(frames, bins)``; called with at most
        ``block_frames`` frames (fewer at the end).
    n_fft, hop
        STFT size (even) and hop (``hop <= n_fft``).
    block_frames
        Frames per transform call: the memory bound (about ``block_frames *
        n_fft * 24`` bytes).

    Feed :meth:`push` chunks of any length and then call :meth:`finish`; the
    concatenated outputs have exactly as many samples as the inputs.
    """

    def __init__(self, transform: Transform, *, n_fft: int, hop: int, block_frames: int = 1024) -> None:
        import scipy.fft  # noqa: F401

        if n_fft < 2 or n_fft % 2 or not 1 <= hop <= n_fft or block_frames < 1:
            raise ValueError(f"FrameProcessor: bad n_fft={n_fft}, hop={hop}, block_frames={block_frames}")
        self.transform, self.n_fft, self.hop, self.block_frames = transform, n_fft, hop, block_frames
        self.half = n_fft // 2
        n = np.arange(n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float32)  # periodic Hann
        self._wss: dict[int, np.ndarray] = {}  # overlap-added squared window per frame count
        self._head: list[np.ndarray] = []  # samples before the left padding can be built
        self._n_head = 0
        self._buf: np.ndarray | None = None  # padded signal from padded index _buf_start
        self._buf_start = 0
        self._next_frame = 0
        self._acc = np.zeros(0, np.float32)  # overlap-add state from padded index _acc_start
        self._wacc = np.zeros(0, np.float32)
        self._acc_start = 0
        self._n_in = 0
        self._n_out = 0

    # ------------------------------------------------------------ input side
    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed the next mono chunk; returns the output samples now final (maybe none)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._n_in += x.size
        if self._buf is None:
            self._head.append(x)
            self._n_head += x.size
            if self._n_head <= self.half:
                return np.zeros(0, np.float32)
            head = np.concatenate(self._head)
            self._head = []
            self._buf = np.concatenate([head[self.half:0:-1], head])  # reflect, as np.pad
            return self._run(final=False)
        self._buf = np.concatenate([self._buf, x])
        return self._run(final=False)

    def finish(self) -> np.ndarray:
        """Flush: reflect-pad the end, process the last frames, return the remaining samples."""
        n = self._n_in
        if n == 0:
            return np.zeros(0, np.float32)
        if self._buf is None:  # shorter than n_fft / 2 + 1 samples: pad the whole signal at once
            head = np.concatenate(self._head)
            if head.size < 2:  # reflect needs 2 samples; one sample gets zero padding
                self._buf = np.pad(head, self.half)
            else:
                self._buf = np.pad(head, self.half, mode="reflect")
        else:
            tail_src = self._buf[self._buf.size - self.half - 1: self._buf.size - 1]
            self._buf = np.concatenate([self._buf, tail_src[::-1]])
        out = self._run(final=True)
        return out

    # ----------------------------------------------------------- processing
    def _run(self, *, final: bool) -> np.ndarray:
        outs = []
        total_frames = 1 + self._n_in // self.hop if final else None
        while True:
            end = self._buf_start + self._buf.size  # padded index after the last buffered sample
            avail = (end - self.n_fft) // self.hop + 1 - self._next_frame if end >= self.n_fft else 0
            if total_frames is not None:
                avail = min(avail, total_frames - self._next_frame)
            if avail <= 0 or (not final and avail < self.block_frames):
                break
            outs.append(self._frames(min(avail, self.block_frames)))
        if final:
            outs.append(self._emit(upto=None))
        return np.concatenate(outs) if outs else np.zeros(0, np.float32)

    def _frames(self, count: int) -> np.ndarray:
        import scipy.fft

        t0 = self._next_frame
        first = t0 * self.hop - self._buf_start
        seg = self._buf[first: first + (count - 1) * self.hop + self.n_fft]
        view = np.lib.stride_tricks.sliding_window_view(seg, self.n_fft)[:: self.hop]
        spec = scipy.fft.rfft(view * self.window, axis=-1)  # (count, bins) complex64
        mag = np.abs(spec)
        out_spec = np.asarray(self.transform(mag, spec), dtype=np.complex64)
        frames = scipy.fft.irfft(out_spec, n=self.n_fft, axis=-1)
        frames *= self.window
        if count not in self._wss:
            self._wss[count] = _ola(np.broadcast_to(self.window**2, (count, self.n_fft)), self.hop)
        self._add(t0 * self.hop, _ola(frames, self.hop), self._wss[count])
        self._next_frame = t0 + count
        # Input before the next frame's start is no longer needed, except the last
        # n_fft / 2 + 1 samples, which the reflect padding at the end reads.
        drop = min(self._next_frame * self.hop, self._buf_start + self._buf.size - self.half - 1) - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return self._emit(upto=self._next_frame * self.hop)

    def _add(self, start: int, y: np.ndarray, w: np.ndarray) -> None:
        end = start + y.size
        acc_end = self._acc_start + self._acc.size
        if end > acc_end:
            self._acc = np.concatenate([self._acc, np.zeros(end - acc_end, np.float32)])
            self._wacc = np.concatenate([self._wacc, np.zeros(end - acc_end, np.float32)])
        i = start - self._acc_start
        self._acc[i: i + y.size] += y
        self._wacc[i: i + w.size] += w

    def _emit(self, *, upto: int | None) -> np.ndarray:
        """Normalise and return final samples (padded index < ``upto``; all of them when None)."""
        if upto is None:  # the end: samples no frame covers (hop > n_fft / 2) are 0, as in istft
            upto = self.half + self._n_in
            self._add(upto, np.zeros(0, np.float32), np.zeros(0, np.float32))
        k = min(upto, self._acc_start + self._acc.size) - self._acc_start
        y, w = self._acc[:k], self._wacc[:k]
        self._acc, self._wacc = self._acc[k:], self._wacc[k:]
        start = self._acc_start
        self._acc_start += k
        y = np.divide(y, w, out=y.copy(), where=w > np.finfo(np.float32).tiny)
        # Drop the left padding and anything past the signal's end.
        lo = max(self.half - start, 0)
        hi = min(k, self.half + self._n_in - start)
        out = y[lo:hi] if hi > lo else np.zeros(0, np.float32)
        self._n_out += out.size
        return out
