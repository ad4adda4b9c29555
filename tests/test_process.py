"""stemdae.inference / stemdae.dsp.stream: streaming equals one-go, lengths, rates and layouts kept, errors per file.

A tiny real model (n_fft 2048, one hidden layer of 32, seeded random weights)
stands in for a trained one: what is tested is the plumbing around any model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stemdae
from stemdae.config import Params, Paths
from stemdae.dsp.loudness import normalize_loudness
from stemdae.dsp.stft import istft, magnitude_phase
from stemdae.dsp.stream import FrameProcessor, with_raw_phase
from stemdae.errors import AudioError, ConfigError, ModelError
from stemdae.frontend import FrontEnd, TrainedOn
from stemdae.inference import load_model, plan_outputs, process_file, process_files, serve_predict, settings_for


def make_model(path: Path, *, hidden=(32,), n_fft=2048, hop=1024, sr=44100, group="vocal", target_lufs=-23.0,
               window_s=10.0, trained_on: TrainedOn | None = None) -> Path:
    import torch

    from stemdae.model import StackedAutoencoder
    from stemdae.predictor import save_model
    from stemdae.scaling import Scaler

    torch.manual_seed(0)
    n_bins = n_fft // 2 + 1
    net = StackedAutoencoder(n_bins, list(hidden), 0.2, "relu")
    fe = FrontEnd(sr=sr, n_fft=n_fft, hop=hop, target_lufs=target_lufs, window_s=window_s, peak_ceiling_dbfs=-1.0)
    save_model(path / "model.pt", net, Scaler("log", n_bins), frontend=fe, trained_on=trained_on, group=group)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "vocal")


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load_model(str(model_dir))


def noise(n: int, *, channels: int = 1, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    env = np.linspace(0.2, 1.0, n, dtype=np.float32)  # not stationary: the gating matters
    x = amp * rng.standard_normal((channels, n)).astype(np.float32) * env
    return x[0] if channels == 1 else x


def training_gain(mono: np.ndarray, sr: int, *, target_lufs=-23.0) -> float:
    """The segments stage's gain for a recording shorter than the window (the whole of it is the window)."""
    return 10 ** (normalize_loudness(mono, sr, target_lufs=target_lufs)[1] / 20)


def reference(mono: np.ndarray, sr: int, predictor, *, gain: float | None = None) -> np.ndarray:
    """The whole-array computation: the training gain, dsp.stft, the model, raw phase, dsp.istft."""
    gain = training_gain(mono, sr) if gain is None else gain
    mag, phase = magnitude_phase((mono * gain).astype(np.float32), n_fft=2048, hop=1024)
    out = predictor.predict_magnitude(np.ascontiguousarray(mag.T)).T
    return istft(out, phase, n_fft=2048, hop=1024, length=mono.size)


# ----------------------------------------------------------------- stream


@pytest.mark.parametrize("n_fft,hop", [(2048, 1024), (64, 16), (16, 12)])
@pytest.mark.parametrize("n", [2, 9, 1000, 5003])
@pytest.mark.parametrize("chunk,block_frames", [(7, 1), (333, 3), (10**6, 10**6)])
def test_frame_processor_equals_whole_signal_stft(n_fft, hop, n, chunk, block_frames):
    x = noise(n, seed=n)
    mag, phase = magnitude_phase(x, n_fft=n_fft, hop=hop)
    ref = istft(np.sqrt(mag) * 0.3, phase, n_fft=n_fft, hop=hop, length=n)
    fp = FrameProcessor(lambda m, spec: with_raw_phase(np.sqrt(m) * 0.3, m, spec), n_fft=n_fft, hop=hop,
                        block_frames=block_frames)
    y = np.concatenate([*(fp.push(x[i:i + chunk]) for i in range(0, n, chunk)), fp.finish()])
    assert y.shape == (n,)
    np.testing.assert_allclose(y, ref, atol=2e-6 * max(1.0, np.abs(ref).max()))


def test_frame_processor_state_stays_bounded():
    fp = FrameProcessor(lambda m, spec: spec, n_fft=2048, hop=1024, block_frames=16)
    x = noise(44100)
    held = []
    for _ in range(40):  # 40 s of audio through a 16-frame block
        fp.push(x)
        held.append(fp._buf.size + fp._acc.size)
    assert max(held) < 4 * 44100  # state is one read block plus a frame, not the stream so far
    assert max(held[20:]) <= max(held[:20])


# ----------------------------------------------------------------- in memory


