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


def make_conditional(folder: Path, *, frontend: FrontEnd | None = FE):
    """A conditional chain whose encoder moves the high shelf with the raw's brightness (hand-set weights)."""
    import torch

    from stemdae.chain.conditional import N_BANDS, ConditionalChain

    base = Chain(ChainConfig(sr=SR, n_bells=1, reverb=False))
    model = ConditionalChain(base.config, base=base, hidden=4)
    k = model.slots.index(("high_shelf", "gain_db"))
    with torch.no_grad():  # unit 0 = the top bands' level minus the bottom bands' -> the high shelf's logit
        model.encoder[0].weight.zero_()
        model.encoder[0].weight[0, N_BANDS - 4 : N_BANDS] = 1.0
        model.encoder[0].weight[0, :4] = -1.0
        model.encoder[2].weight[k, 0] = 3.0
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"group": "vocal"} | ({"frontend": frontend.to_dict()} if frontend else {})
    model.save(folder / "conditional.pt", **meta)
    return model


def tone(seconds: float, bright: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * SR)).astype(np.float32)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(noise.size, 1 / SR)
    tilt = (f / 1000.0 + 0.05) ** (1.0 if bright else -1.0)
    return (0.1 * np.fft.irfft(spec * tilt, n=noise.size) / np.std(np.fft.irfft(spec * tilt, n=noise.size))
            ).astype(np.float32)


def test_conditional_chain_renders_the_setting_predicted_from_the_loudest_window(tmp_path):
    import torch

    folder = tmp_path / "models" / "chain" / "vocal"
    model = make_conditional(folder)
    outs = {}
    for bright in (False, True):
        # 5 s: quiet first 2.5 s, loud last 2.5 s -> the loudest 2 s window is in the second half
        x = np.concatenate([0.1 * tone(2.5, bright, seed=1), tone(2.5, bright, seed=2)])
        wav = tmp_path / f"raw_{int(bright)}.wav"
        sf.write(wav, x, SR, subtype="FLOAT")
        assert main(["--root", str(tmp_path), "process", str(wav), "--model", str(folder / "conditional.pt")]) == 0
        y = sf.read(tmp_path / f"raw_{int(bright)}.vocal.wav", dtype="float32")[0]
        # what the render core must do: the loudest window at the training gain -> settings -> pedalboard
        src = ArraySource(x[None], SR)
        gain_db, start_s = loudness_gain_db(src, FE)[:2]
        assert 2.3 <= start_s <= 3.1
        g = np.float32(10 ** (gain_db / 20))
        i = round(start_s * SR)
        window = x[i : i + int(FE.window_s * SR)] * g
        settings = model.settings_for(torch.from_numpy(window[None]))[0]
        want = render_pedalboard(settings, (x * g)[None], SR)[0]
        assert np.abs(want).max() > 0.05
        np.testing.assert_allclose(y, want, atol=2e-5)
        outs[bright] = settings["high_shelf"]["gain_db"]
    # the encoder did condition: a bright raw gets a different high shelf than a dark one
    assert outs[True] - outs[False] > 3.0
    # and the preset is not what was rendered
    assert abs(outs[True] - model.base.settings()["high_shelf"]["gain_db"]) > 1.0


def test_conditional_without_front_end_is_one_line_error(tmp_path):
    make_conditional(tmp_path / "old", frontend=None)
    with pytest.raises(ModelError, match=r"conditional\.pt: no front-end record.*stemdae chain fit"):
        load_model(str(tmp_path / "old" / "conditional.pt"))


