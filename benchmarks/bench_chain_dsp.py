"""Chain model DSP: speed of the candidate differentiable EQs and compressors.

One 10 s, 44.1 kHz mono signal, forward + backward (seconds, median of
``--repeats`` runs, one thread):

- EQ, 6 sections (low shelf, 4 bells, high shelf): this project's rFFT-grid
  cascade (``stemdae.chain.filters``), dasp-pytorch's ``parametric_eq`` (the
  same frequency-sampling idea), torchaudio's ``lfilter`` biquads, and
  scipy's ``sosfilt`` (forward only, no gradient) as the scale.
- Compressor: this project's ``compress`` (numba loop + adjoint loop),
  torchcomp's ``compexp_gain`` + ``avg``, and a plain torch loop with autograd
  (timed on 1 s, multiplied by 10).

dasp-pytorch, torchcomp and torchaudio are not dependencies: put them on
``PYTHONPATH`` (``pip install --no-deps --target DIR ...``) to time them; a
library that does not import is reported with its error.

    python benchmarks/bench_chain_dsp.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
import torch  # noqa: E402

from stemdae.chain import filters  # noqa: E402
from stemdae.chain.dynamics import compress  # noqa: E402

SR, SECONDS = 44100, 10.0
BELLS = [(200.0, 3.0, 1.0), (800.0, -4.0, 2.0), (2500.0, 2.0, 1.0), (6000.0, -3.0, 3.0)]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: numba compile, FFT plans
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def eq_ours(x: torch.Tensor) -> None:
    p = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    sections = [filters.shelf_coefs(p(150.0), p(4.0), p(0.7), SR, high=False)]
    sections += [filters.peak_coefs(p(f), p(g), p(q), SR) for f, g, q in BELLS]
    sections.append(filters.shelf_coefs(p(7000.0), p(-2.0), p(0.7), SR, high=True))
    b, a = torch.stack([s[0] for s in sections]), torch.stack([s[1] for s in sections])
    n_fft = filters.fft_len(x.shape[-1], SR // 2)
    filters.apply_response(x, filters.cascade_response(b, a, n_fft), n_fft).square().mean().backward()


def eq_dasp(x: torch.Tensor) -> None:
    from dasp_pytorch.functional import parametric_eq

    p = lambda v: torch.tensor([v], requires_grad=True)  # noqa: E731
    bands = {}
    for i, (f, g, q) in enumerate(BELLS):
        bands |= {f"band{i}_gain_db": p(g), f"band{i}_cutoff_freq": p(f), f"band{i}_q_factor": p(q)}
    y = parametric_eq(
        x[:, None], SR, low_shelf_gain_db=p(4.0), low_shelf_cutoff_freq=p(150.0), low_shelf_q_factor=p(0.7),
        high_shelf_gain_db=p(-2.0), high_shelf_cutoff_freq=p(7000.0), high_shelf_q_factor=p(0.7), **bands,
    )
    y.square().mean().backward()


def eq_torchaudio(x: torch.Tensor) -> None:
    import torchaudio.functional as taf

    y = x
    for f, g, q in BELLS:
        y = taf.equalizer_biquad(y, SR, torch.tensor(f), torch.tensor(g, requires_grad=True), torch.tensor(q))
    y.square().mean().backward()


def eq_scipy(x: torch.Tensor) -> None:
    sos = np.array([scipy.signal.tf2sos(*[c.detach().numpy() for c in filters.peak_coefs(torch.tensor(f), torch.tensor(g), torch.tensor(q), SR)])[0] for f, g, q in BELLS * 2][:6])
    scipy.signal.sosfilt(sos, x.numpy())


def comp_ours(x: torch.Tensor) -> None:
    p = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    compress(x, threshold_db=p(-20.0), ratio=p(4.0), attack_ms=p(5.0), release_ms=p(100.0), sr=SR).square().mean().backward()


def comp_torchcomp(x: torch.Tensor) -> None:
    import torchcomp

    p = lambda v: torch.tensor([v], requires_grad=True)  # noqa: E731
    rms = torchcomp.avg(x.square(), torch.tensor([0.01]))
    gain = torchcomp.compexp_gain(rms, p(-20.0), p(4.0), torch.tensor([-1000.0]), torch.tensor([0.5]), p(0.05), p(0.005))
    (x * gain).square().mean().backward()


def comp_loop(x: torch.Tensor) -> None:
    x = x[:, : SR]  # 1 s; the caller multiplies by 10
    thr, ratio = torch.tensor(-20.0, requires_grad=True), torch.tensor(4.0, requires_grad=True)
    pa, pr = torch.tensor(0.97, requires_grad=True), torch.tensor(0.9986, requires_grad=True)
    env, out = torch.zeros(()), []
    for u in x[0].abs():
        p = pa if u > env else pr
        env = p * env + (1 - p) * u
        out.append(env)
    level = 20 * torch.log10(torch.stack(out).clamp_min(1e-10))
    (x[0] * 10 ** ((1 / ratio - 1) * torch.relu(level - thr) / 20)).square().mean().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, int(SR * SECONDS))).astype(np.float32) * 0.3)
    cases = [
        ("EQ ours (rFFT grid)", eq_ours, 1), ("EQ dasp-pytorch", eq_dasp, 1), ("EQ torchaudio lfilter", eq_torchaudio, 1),
        ("EQ scipy sosfilt (fwd only)", eq_scipy, 1), ("compressor ours (numba)", comp_ours, 1),
        ("compressor torchcomp", comp_torchcomp, 1), ("compressor torch loop (1 s x 10)", comp_loop, 10),
    ]
    for name, fn, scale in cases:
        try:
            print(f"{name:36s} {scale * timed(lambda: fn(x), args.repeats):8.3f} s")
        except Exception as exc:  # a candidate that does not import or run is a result too
            print(f"{name:36s} unavailable: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:90]}")


if __name__ == "__main__":
    main()