def test_process_matches_whole_array_reference(model_dir, predictor):
    x = noise(44100 * 4, channels=2)
    mono = x.mean(axis=0)
    y = stemdae.process(x, 44100, model=str(model_dir), channels="mono")
    ref = reference(mono, 44100, predictor)
    assert y.shape == (x.shape[1],) and y.dtype == np.float32
    assert np.abs(ref).max() > 1e-4  # the model does output something
    np.testing.assert_allclose(y, ref, atol=1e-6 * np.abs(ref).max() + 1e-9)
    # the input's layout by default, linked: the gain of the mono downmix's window, the model on the mean
    # spectrum, its per-bin gain on each channel's own spectrum
    both = stemdae.process(x, 44100, model=str(model_dir))
    assert both.shape == x.shape
    g = training_gain(mono, 44100)
    mid_mag, _ = magnitude_phase((mono * g).astype(np.float32), n_fft=2048, hop=1024)
    mags = [magnitude_phase((x[c] * g).astype(np.float32), n_fft=2048, hop=1024) for c in range(2)]
    rms = np.sqrt((mags[0][0] ** 2 + mags[1][0] ** 2) / 2)
    gain = predictor.predict_magnitude(np.ascontiguousarray(mid_mag.T)).T / np.maximum(mid_mag, 0.1 * rms)
    for c, (mag_c, phase_c) in enumerate(mags):
        ref_c = istft(mag_c * gain, phase_c, n_fft=2048, hop=1024, length=x.shape[1])
        np.testing.assert_allclose(both[c], ref_c, atol=2e-6 * np.abs(ref_c).max() + 1e-9)


def test_stemdae_process_stays_callable_after_importing_inference(predictor):
    import stemdae.inference  # noqa: F401  (no submodule named ``process`` can shadow the function)

    y = stemdae.process(noise(5000), 44100, model=predictor)
    assert y.shape == (5000,)
    assert callable(stemdae.process)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("n", [1, 2, 777, 2048, 33333])
def test_length_and_rate_kept(predictor, sr, n):
    y = stemdae.process(noise(n, channels=2), sr, model=predictor)
    assert y.shape == (2, n)
    assert np.isfinite(y).all()
    assert stemdae.process(noise(n, channels=2), sr, model=predictor, channels="mono").shape == (n,)


@pytest.mark.parametrize("channels_in,mode,channels_out", [(1, "stereo", 2), (2, "stereo", 2), (2, "mono", 1),
                                                           (3, "same", 3), (1, "same", 1)])
def test_channel_layouts(predictor, channels_in, mode, channels_out):
    x = noise(20000, channels=channels_in, seed=3)
    y = np.atleast_2d(stemdae.process(np.atleast_2d(x), 44100, model=predictor, channels=mode))
    assert y.shape == (channels_out, 20000)
    if channels_in == 1 and channels_out == 2:
        np.testing.assert_array_equal(y[0], y[1])
    with pytest.raises(AudioError, match="--channels stereo takes a mono or stereo input"):
        stemdae.process(noise(5000, channels=4), 44100, model=predictor, channels="stereo")


def test_restore_loudness_undoes_the_input_gain(predictor):
    x = noise(44100 * 3, amp=0.01)
    y_default = stemdae.process(x, 44100, model=predictor)
    y = stemdae.process(x, 44100, model=predictor, restore_loudness=True)
    np.testing.assert_allclose(y, y_default / training_gain(x, 44100), rtol=1e-4, atol=1e-9)
    # Without it the input is normalised first, so the output does not depend on the input's level ...
    np.testing.assert_allclose(stemdae.process(x * 8, 44100, model=predictor), y_default,
                               atol=1e-5 * np.abs(y_default).max())
    # ... with it, the output follows the input's level.
    y_loud = stemdae.process(x * 8, 44100, model=predictor, restore_loudness=True)
    np.testing.assert_allclose(y_loud, 8 * y, atol=1e-5 * np.abs(y_loud).max())


def test_griffinlim_is_more_consistent_than_raw_phase(predictor):
    x = noise(44100 * 2)
    y_raw = stemdae.process(x, 44100, model=predictor)
    y_gl = stemdae.process(x, 44100, model=predictor, phase="griffinlim")
    assert y_gl.shape == y_raw.shape and np.isfinite(y_gl).all()
    gain = training_gain(x, 44100)
    target = predictor.predict_magnitude(magnitude_phase(x * gain, n_fft=2048, hop=1024)[0].T.copy()).T

    def inconsistency(y):
        return np.linalg.norm(magnitude_phase(y, n_fft=2048, hop=1024)[0] - target) / np.linalg.norm(target)

    assert inconsistency(y_gl) < inconsistency(y_raw)


