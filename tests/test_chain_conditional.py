"""Conditional mode: settings predicted per segment from the raw (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemdae.chain import Chain, ChainConfig
from stemdae.chain.chain import eq_coefs
from stemdae.chain.conditional import ConditionalChain, fit_conditional, raw_features
from stemdae.chain.filters import response_at
from stemdae.chain.ranges import RANGES

SR = 44100


def _noise(rng: np.random.Generator, n: int, *, tilt_db_per_oct: float) -> np.ndarray:
    """Noise with a spectral tilt (dark < 0 < bright), unit RMS * 0.1."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    spectrum *= 10 ** (tilt_db_per_oct * np.log2(freqs / 1000.0) / 20)
    x = np.fft.irfft(spectrum, n)
    return (0.1 * x / np.std(x)).astype(np.float32)


def test_untrained_conditional_chain_is_its_preset_and_gradients_reach_the_encoder():
    base_settings = Chain(ChainConfig(sr=SR, n_bells=1, reverb=True, reverb_ir_s=0.2)).settings()
    base_settings["high_shelf"]["gain_db"] = 4.0
    base = Chain.from_settings(base_settings)
    model = ConditionalChain(base=base)
    x = torch.from_numpy(np.stack([_noise(np.random.default_rng(i), SR // 2, tilt_db_per_oct=t) for i, t in ((0, -3.0), (1, 3.0))]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=1e-4, atol=1e-6)
    model(x).square().mean().backward()
    assert model.encoder[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    feats = raw_features(x, SR)
    assert feats.shape == (2, 19) and torch.isfinite(feats).all()
    assert (feats[1, 12] - feats[1, 0]) - (feats[0, 12] - feats[0, 0]) > 1.0  # bright vs dark tilt (dB / 20)


def test_predicted_settings_stay_in_range():
    model = ConditionalChain(ChainConfig(sr=SR, n_bells=2, saturation=True, reverb=False))
    with torch.no_grad():
        model.encoder[-1].bias.fill_(1e4)
    rows = model.settings_for(torch.randn(3, SR // 4))
    assert len(rows) == 3
    for effect, values in rows[0].items():
        if effect in ("format", "config"):
            continue
        for name, value in values.items():
            assert RANGES[effect.rstrip("0123456789")][name].lo <= value <= RANGES[effect.rstrip("0123456789")][name].hi


def test_conditional_fit_learns_a_setting_that_depends_on_the_raw():
    # The "engineer" brightens dark recordings and darkens bright ones: no single preset can.
    config = ChainConfig(sr=SR, n_bells=1, reverb=False)
    pairs, truths = [], {}
    for i, (tilt, shelf_db) in enumerate([(-3.0, 8.0), (3.0, -8.0)] * 2):
        s = Chain(config).settings()
        s["high_shelf"].update(freq_hz=4000.0, gain_db=shelf_db)
        s["compressor"].update(ratio=1.0)
        raw = _noise(np.random.default_rng(i), 2 * SR, tilt_db_per_oct=tilt)
        with torch.no_grad():
            pairs.append(np.stack([raw, Chain.from_settings(s)(torch.from_numpy(raw)[None])[0].numpy()]))
        truths[tilt] = shelf_db
    model = fit_conditional(pairs, SR, steps=60, seed=0, config=config, crop_s=0.25, warm_s=0.05, batch=4, lr=0.05)
    probe = torch.from_numpy(np.stack([pairs[0][0][: SR // 2], pairs[1][0][: SR // 2]]))
    with torch.no_grad():
        values = model.predict_values(probe)
        b, a = eq_coefs(values, config)
        at_10k = 20 * torch.log10(response_at(b, a, [10000.0], SR).prod(-2).abs())[:, 0]
    # the two predicted EQs differ at 10 kHz in the true direction by at least half of the true
    # 16 dB (a preset cannot differ at all)
    assert 8.0 < at_10k[0] - at_10k[1] < 20.0


def test_conditional_chain_saves_and_loads_with_weights_only(tmp_path):
    model = ConditionalChain(ChainConfig(sr=SR, n_bells=1, reverb=False))
    with torch.no_grad():
        model.encoder[-1].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    model.save(tmp_path / "cond.pt")
    assert torch.load(tmp_path / "cond.pt", weights_only=True)["hidden"] == 64
    loaded = ConditionalChain.load(tmp_path / "cond.pt")
    x = torch.randn(2, SR // 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.settings_for(x)[0] != loaded.settings_for(x)[1]  # per-segment settings


def test_the_numpy_encoder_gives_the_torch_models_settings(tmp_path):
    """`stemdae process` runs the encoder in numpy from the file's plain data; same settings as torch's."""
    from stemdae.chain.encoder import numpy_settings
    from stemdae.chain.encoder import raw_features as np_features
    from stemdae.chain.record import CONDITIONAL_FORMAT, read_blob

    torch.manual_seed(0)
    model = ConditionalChain(ChainConfig(sr=SR, n_bells=2, saturation=True, reverb=True, reverb_ir_s=0.2), hidden=8)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.normal_(0.0, 0.5)  # a trained-looking encoder: every setting moves
    model.save(tmp_path / "conditional.pt", group="guitar")
    blob = read_blob(tmp_path / "conditional.pt", CONDITIONAL_FORMAT)
    rng = np.random.default_rng(1)
    moved = 0
    for tilt in (-4.0, 0.0, 4.0):
        x = _noise(rng, SR, tilt_db_per_oct=tilt)
        np.testing.assert_allclose(np_features(x[None], SR), raw_features(torch.from_numpy(x[None]), SR).numpy(),
                                   rtol=1e-4, atol=1e-5)
        ours, want = numpy_settings(blob, x), model.settings_for(torch.from_numpy(x[None]))[0]
        assert ours.keys() == want.keys() and ours["config"] == want["config"]
        for effect, values in want.items():
            if effect in ("format", "config"):
                continue
            for name, value in values.items():
                assert ours[effect][name] == pytest.approx(value, rel=1e-4, abs=1e-4), (effect, name)
                moved += value != blob["preset"][effect][name]
    assert moved > 30  # the comparison is not of presets
