"""Pedalboard rendering of chain settings matches the differentiable chain (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stemdae.chain import Chain, ChainConfig, render_pedalboard
from stemdae.chain.render import JUCE_IR_NORM_DB, RATE_TOLERANCE_DB, Convolver, impulse_response, renders_at
from stemdae.errors import AudioError, ModelError

SR = 44100


def _eq_settings() -> dict:
    s = Chain(ChainConfig(sr=SR, n_bells=3, reverb=False)).settings()
    s["highpass"]["freq_hz"] = 70.0
    s["low_shelf"].update(freq_hz=180.0, gain_db=4.5, q=0.9)
    s["bell0"].update(freq_hz=350.0, gain_db=-7.0, q=2.5)
    s["bell1"].update(freq_hz=2200.0, gain_db=3.0, q=0.8)
    s["bell2"].update(freq_hz=9000.0, gain_db=-4.0, q=4.0)
    s["high_shelf"].update(freq_hz=7000.0, gain_db=5.0, q=0.707)
    s["compressor"].update(ratio=1.0)  # ratio 1: the compressor is the identity
    return s


def test_pedalboard_eq_response_within_half_a_db():
    settings = _eq_settings()
    n = 1 << 16
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1.0
    h = render_pedalboard(settings, impulse, SR)[0].astype(np.float64)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    band = (freqs >= 50) & (freqs <= 16000)
    rendered_db = 20 * np.log10(np.abs(np.fft.rfft(h))[band])
    chain_db = Chain.from_settings(settings).eq_response_db(freqs[band]).detach().numpy()
    assert np.ptp(chain_db) > 10  # a response with shape, not a flat line
    assert np.max(np.abs(rendered_db - chain_db)) < 0.5


def test_pedalboard_cabinet_low_pass_within_half_a_db():
    """A saturation chain's low-pass (two first-order sections) through pedalboard's LowpassFilter."""
    s = Chain(ChainConfig(sr=SR, n_bells=1, saturation=True, reverb=False)).settings()
    assert s["config"]["lowpass"] and list(s)[list(s).index("saturation") + 1] == "lowpass"
    s["highpass"]["freq_hz"] = 40.0
    s["saturation"]["drive_db"] = 0.0
    s["lowpass"]["freq_hz"] = 6500.0
    s["compressor"].update(ratio=1.0)
    n = 1 << 16
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1e-3  # tanh is linear here
    h = render_pedalboard(s, impulse, SR)[0].astype(np.float64) / 1e-3
    freqs = np.fft.rfftfreq(n, 1 / SR)
    band = (freqs >= 50) & (freqs <= 16000)
    rendered_db = 20 * np.log10(np.abs(np.fft.rfft(h))[band])
    chain_db = Chain.from_settings(s).eq_response_db(freqs[band]).detach().numpy()
    assert chain_db[-1] < -15  # two sections at 6.5 kHz: well down at 16 kHz
    assert np.max(np.abs(rendered_db - chain_db)) < 0.5


def test_low_pass_limit_is_the_same_in_both_renderers():
    from stemdae.chain import filters, render

    assert render.LOWPASS_MAX_FRACTION == filters.LOWPASS_MAX_FRACTION


def test_pedalboard_compressor_static_gain_within_half_a_db():
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False)).settings()
    s["highpass"]["freq_hz"] = 10.0
    s["compressor"].update(threshold_db=-24.0, ratio=5.0, attack_ms=2.0, release_ms=120.0, makeup_db=0.0)
    chain = Chain.from_settings(s)
    t = np.arange(SR // 2) / SR
    levels_db = np.arange(-48.0, 1.0, 6.0)
    x = np.stack([10 ** (lv / 20) * np.sin(2 * np.pi * 1000 * t) for lv in levels_db]).astype(np.float32)
    steady = slice(SR // 4, None)
    peak_db = lambda y: 20 * np.log10(np.abs(y[:, steady]).max(axis=1))  # noqa: E731
    rendered = peak_db(np.concatenate([render_pedalboard(s, row[None], SR) for row in x])) - peak_db(x)
    with torch.no_grad():
        ours = peak_db(chain(torch.from_numpy(x)).numpy()) - peak_db(x)
    formula = np.where(levels_db > -24.0, (1 / 5 - 1) * (levels_db + 24.0), 0.0)
    assert rendered.min() < -15  # it compresses
    np.testing.assert_allclose(ours, rendered, atol=0.5)
    np.testing.assert_allclose(rendered, formula, atol=0.5)


def test_pedalboard_renders_the_whole_chain_like_the_differentiable_one():
    s = Chain(ChainConfig(sr=SR, n_bells=2, saturation=True, reverb=True, reverb_ir_s=0.5)).settings()
    s["low_shelf"].update(gain_db=4.0)
    s["bell1"].update(gain_db=-6.0, q=2.0)
    s["compressor"].update(threshold_db=-25.0, ratio=4.0, attack_ms=3.0, release_ms=80.0, makeup_db=6.0)
    s["saturation"]["drive_db"] = 9.0
    s["reverb"].update(rt60_s=0.6, wet_db=-10.0)
    rng = np.random.default_rng(5)
    level = np.repeat(10 ** (rng.uniform(-40, 0, 12) / 20), SR // 8)
    x = (0.3 * rng.standard_normal(level.size) * level).astype(np.float32)
    rendered = render_pedalboard(s, x[None], SR)[0]
    with torch.no_grad():
        ours = Chain.from_settings(s)(torch.from_numpy(x)[None])[0].numpy()
    err_db = 10 * np.log10(np.sum((ours - rendered) ** 2) / np.sum(rendered**2))
    assert err_db < -40
    assert np.sum((rendered - x) ** 2) > 0.1 * np.sum(x**2)  # the chain changed the signal


def test_render_rejects_a_rate_that_bends_the_response_and_bad_settings():
    s = _eq_settings()
    with pytest.raises(AudioError, match="96000 Hz.*resample to 44100 Hz"):  # the 9 kHz bell: 0.7 dB off
        render_pedalboard(s, np.zeros((1, 100), np.float32), 96000)
    with pytest.raises(AudioError, match="22050 Hz"):  # below the fitted rate: never
        render_pedalboard(s, np.zeros((1, 100), np.float32), 22050)
    with pytest.raises(AudioError, match="shape"):
        render_pedalboard(s, np.zeros(100, np.float32), SR)
    with pytest.raises(ModelError, match="format"):
        render_pedalboard({"config": {"sr": SR}}, np.zeros((1, 100), np.float32), SR)


def test_a_chain_renders_at_an_admitted_rate_with_the_same_response_in_hz_and_reverb_level():
    """`stemdae process` renders at the input's rate where `renders_at` admits it (no resampling)."""
    settings = _eq_settings()
    assert renders_at(settings, 48000) and not renders_at(settings, 96000) and renders_at(settings, SR)
    n = 1 << 16
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1.0
    h = render_pedalboard(settings, impulse, 48000)[0].astype(np.float64)
    freqs = np.fft.rfftfreq(n, 1 / 48000)
    band = (freqs >= 50) & (freqs <= 16000)
    rendered_db = 20 * np.log10(np.abs(np.fft.rfft(h))[band])
    chain_db = Chain.from_settings(settings).eq_response_db(freqs[band]).detach().numpy()
    assert np.max(np.abs(rendered_db - chain_db)) < RATE_TOLERANCE_DB
    # the reverb: the wet path's energy against the dry one below 20 kHz is the same at both rates (within 0.1 dB)
    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=True, reverb_ir_s=0.5)).settings()
    s["reverb"].update(rt60_s=0.5, wet_db=-6.0)
    wet_db = {}
    for sr in (SR, 48000):
        assert impulse_response(s, sr).size == round(0.5 * sr)
        x = (0.1 * np.random.default_rng(0).standard_normal(3 * sr)).astype(np.float32)
        dry = render_pedalboard(dict(s, config=dict(s["config"], reverb=False)), x[None], sr)[0]
        wet = render_pedalboard(s, x[None], sr)[0] - dry
        wet, dry = (np.fft.irfft(np.fft.rfft(y) * (np.fft.rfftfreq(y.size, 1 / sr) < 20000), y.size) for y in (wet, dry))
        wet_db[sr] = 10 * np.log10(np.sum(wet[sr:] ** 2) / np.sum(dry[sr:] ** 2))
    assert abs(wet_db[SR] - (-6.0)) < 0.5
    assert abs(wet_db[48000] - wet_db[SR]) < 0.1


