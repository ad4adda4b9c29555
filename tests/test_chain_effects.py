"""Differentiable effects of the chain model against references (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from stemdae.chain import Chain, ChainConfig
from stemdae.chain import filters
from stemdae.chain.dynamics import compress, envelope, time_to_pole
from stemdae.chain.ranges import RANGES
from stemdae.chain.reverb import add_reverb, impulse_response, reverb_noise

SR = 44100


@pytest.mark.parametrize(
    "kind, args",
    [
        ("peak", (1000.0, 6.0, 2.0)),
        ("peak", (60.0, -12.0, 0.5)),
        ("low", (150.0, 5.0, 0.707)),
        ("high", (6000.0, -8.0, 1.2)),
        ("hp1", (80.0,)),
        ("lp1", (6500.0,)),
    ],
)
def test_biquad_response_matches_scipy_freqz(kind, args):
    t = [torch.tensor(a, dtype=torch.float64) for a in args]
    if kind == "peak":
        b, a = filters.peak_coefs(*t, SR)
    elif kind == "hp1":
        b, a = filters.highpass1_coefs(*t, SR)
    elif kind == "lp1":
        b, a = filters.lowpass1_coefs(*t, SR)
    else:
        b, a = filters.shelf_coefs(*t, SR, high=kind == "high")
    n_fft = 4096
    ours = filters.freq_response(b, a, n_fft).numpy()
    _, ref = scipy.signal.freqz(b.numpy(), a.numpy(), worN=n_fft // 2 + 1, whole=False, include_nyquist=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    freqs = np.array([50.0, 440.0, 3000.0, 15000.0])
    _, ref_at = scipy.signal.freqz(b.numpy(), a.numpy(), worN=freqs, fs=SR)
    np.testing.assert_allclose(filters.response_at(b, a, freqs, SR).numpy(), ref_at, rtol=1e-9)
    # and the coefficients mean what their names say: the gain at the centre (bell) or far side (shelf)
    if kind not in ("hp1", "lp1"):
        probe = {"peak": args[0], "low": 20.0, "high": 20000.0}[kind]
        _, at_probe = scipy.signal.freqz(b.numpy(), a.numpy(), worN=[probe], fs=SR)
        assert 20 * np.log10(abs(at_probe[0])) == pytest.approx(args[1], abs=0.3 if kind == "peak" else 0.6)
    else:
        _, at_fc = scipy.signal.freqz(b.numpy(), a.numpy(), worN=[args[0]], fs=SR)
        assert 20 * np.log10(abs(at_fc[0])) == pytest.approx(-3.01, abs=0.05)


def test_fft_filtering_equals_the_recursive_filter_from_rest():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR // 2)
    b, a = filters.peak_coefs(torch.tensor(80.0, dtype=torch.float64), torch.tensor(9.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64), SR)
    n_fft = filters.fft_len(x.size, SR // 2)
    ours = filters.apply_response(torch.from_numpy(x), filters.freq_response(b, a, n_fft), n_fft).numpy()
    ref = scipy.signal.lfilter(b.numpy(), a.numpy(), x)
    assert np.max(np.abs(ours - ref)) < 1e-9 * np.max(np.abs(ref)) + 1e-12


@pytest.mark.parametrize("threshold_db, ratio", [(-20.0, 4.0), (-35.0, 1.5), (-10.0, 20.0)])
def test_compressor_static_curve_matches_its_formula(threshold_db, ratio):
    levels_db = np.arange(-60.0, 1.0, 5.0)
    x = torch.stack([torch.full((4410,), float(10 ** (lv / 20))) for lv in levels_db])
    y = compress(x, threshold_db=torch.tensor(threshold_db), ratio=torch.tensor(ratio), attack_ms=torch.tensor(1.0), release_ms=torch.tensor(100.0), sr=SR)
    gain_db = 20 * np.log10(y[:, -1].numpy() / x[:, -1].numpy())
    expected = np.where(levels_db > threshold_db, (1 / ratio - 1) * (levels_db - threshold_db), 0.0)
    np.testing.assert_allclose(gain_db, expected, atol=1e-3)
    assert gain_db.min() < -1.0  # the curve compresses somewhere


def test_envelope_follows_juce_ballistics():
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    att, rel = torch.tensor(2.0, dtype=torch.float64), torch.tensor(50.0, dtype=torch.float64)
    pa, pr = time_to_pole(att, SR).item(), time_to_pole(rel, SR).item()
    expected, y = [], 0.0
    for u in x[0].tolist():
        p = pa if u > y else pr
        y = p * y + (1 - p) * u
        expected.append(y)
    np.testing.assert_allclose(envelope(x, att, rel, SR)[0].numpy(), expected, rtol=1e-12)


def test_envelope_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    u = torch.tensor(rng.standard_normal((2, 300)), dtype=torch.float64, requires_grad=True)
    att = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    rel = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)  # ms: poles far from 1, so gradients are large
    assert torch.autograd.gradcheck(lambda u, a, r: envelope(u, a, r, SR), (u, att, rel), eps=1e-7, atol=1e-6)


def test_reverb_decays_at_its_rt60():
    noise = torch.from_numpy(reverb_noise(SR, ir_s=1.0, seed=0)).double()
    ir = impulse_response(noise, torch.tensor(0.4, dtype=torch.float64), SR).numpy()
    assert np.sum(ir**2) == pytest.approx(1.0)
    e = [np.mean(ir[int(t * SR) : int(t * SR) + 2205] ** 2) for t in (0.1, 0.5)]
    assert 10 * np.log10(e[1] / e[0]) == pytest.approx(-60 * 0.4 / 0.4, abs=4.0)
    x = torch.zeros(1, SR)
    x[0, 0] = 1.0
    y = add_reverb(x, torch.from_numpy(ir), torch.tensor(-6.0))
    assert y[0, 0].item() == pytest.approx(1.0 + 10 ** (-6 / 20) * ir[0], rel=1e-4)


def test_reverb_build_up_delays_the_tail_and_keeps_unit_energy():
    from stemdae.chain.reverb import envelope

    noise = torch.from_numpy(reverb_noise(SR, ir_s=1.0, seed=0)).double()
    rt60 = torch.tensor(0.8, dtype=torch.float64)
    plain = impulse_response(noise, rt60, SR).numpy()
    built = impulse_response(noise, rt60, SR, torch.tensor(20.0, dtype=torch.float64)).numpy()
    assert np.sum(built**2) == pytest.approx(1.0)
    early = slice(0, int(0.005 * SR))  # the first 5 ms: 1 - exp(-5/20) = 0.22 of the amplitude at most
    assert np.sum(built[early] ** 2) < 0.1 * np.sum(plain[early] ** 2)
    late = slice(int(0.2 * SR), int(0.3 * SR))  # after the build-up, the same decay (up to the normalisation)
    ratio = built[late] / plain[late]
    assert np.ptp(ratio) < 0.01 * np.mean(ratio)
    t = np.linspace(0, 1, 50)  # the same envelope in numpy (the renderer) and torch (the fit)
    np.testing.assert_allclose(envelope(t, 0.8, 20.0, np),
                               envelope(torch.from_numpy(t), torch.tensor(0.8, dtype=torch.float64),
                                        torch.tensor(20.0, dtype=torch.float64), torch).numpy(), rtol=1e-12)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    chain = Chain(ChainConfig(sr=SR, n_bells=2, saturation=True, reverb=True, reverb_ir_s=0.3))
    settings = chain.settings()
    settings["compressor"]["threshold_db"] = -40.0
    settings["saturation"]["drive_db"] = 12.0
    settings["lowpass"]["freq_hz"] = 5000.0
    # a section at 0 dB is the identity whatever its frequency and Q: give each some gain
    for effect, gain in (("low_shelf", 3.0), ("bell0", -4.0), ("bell1", 5.0), ("high_shelf", -3.0)):
        settings[effect]["gain_db"] = gain
    chain = Chain.from_settings(settings)
    x = 0.3 * torch.randn(2, SR // 2)
    target = 0.2 * torch.randn(2, SR // 2)
    loss = torch.mean((torch.fft.rfft(chain(x)).abs() - torch.fft.rfft(target).abs()) ** 2)
    loss.backward()
    names = [n for n, _ in chain.named_parameters()]
    assert len(names) == 1 + 1 + 1 + 3 + 2 * 3 + 3 + 5 + 3  # hp, drive, low-pass, shelves, bells, comp, reverb
    for name, p in chain.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().item() > 0, name


@pytest.mark.parametrize("logit", [-1e4, -30.0, 0.0, 30.0, 1e4, math.inf, -math.inf])
def test_parameters_stay_inside_their_ranges(logit):
    chain = Chain(ChainConfig(sr=SR, n_bells=3, saturation=True))
    with torch.no_grad():
        for p in chain.parameters():
            p.fill_(logit)
    settings = chain.settings()
    for effect, values in settings.items():
        if effect in ("format", "config"):
            continue
        family = effect.rstrip("0123456789")
        for name, value in values.items():
            rng = RANGES[family][name]
            assert math.isfinite(value) and rng.lo <= value <= rng.hi, (effect, name, value)
    assert settings["compressor"]["ratio"] >= 1.0
    with torch.no_grad():
        y = chain(0.1 * torch.randn(1, 4410))
    assert torch.isfinite(y).all()
