"""Pitch shift: quality and speed of the candidate implementations.

Quality: a 10 s 440 Hz sine shifted by each of the 16 augmentation shifts must
peak within 1% of 440 * 2**(c / 1200) (Hann window, 16x zero-padded FFT,
parabolic interpolation) and keep exactly 441000 samples; the loudness change
(BS.1770) is reported too. Speed: seconds for all 16 shifts of one 10 s mono
segment, median of ``--repeats`` runs, one thread.

    python benchmarks/bench_pitch.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pedalboard  # noqa: E402
import pyloudnorm  # noqa: E402

from stemdae.config import AugmentationParams  # noqa: E402
from stemdae.dsp.pitch import pitch_shift  # noqa: E402

SR, SECONDS = 44100, 10.0


def peak_hz(x: np.ndarray) -> float:
    mid = x[len(x) // 4 : 3 * len(x) // 4]
    n = 16 * len(mid)
    spec = np.log(np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=n)) + 1e-12)
    k = int(np.argmax(spec))
    a, b, c = spec[k - 1], spec[k], spec[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


def plugin(x: np.ndarray, cents: int) -> np.ndarray:
    return pedalboard.Pedalboard([pedalboard.PitchShift(semitones=cents / 100)])(x, SR)


METHODS = {
    "librosa (soxr_hq)": lambda x, c: pitch_shift(x, SR, cents=c, method="librosa"),
    "pedalboard time_stretch": lambda x, c: pitch_shift(x, SR, cents=c, method="pedalboard"),
    "pedalboard PitchShift": plugin,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shifts = [c for c in AugmentationParams().shifts_cents() if c != 0]
    t = np.arange(int(SR * SECONDS)) / SR
    x = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    meter = pyloudnorm.Meter(SR)
    ref_lufs = meter.integrated_loudness(x.astype(np.float64))
    METHODS["librosa (soxr_hq)"](x, 50)  # numba compilation outside the timing
    print("| method | s per 10 s segment, 16 shifts | shifts within 1% | worst error | length exact | "
          "loudness change dB (min..max) |")
    print("|---|---|---|---|---|---|")
    for name, fn in METHODS.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ys = [fn(x, c) for c in shifts]
            times.append(time.perf_counter() - t0)
        errs = [abs(peak_hz(np.ravel(y)) / (440.0 * 2 ** (c / 1200)) - 1) for c, y in zip(shifts, ys)]
        ok = sum(e < 0.01 for e in errs)
        missed = [c for c, e in zip(shifts, errs) if e >= 0.01]
        exact = all(np.ravel(y).shape == x.shape for y in ys)
        dl = [meter.integrated_loudness(np.ravel(y)[: len(x)].astype(np.float64)) - ref_lufs for y in ys]
        print(f"| {name} | {np.median(times):.2f} | {ok}/16{' (missed ' + str(missed) + ')' if missed else ''} "
              f"| {100 * max(errs):.2f}% | {exact} | {min(dl):+.2f}..{max(dl):+.2f} |")


if __name__ == "__main__":
    main()
