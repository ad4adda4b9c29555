"""`stemdae process --model models/chain/<group>`: a chain model through the same front end, rendered by pedalboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stemdae
from stemdae.chain import Chain, ChainConfig
from stemdae.chain.render import render_pedalboard
from stemdae.cli import main
from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd
from stemdae.inference import load_model
from stemdae.inference.files import ArraySource
from stemdae.inference.render import loudness_gain_db

SR = 22050
FE = FrontEnd(sr=SR, n_fft=1024, hop=512, target_lufs=-23.0, window_s=2.0, peak_ceiling_dbfs=-1.0)


def make_chain(folder: Path, *, frontend: FrontEnd | None = FE) -> dict:
    s = Chain(ChainConfig(sr=SR, n_bells=2, reverb=True, reverb_ir_s=0.3)).settings()
    s["low_shelf"].update(gain_db=4.0)
    s["bell1"].update(freq_hz=2500.0, gain_db=-6.0, q=1.5)
    s["compressor"].update(threshold_db=-24.0, ratio=4.0, attack_ms=5.0, release_ms=80.0, makeup_db=3.0)
    s["reverb"].update(rt60_s=0.4, wet_db=-18.0)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"group": "bass"} | ({"frontend": frontend.to_dict()} if frontend else {})
    Chain.from_settings(s).save(folder / "chain.pt", **meta)
    return s


def stereo(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) / 2
    right = 0.05 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def expected(settings: dict, x: np.ndarray) -> np.ndarray:
    gain_db = loudness_gain_db(ArraySource(x, SR), FE)[0]
    return render_pedalboard(settings, x * np.float32(10 ** (gain_db / 20)), SR)


def test_process_cli_renders_the_chain_through_pedalboard(tmp_path):
    settings = make_chain(tmp_path / "models" / "chain" / "bass")
    x = stereo()
    wav = tmp_path / "in.wav"
    sf.write(wav, x.T, SR, subtype="FLOAT")
    rc = main(["--root", str(tmp_path), "process", str(wav), "--model", str(tmp_path / "models" / "chain" / "bass")])
    assert rc == 0
    y, sr = sf.read(tmp_path / "in.bass.wav", dtype="float32", always_2d=True)
    assert sr == SR and y.shape == x.T.shape  # stereo in, stereo out, same length and rate
    want = expected(settings, x)
    assert np.abs(want).max() > 0.05  # not a silent comparison
    np.testing.assert_allclose(y.T, want, atol=2e-5)
    # overwrite protection applies: the output cannot be the input
    assert main(["--root", str(tmp_path), "process", str(wav), "--model", str(tmp_path / "models" / "chain" / "bass"),
                 "-o", str(wav)]) != 0
    assert np.array_equal(sf.read(wav, dtype="float32", always_2d=True)[0], x.T)


def test_process_in_memory_restore_loudness_and_other_rate(tmp_path):
    settings = make_chain(tmp_path / "c")
    x = stereo(2.5, seed=1)
    y = stemdae.process(x, SR, model=str(tmp_path / "c" / "chain.pt"), restore_loudness=True)
    gain_db = loudness_gain_db(ArraySource(x, SR), FE)[0]
    np.testing.assert_allclose(y, expected(settings, x) * np.float32(10 ** (-gain_db / 20)), atol=2e-5)
    x48 = (0.2 * np.sin(2 * np.pi * 220 * np.arange(48000) / 48000)).astype(np.float32)
    mono48 = stemdae.process(x48, 48000, model=str(tmp_path / "c"))  # resampled to the chain's rate and back
    assert mono48.shape == (48000,) and np.isfinite(mono48).all() and np.abs(mono48).max() > 0


def test_chain_without_front_end_is_one_line_error(tmp_path):
    make_chain(tmp_path / "old", frontend=None)
    with pytest.raises(ModelError, match=r"chain\.pt: no front-end record.*stemdae chain fit"):
        load_model(str(tmp_path / "old" / "chain.pt"))
