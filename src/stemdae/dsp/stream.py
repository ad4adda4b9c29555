"""Streaming STFT processing for ``stemdae process``: memory bounded by the block, not the file.

- :class:`FrameProcessor`: centred STFT (periodic Hann, reflect padding) -> a
  per-frame transform -> windowed overlap-add normalised by the summed squared
  window. It is built on the batch transform's own steps
  (:func:`stemdae.dsp.stft.frame_spectra`, :func:`~stemdae.dsp.stft.synth_frames`,
  :func:`~stemdae.dsp.stft.overlap_add`, :func:`~stemdae.dsp.stft.hann`), so
  chunked, one-go and :func:`stemdae.dsp.stft.stft`/:func:`~stemdae.dsp.stft.istft`
  results are equal up to float rounding. The model maps each frame on its
  own, so a frame needs only its own ``n_fft`` samples: the processor keeps
  ``n_fft - hop`` samples of input and of overlap-add state between chunks,
  emits every output sample as soon as no later frame can touch it, and
  reflects the two ends exactly as the whole-signal STFT does.
- :func:`griffin_lim_frames`, :func:`with_raw_phase`, :func:`unit_phasor`: the
  phase of the output spectrum.

Shapes: mono signals ``(samples,)``; magnitudes ``(frames, bins)`` (the
model's layout). Pure numpy/scipy (``dsp/``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stemdae.dsp.stft import frame_spectra, hann, overlap_add, synth_frames

__all__ = ["FrameProcessor", "griffin_lim_frames", "unit_phasor", "with_raw_phase"]


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
    n_fft = window.shape[0]
    count = mag.shape[0]
    wss = overlap_add(np.broadcast_to(window**2, (count, n_fft)), hop=hop)
    wss = np.where(wss > 1e-8, wss, 1.0)
    angles = phasor.astype(np.complex64)
    prev = np.zeros_like(angles)
    for _ in range(n_iter):
        y = overlap_add(synth_frames(mag * angles, n_fft=n_fft, window=window), hop=hop) / wss
        rebuilt = frame_spectra(y, n_fft=n_fft, hop=hop, window=window)[:count].astype(np.complex64)
        angles = rebuilt - (momentum / (1 + momentum)) * prev
        angles /= np.abs(angles) + 1e-16
        prev = rebuilt
    return angles


#: transform(mag (frames, bins) float32, spec (frames, bins) complex64) -> output spectrum, complex.
Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]


def with_raw_phase(out_mag: np.ndarray, mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """``spec * (out_mag / mag)``: the per-bin gain ``out_mag / mag`` applied to ``spec`` (``out_mag`` where ``mag == 0``).

    With ``mag = |spec|`` that is ``out_mag * exp(i * angle(spec))``, new
    magnitudes on the input's phase (one pass instead of angle/exp). ``spec``
    may have leading channel axes over the ``(frames, bins)`` of ``mag``: the
    same gain then applies to every channel (the linked stereo rendering, where
    ``mag`` is the magnitude of the channels' mean spectrum).
    """
    ratio = np.divide(out_mag, mag, out=np.zeros_like(out_mag), where=mag > 0)
    out = spec * ratio
    zero = mag <= 0
    if zero.any():
        out = np.where(zero, out_mag.astype(out.dtype), out)
    return out


def unit_phasor(mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """``exp(i * angle(spec))`` (1 where ``mag == 0``), complex64."""
    return with_raw_phase(np.ones_like(mag), mag, spec).astype(np.complex64, copy=False)


class FrameProcessor:
    """STFT -> per-frame transform -> iSTFT of a stream, exactly as on the whole signal.

    The stream is mono (``(samples,)`` chunks, ``(samples,)`` out) or has
    ``channels`` channels (``(channels, samples)`` chunks and out), all framed
    alike, so the transform sees the same frames of every channel at once (a
    linked stereo rendering needs that).

    Parameters
    ----------
    transform
        Maps a run of consecutive frames' magnitudes and complex spectra,
        ``(frames, bins)`` (mono) or ``(channels, frames, bins)``, to the output
        spectrum of the same shape; called with at most ``block_frames`` frames
        (fewer at the end).
    n_fft, hop
        STFT size (even) and hop (``hop <= n_fft``).
    block_frames
        Frames per transform call: the memory bound (about ``block_frames *
        n_fft * 24`` bytes per channel).
    channels
        None: a mono stream; else the channel count of a ``(channels, samples)`` stream.

    Feed :meth:`push` chunks of any length and then call :meth:`finish`; the
    concatenated outputs have exactly as many samples as the inputs.
    """

    def __init__(self, transform: Transform, *, n_fft: int, hop: int, block_frames: int = 1024,
                 channels: int | None = None) -> None:
        if n_fft < 2 or n_fft % 2 or not 1 <= hop <= n_fft or block_frames < 1 or (channels or 1) < 1:
            raise ValueError(f"FrameProcessor: bad n_fft={n_fft}, hop={hop}, block_frames={block_frames}, "
                             f"channels={channels}")
        self.transform, self.n_fft, self.hop, self.block_frames = transform, n_fft, hop, block_frames
        self.mono, c = channels is None, channels or 1
        self.half = n_fft // 2
        self.window = hann(n_fft).astype(np.float32)
        self._wss: dict[int, np.ndarray] = {}  # overlap-added squared window per frame count
        self._head: list[np.ndarray] = []  # samples before the left padding can be built
        self._n_head = 0
        self._buf: np.ndarray | None = None  # padded signal (channels, samples) from padded index _buf_start
        self._buf_start = 0
        self._next_frame = 0
        self._acc = np.zeros((c, 0), np.float32)  # overlap-add state from padded index _acc_start
        self._wacc = np.zeros(0, np.float32)
        self._acc_start = 0
        self._n_in = 0
        self._n_out = 0

    def _out(self, y: np.ndarray) -> np.ndarray:
        return y[0] if self.mono else y

    def _empty(self) -> np.ndarray:
        return self._out(np.zeros((self._acc.shape[0], 0), np.float32))

    # ------------------------------------------------------------ input side
    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed the next chunk; returns the output samples now final (maybe none)."""
        x = np.asarray(x, dtype=np.float32)
        x = x.reshape(1, -1) if self.mono else x.reshape(self._acc.shape[0], -1)
        self._n_in += x.shape[1]
        if self._buf is None:
            self._head.append(x)
            self._n_head += x.shape[1]
            if self._n_head <= self.half:
                return self._empty()
            head = np.concatenate(self._head, axis=1)
            self._head = []
            self._buf = np.concatenate([head[:, self.half:0:-1], head], axis=1)  # reflect, as np.pad
            return self._run(final=False)
        self._buf = np.concatenate([self._buf, x], axis=1)
        return self._run(final=False)

    def finish(self) -> np.ndarray:
        """Flush: reflect-pad the end, process the last frames, return the remaining samples."""
        n = self._n_in
        if n == 0:
            return self._empty()
        if self._buf is None:  # shorter than n_fft / 2 + 1 samples: pad the whole signal at once
            head = np.concatenate(self._head, axis=1)
            pad = ((0, 0), (self.half, self.half))
            # reflect needs 2 samples; one sample gets zero padding
            self._buf = np.pad(head, pad) if head.shape[1] < 2 else np.pad(head, pad, mode="reflect")
        else:
            size = self._buf.shape[1]
            tail_src = self._buf[:, size - self.half - 1: size - 1]
            self._buf = np.concatenate([self._buf, tail_src[:, ::-1]], axis=1)
        return self._run(final=True)

    # ----------------------------------------------------------- processing
    def _run(self, *, final: bool) -> np.ndarray:
        outs = []
        total_frames = 1 + self._n_in // self.hop if final else None
        while True:
            end = self._buf_start + self._buf.shape[1]  # padded index after the last buffered sample
            avail = (end - self.n_fft) // self.hop + 1 - self._next_frame if end >= self.n_fft else 0
            if total_frames is not None:
                avail = min(avail, total_frames - self._next_frame)
            if avail <= 0 or (not final and avail < self.block_frames):
                break
            outs.append(self._frames(min(avail, self.block_frames)))
        if final:
            outs.append(self._emit(upto=None))
        return self._out(np.concatenate(outs, axis=1)) if outs else self._empty()

    def _frames(self, count: int) -> np.ndarray:
        t0 = self._next_frame
        first = t0 * self.hop - self._buf_start
        seg = self._buf[:, first: first + (count - 1) * self.hop + self.n_fft]
        spec = frame_spectra(seg, n_fft=self.n_fft, hop=self.hop, window=self.window)  # (c, count, bins) complex64
        mag = np.abs(spec)
        out_spec = self.transform(mag[0], spec[0])[None] if self.mono else self.transform(mag, spec)
        frames = synth_frames(np.asarray(out_spec, dtype=np.complex64), n_fft=self.n_fft, window=self.window)
        if count not in self._wss:
            self._wss[count] = overlap_add(np.broadcast_to(self.window**2, (count, self.n_fft)), hop=self.hop)
        self._add(t0 * self.hop, overlap_add(frames, hop=self.hop), self._wss[count])
        self._next_frame = t0 + count
        # Input before the next frame's start is no longer needed, except the last
        # n_fft / 2 + 1 samples, which the reflect padding at the end reads.
        drop = min(self._next_frame * self.hop, self._buf_start + self._buf.shape[1] - self.half - 1) - self._buf_start
        if drop > 0:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop
        return self._emit(upto=self._next_frame * self.hop)

    def _add(self, start: int, y: np.ndarray, w: np.ndarray) -> None:
        end = start + y.shape[-1]
        acc_end = self._acc_start + self._acc.shape[1]
        if end > acc_end:
            self._acc = np.concatenate([self._acc, np.zeros((self._acc.shape[0], end - acc_end), np.float32)], axis=1)
            self._wacc = np.concatenate([self._wacc, np.zeros(end - acc_end, np.float32)])
        i = start - self._acc_start
        self._acc[:, i: i + y.shape[-1]] += y
        self._wacc[i: i + w.size] += w

    def _emit(self, *, upto: int | None) -> np.ndarray:
        """Normalise and return final samples ``(channels, k)`` (padded index < ``upto``; all of them when None)."""
        if upto is None:  # the end: samples no frame covers (hop > n_fft / 2) are 0, as in istft
            upto = self.half + self._n_in
            self._add(upto, np.zeros((self._acc.shape[0], 0), np.float32), np.zeros(0, np.float32))
        k = min(upto, self._acc_start + self._acc.shape[1]) - self._acc_start
        y, w = self._acc[:, :k], self._wacc[:k]
        self._acc, self._wacc = self._acc[:, k:], self._wacc[k:]
        start = self._acc_start
        self._acc_start += k
        y = np.divide(y, w, out=y.copy(), where=w > np.finfo(np.float32).tiny)
        # Drop the left padding and anything past the signal's end.
        lo = max(self.half - start, 0)
        hi = min(k, self.half + self._n_in - start)
        out = y[:, lo:hi] if hi > lo else np.zeros((y.shape[0], 0), np.float32)
        self._n_out += out.shape[1]
        return out