@pytest.mark.parametrize("sizes", [[5000], [7, 300, 1, 4000, 2], [20000, 20000]])
def test_convolver_streams_the_exact_convolution(sizes):
    rng = np.random.default_rng(len(sizes))
    ir = rng.standard_normal(1500).astype(np.float32)
    x = rng.standard_normal(sum(sizes)).astype(np.float32)
    conv = Convolver(ir, max_block=4096)  # blocks shorter and longer than the response, one split inside a push
    edges = np.cumsum([0, *sizes])
    y = np.concatenate([conv.push(x[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    want = np.convolve(x.astype(np.float64), ir.astype(np.float64))[: x.size]
    np.testing.assert_allclose(y, want, atol=2e-4 * np.abs(want).max())


def test_convolver_does_what_pedalboards_convolution_does():
    """The same linear operation as JUCE's engine (which scales the response to an energy of 0.125**2)."""
    import pedalboard as pb

    s = Chain(ChainConfig(sr=SR, n_bells=1, reverb=True, reverb_ir_s=0.4)).settings()
    s["reverb"].update(rt60_s=0.8, wet_db=0.0)
    ir = impulse_response(s).astype(np.float32)
    x = (0.1 * np.random.default_rng(3).standard_normal(2 * SR)).astype(np.float32)
    juce = pb.Convolution(ir, mix=1.0, sample_rate=SR)(x[None], SR)[0] * np.float32(10 ** (JUCE_IR_NORM_DB / 20))
    ours = Convolver(ir).push(x)
    err_db = 10 * np.log10(np.sum((ours - juce) ** 2) / np.sum(juce**2))
    assert err_db < -40


def test_settings_json_round_trip():
    s = _eq_settings()
    s["compressor"].update(threshold_db=-18.5, ratio=3.0)
    text = json.dumps(s)
    again = Chain.from_settings(json.loads(text)).settings()
    for effect, values in s.items():
        if effect in ("format", "config"):
            assert again[effect] == values
            continue
        for name, value in values.items():
            assert again[effect][name] == pytest.approx(value, rel=1e-4, abs=1e-4), (effect, name)


def test_from_settings_names_the_bad_key():
    s = _eq_settings()
    del s["bell1"]["q"]
    with pytest.raises(ModelError, match="bell1.q"):
        Chain.from_settings(s)
    s = _eq_settings()
    s["compressor"]["ratio"] = 0.5
    with pytest.raises(ModelError, match=r"compressor.ratio: 0.5 outside"):
        Chain.from_settings(s)


def test_saved_chain_loads_with_weights_only(tmp_path):
    s = _eq_settings()
    s["compressor"].update(threshold_db=-30.0, ratio=3.0)
    chain = Chain.from_settings(s)
    path = tmp_path / "chain.pt"
    chain.save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["settings"]["compressor"]["ratio"] == pytest.approx(3.0, rel=1e-5)
    loaded = Chain.load(path)
    x = 0.2 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), chain(x))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.pt"):
        Chain.load(tmp_path / "junk.pt")


def test_a_chain_saved_before_the_low_pass_and_the_reverb_build_up_still_loads_and_renders():
    s = Chain(ChainConfig(sr=SR, n_bells=1, saturation=True, lowpass=False, reverb=True, reverb_ir_s=0.3,
                          reverb_buildup=False)).settings()
    del s["config"]["lowpass"], s["config"]["reverb_buildup"]  # what files written before them hold
    assert "lowpass" not in s and set(s["reverb"]) == {"rt60_s", "wet_db"}
    s["reverb"]["wet_db"] = -12.0
    chain = Chain.from_settings(s)
    assert chain.config.saturation and chain.config.lowpass is False and chain.config.reverb_buildup is False
    x = (0.1 * np.random.default_rng(0).standard_normal(SR // 4)).astype(np.float32)
    with torch.no_grad():
        ours = chain(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(render_pedalboard(s, x[None], SR)[0], ours, atol=1e-4)


def test_fast_len_is_the_smallest_5_smooth_size():
    from stemdae.chain.render import fast_len

    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in [1, 2, 7, 97, 1000, 4097, 161099, 262145]:
        m = fast_len(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m)), n