def test_serve_predict_magnitude_and_audio(predictor):
    x = noise(20000)
    mag = magnitude_phase(x, n_fft=2048, hop=1024)[0].T.copy()
    np.testing.assert_array_equal(serve_predict(predictor, mag), predictor.predict_magnitude(mag))
    y = serve_predict(predictor, x[None, :], {"input": "audio", "sr": 44100})
    np.testing.assert_allclose(y[0], stemdae.process(x, 44100, model=predictor), atol=1e-7)
    stereo = noise(20000, channels=2)
    assert serve_predict(predictor, stereo, {"input": "audio", "sr": 44100}).shape == (2, 20000)
    with pytest.raises(ConfigError, match="params.input"):
        serve_predict(predictor, mag, {"input": "video"})


@pytest.mark.parametrize("audio,match", [
    (np.zeros(0, np.float32), "expected audio of shape"),
    (np.array([0.1, np.nan, 0.2], np.float32), "1 NaN/Inf"),
    (np.zeros((1000, 2), np.float32), "transposed"),
    (np.zeros((2, 100), np.complex64), "dtype complex64"),
    (np.zeros((2, 3, 4), np.float32), "expected audio of shape"),
])
def test_bad_audio(predictor, audio, match):
    with pytest.raises(AudioError, match=match):
        stemdae.process(audio, 44100, model=predictor)


