"""Chain model: does the preset fit recover its own reverb (RT60, wet level)?

A chain with a flat EQ, no compression and the model's own reverb (RT60 0.8 s, wet -12 dB)
processes three 4 s noise "notes" with 30 dB level jumps; ``fit_preset`` starts from RT60 0.5 s,
wet -30 dB. Separates an optimisation failure from a model mismatch (the demo corpus's vocal
reverb is pedalboard's Freeverb, which the fit did not recover: README).

    python benchmarks/bench_chain_reverb.py [--steps 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stemdae.chain import Chain, ChainConfig, fit_preset

SR = 44100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    config = ChainConfig(sr=SR, n_bells=1, reverb=True)
    s = Chain(config).settings()
    s["compressor"].update(ratio=1.0)
    s["reverb"].update(rt60_s=0.8, wet_db=-12.0)
    truth = Chain.from_settings(s)
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(3):
        n = 4 * SR
        level = np.repeat(10 ** (rng.uniform(-30, 0, n // (SR // 4) + 1) / 20), SR // 4)[:n]
        raw = (0.1 * rng.standard_normal(n) * np.convolve(level, np.ones(200) / 200, "same")).astype(np.float32)
        with torch.no_grad():
            pairs.append(np.stack([raw, truth(torch.from_numpy(raw)[None])[0].numpy()]))
    t0 = time.perf_counter()
    fitted = fit_preset(pairs, SR, steps=args.steps, seed=0, config=config, crop_s=1.0, warm_s=1.0, batch=2)
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s, loss {fitted.fit_history[0]:.4f} -> {fitted.fit_history[-1]:.4f}")
    print(f"true reverb {s['reverb']}, fitted {fitted.settings()['reverb']}")


if __name__ == "__main__":
    main()