def test_preset_process_imports_neither_torch_nor_numba(tmp_path):
    """`stemdae process --model <chain>` reads chain.pt without torch (its import is ~1 s of the budget)."""
    import subprocess
    import sys

    make_chain(tmp_path / "c")
    wav = tmp_path / "in.wav"
    sf.write(wav, stereo(1.0).T, SR, subtype="FLOAT")
    code = ("import sys; from stemdae.cli import main; "
            f"rc = main(['--root', {str(tmp_path)!r}, 'process', {str(wav)!r}, '--model', {str(tmp_path / 'c')!r}]); "
            "print(rc, 'torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr[-2000:]
    assert (tmp_path / "in.bass.wav").is_file()


def test_conditional_process_imports_no_torch_and_old_files_still_load(tmp_path):
    """The encoder runs in numpy from conditional.pt's plain data; a file without `slots` loads with torch."""
    import subprocess
    import sys

    import torch

    from stemdae.chain.conditional import ConditionalChain

    folder = tmp_path / "c"
    make_conditional(folder)
    wav = tmp_path / "in.wav"
    sf.write(wav, np.concatenate([0.1 * tone(2.5, True, seed=1), tone(2.5, True, seed=2)]), SR, subtype="FLOAT")
    code = ("import sys; from stemdae.cli import main; "
            f"rc = main(['--root', {str(tmp_path)!r}, 'process', {str(wav)!r}, '--model', "
            f"{str(folder / 'conditional.pt')!r}, '-o', {str(tmp_path / 'new.wav')!r}]); "
            "print(rc, 'torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr[-2000:]
    # the same model saved as before `preset` and `slots` existed: rendered alike, through torch
    blob = torch.load(folder / "conditional.pt", weights_only=True)
    del blob["preset"], blob["slots"]
    (tmp_path / "old").mkdir()
    torch.save(blob, tmp_path / "old" / "conditional.pt")
    assert isinstance(ConditionalChain.from_blob(blob), ConditionalChain)
    assert main(["--root", str(tmp_path), "process", str(wav), "--model", str(tmp_path / "old" / "conditional.pt"),
                 "-o", str(tmp_path / "old.wav")]) == 0
    new, old = (sf.read(tmp_path / f"{n}.wav", dtype="float32")[0] for n in ("new", "old"))
    assert np.abs(new).max() > 0.05
    np.testing.assert_allclose(new, old, atol=2e-5)


def test_a_chain_renders_at_the_inputs_rate_where_its_response_allows_and_resamples_otherwise(tmp_path):
    """48 kHz into a 44.1 kHz chain: rendered at 48 kHz; 96 kHz (the 9 kHz bell 0.7 dB off): resampled."""
    from stemdae.chain.render import renders_at
    from stemdae.dsp.resample import resample

    fe = FrontEnd(sr=44100, n_fft=2048, hop=1024, target_lufs=-23.0, window_s=2.0, peak_ceiling_dbfs=-1.0)
    s = Chain(ChainConfig(sr=44100, n_bells=1, reverb=True, reverb_ir_s=0.3)).settings()
    s["bell0"].update(freq_hz=9000.0, gain_db=-4.0, q=4.0)
    s["compressor"].update(threshold_db=-24.0, ratio=3.0)
    s["reverb"].update(rt60_s=0.4, wet_db=-15.0)
    Chain.from_settings(s).save(tmp_path / "chain.pt", group="vocal", frontend=fe.to_dict())
    assert renders_at(s, 48000) and not renders_at(s, 96000)
    for sr in (48000, 96000):
        rng = np.random.default_rng(sr)
        x = (0.1 * rng.standard_normal((2, 3 * sr)) * np.linspace(0.2, 1.0, 3 * sr)).astype(np.float32)
        y = stemdae.process(x, sr, model=str(tmp_path / "chain.pt"))
        gain = np.float32(10 ** (loudness_gain_db(ArraySource(x, sr), fe)[0] / 20))
        if sr == 48000:
            want = render_pedalboard(s, x * gain, sr)
        else:
            want = resample(render_pedalboard(s, resample(x * gain, sr, 44100), 44100), 44100, sr)
        assert y.shape == x.shape and np.abs(want).max() > 0.05
        err_db = 10 * np.log10(np.sum((y - want) ** 2) / np.sum(want**2))
        assert err_db < (-100 if sr == 48000 else -60), (sr, err_db)