def test_bad_group_model_phase(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown group 'drums'"):
        stemdae.process(noise(5000), 44100, group="drums", model=str(model_dir))
    with pytest.raises(ModelError, match="no model here"):
        stemdae.process(noise(5000), 44100, model=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="phase"):
        stemdae.process(noise(5000), 44100, model=str(model_dir), phase="zero")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable model file"):
        stemdae.process(noise(5000), 44100, model=str(tmp_path / "broken"))


def test_model_front_end_comes_from_the_model_file(tmp_path):
    pred = load_model(str(make_model(tmp_path / "small", n_fft=256, hop=64, sr=16000, target_lufs=-18.0)))
    st = settings_for(pred)
    assert (st.frontend.n_fft, st.frontend.hop, st.frontend.sr, st.frontend.target_lufs) == (256, 64, 16000, -18.0)
    assert stemdae.process(noise(3000), 16000, model=pred).shape == (3000,)


def test_old_model_file_without_front_end_is_a_clear_error(tmp_path):
    import torch

    d = torch.load(make_model(tmp_path / "new") / "model.pt", weights_only=True)
    d["format"] = "stemdae-model/1"
    del d["frontend"]
    (tmp_path / "old").mkdir()
    torch.save(d, tmp_path / "old" / "model.pt")
    with pytest.raises(ModelError, match=r"model.pt: written by an older stemdae .* retrain"):
        stemdae.process(noise(3000), 16000, model=str(tmp_path / "old"))


def test_model_file_holds_plain_data_only(model_dir, capsys):
    """weights_only=True (torch) and the numpy engine's own unpickler: loading a model file cannot run pickled code."""
    import pickle

    import torch

    d = torch.load(model_dir / "model.pt", weights_only=True)
    assert d["format"] == "stemdae-model/2" and d["frontend"]["target_lufs"] == -23.0

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (str, int, float, bool, torch.Tensor))

    assert plain(d)

    class Evil:  # an object that would run code when unpickled
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({**d, "extra": Evil()}, model_dir.parent / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(model_dir.parent / "evil.pt", weights_only=True)
    with pytest.raises(ModelError, match="not a readable model file"):
        load_model(str(model_dir.parent / "evil.pt"), engine="torch")
    with pytest.raises(ModelError, match=r"evil.pt: refusing to load __builtin__.print"):
        load_model(str(model_dir.parent / "evil.pt"))  # the numpy engine (fp32 on the CPU)
    assert "pwned" not in capsys.readouterr().out


# ----------------------------------------------------------------- files


def test_file_in_blocks_equals_one_go(predictor, tmp_path):
    sr, n = 48000, 48000 * 5 + 123
    path = tmp_path / "in.wav"
    sf.write(path, noise(n, channels=2).T, sr, subtype="FLOAT")
    one = dataclasses.replace(settings_for(predictor), block_frames=100_000)
    blocks = dataclasses.replace(one, block_frames=5)
    process_file(path, tmp_path / "one.wav", predictor=predictor, st=one, read_block=10**7)
    process_file(path, tmp_path / "blocks.wav", predictor=predictor, st=blocks, read_block=4099)
    y1, sr1 = sf.read(tmp_path / "one.wav", dtype="float32")
    y2, sr2 = sf.read(tmp_path / "blocks.wav", dtype="float32")
    assert sr1 == sr2 == sr and y1.shape == y2.shape == (n, 2)
    assert np.abs(y1).max() > 1e-4
    np.testing.assert_allclose(y2, y1, atol=1e-6 * np.abs(y1).max())
    # and equal to the in-memory API on the same samples
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    np.testing.assert_allclose(stemdae.process(x.T, sr, model=predictor).T, y1, atol=1e-6 * np.abs(y1).max())



def test_linked_stereo_keeps_the_image_and_runs_the_model_once(predictor, tmp_path):
    """Linked rendering: the model sees the channels' mean once per frame; its gain applies to every channel."""
    sr, n = 44100, 44100 * 3 + 77
    x = noise(n, seed=4)
    calls = []
    tap = lambda c, m_in, m_out: calls.append((c, m_in.shape))  # noqa: E731
    for pan in (0.5, 0.9, 1.0):  # a mono source panned: L = a x, R = b x
        a, b = np.float32(pan), np.float32(np.sqrt(1 - pan**2))
        xs = np.stack([a * x, b * x])
        calls.clear()
        y = stemdae.process(xs, sr, model=predictor, tap=tap)
        assert y.shape == xs.shape and np.abs(y[0]).max() > 1e-4
        assert {c for c, _ in calls} == {0} and sum(s[0] for _, s in calls) == 1 + n // 1024  # one model call per frame
        if b > 0:  # the level difference between the channels is the input's, exactly
            np.testing.assert_allclose(y[1] * a, y[0] * b, atol=1e-6 * np.abs(y).max())
        else:
            assert np.abs(y[1]).max() < 1e-6 * np.abs(y[0]).max()
    # three different channels through a file, in blocks: each stays in its place, equal to one go
    path = tmp_path / "in.wav"
    sf.write(path, noise(n, channels=3, seed=4).T, sr, subtype="FLOAT")
    base = settings_for(predictor)
    process_file(path, tmp_path / "blocks.wav", predictor=predictor, st=dataclasses.replace(base, block_frames=7),
                 read_block=5001)
    process_file(path, tmp_path / "one.wav", predictor=predictor, st=base, read_block=10**7)
    y1, _ = sf.read(tmp_path / "blocks.wav", dtype="float32")
    y2, _ = sf.read(tmp_path / "one.wav", dtype="float32")
    assert y1.shape == y2.shape == (n, 3) and not np.array_equal(y1[:, 0], y1[:, 1])
    np.testing.assert_allclose(y1, y2, atol=1e-6 * np.abs(y2).max())


def test_bf16_precision_close_to_fp32_and_checked(model_dir, predictor):
    assert predictor.engine == "numpy"  # fp32 on the CPU: the torch-free engine
    with pytest.raises(ModelError, match="the numpy engine computes in fp32, not bf16"):
        stemdae.process(noise(44100, channels=2), 44100, model=predictor, precision="bf16")
    predictor = load_model(str(model_dir), engine="torch")
    x = noise(44100 * 3, channels=2, seed=5)
    y32 = stemdae.process(x, 44100, model=predictor)
    y16 = stemdae.process(x, 44100, model=predictor, precision="bf16")
    assert y16.shape == y32.shape == x.shape
    assert not np.array_equal(y16, y32)  # the network really ran in bfloat16
    np.testing.assert_allclose(y16, y32, atol=0.02 * np.abs(y32).max())
    mag = np.abs(np.random.default_rng(1).standard_normal((8, predictor.n_bins))).astype(np.float32)
    np.testing.assert_array_equal(predictor.predict_magnitude(mag, precision="fp32"), predictor.predict_magnitude(mag))
    with pytest.raises(ModelError, match="precision: expected one of"):
        predictor.predict_magnitude(mag, precision="fp16")
    with pytest.raises(ConfigError, match="precision: expected one of"):
        settings_for(predictor, precision="half")

def _write_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    (folder / "sub").mkdir()
    files = {
        "stereo": folder / "a.wav",
        "flac": folder / "sub" / "b.flac",
        "nan": folder / "nan.wav",
        "bad": folder / "bad.wav",
        "empty": folder / "empty.wav",
    }
    sf.write(files["stereo"], noise(48000 * 2, channels=2).T, 48000)
    sf.write(files["flac"], noise(22050), 22050)
    x = noise(44100)
    x[5000] = np.nan
    sf.write(files["nan"], x, 44100, subtype="FLOAT")
    files["bad"].write_bytes(b"RIFF but not really audio" * 8)
    sf.write(files["empty"], np.zeros((0, 1)), 44100)
    return files


def test_batch_parallel_with_failures(model_dir, tmp_path):
    files = _write_inputs(tmp_path / "in")
    report = process_files([tmp_path / "in", tmp_path / "missing.wav"], group="vocal", params=Params(),
                           paths=Paths(tmp_path), model=str(model_dir), out=tmp_path / "out", jobs=2)
    assert report.exit_code == 1
    assert report.counts["processed"] == 2 and report.counts["failed"] == 4
    reasons = {Path(s.file).name: s.reason for s in report.skips}
    assert "NaN" in reasons["nan.wav"] and "empty" in reasons["empty.wav"]
    assert "cannot read audio" in reasons["bad.wav"] and "not found" in reasons["missing.wav"]
    assert all("\n" not in line for line in report.text().splitlines()[1:])
    out_a, out_b = tmp_path / "out" / "a.vocal.wav", tmp_path / "out" / "sub" / "b.vocal.wav"
    assert sf.info(out_a).samplerate == 48000 and sf.info(out_a).frames == 96000
    assert sf.info(out_b).samplerate == 22050 and sf.info(out_b).frames == 22050
    assert not list((tmp_path / "out").rglob(".*tmp*"))  # no half-written files left
    wide = tmp_path / "wide.wav"  # more channels than the corpus reader allows
    sf.write(wide, noise(3000, channels=10).T, 16000)
    assert process_files([wide], group="vocal", params=Params(), paths=Paths(tmp_path), model=str(model_dir),
                         out=tmp_path / "wide-out.wav", jobs=1).exit_code == 0
    assert sf.info(tmp_path / "wide-out.wav").frames == 3000
    assert files["stereo"].exists()


def test_batch_glob_single_output_and_unwritable(model_dir, tmp_path):
    _write_inputs(tmp_path / "in")
    report = process_files([tmp_path / "in" / "*.wav"], group="vocal", params=Params(), paths=Paths(tmp_path),
                           model=str(model_dir), out=None, jobs=1)
    assert (tmp_path / "in" / "a.vocal.wav").is_file()  # beside the input by default
    assert report.counts["processed"] == 1
    again = process_files([tmp_path / "in"], group="vocal", params=Params(), paths=Paths(tmp_path),
                          model=str(model_dir), out=None, jobs=1)
    assert again.counts["processed"] == 2  # a.wav and sub/b.flac, not the earlier output a.vocal.wav
    (tmp_path / "blocker").write_text("a file where a folder should be")
    bad = process_files([tmp_path / "in" / "a.wav"], group="vocal", params=Params(), paths=Paths(tmp_path),
                        model=str(model_dir), out=tmp_path / "blocker" / "x.wav", jobs=1)
    assert bad.exit_code == 1 and "blocker/x.wav: cannot write" in bad.skips[0].reason
    one = process_files([tmp_path / "in" / "a.wav"], group="vocal", params=Params(), paths=Paths(tmp_path),
                        model=str(model_dir), out=tmp_path / "named.wav", jobs=1)
    assert one.exit_code == 0 and (tmp_path / "named.wav").is_file()


def test_plan_outputs_avoids_collisions(tmp_path):
    files = [(tmp_path / "x" / "a.wav", Path("a.wav")), (tmp_path / "y" / "a.wav", Path("a.wav"))]
    jobs = plan_outputs(files, tmp_path / "out", group="bass")
    assert [j.out.name for j in jobs] == ["a.bass.wav", "a-2.bass.wav"]


def test_cli_one_line_errors(model_dir, tmp_path, capsys):
    from stemdae.cli import main

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    x = tmp_path / "x.wav"
    sf.write(x, noise(8000), 16000)
    rc = main(["--params", str(params), "--root", str(tmp_path), "process", str(x), "--group", "drums",
               "--model", str(model_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "unknown group 'drums'" in err
    rc = main(["-q", "--params", str(params), "--root", str(tmp_path), "process", str(x), "--group", "vocal",
               "--model", str(model_dir), "-o", str(tmp_path / "y.wav"), "--restore-loudness"])
    assert rc == 0 and sf.info(tmp_path / "y.wav").frames == 8000
    y, sr = sf.read(tmp_path / "y.wav", dtype="float32")
    ref = stemdae.process(sf.read(x, dtype="float32")[0], 16000, model=str(model_dir), restore_loudness=True)
    assert sr == 16000
    np.testing.assert_allclose(y, ref, atol=1e-6 * np.abs(ref).max())
