"""io: windowed reads of every sample format/rate/channel count, streaming energies, bad files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemdae.dsp.energy import frame_energies
from stemdae.dsp.resample import resample
from stemdae.errors import AudioError, CacheError
from stemdae.io import (audio_info, frame_energies_file, npy_header, read_csv, read_frames, read_json,
                        read_window, save_npy_atomic, write_csv, write_json, write_wav)


def _noise(n: int, channels: int = 1, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """(channels, n) float32, each channel different."""
    x = amp * np.random.default_rng(seed).standard_normal((channels, n))
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def _write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, x.T, sr, subtype=subtype)
    return path


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize(("subtype", "tol"), [("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6),
                                              ("PCM_32", 1e-7), ("FLOAT", 0), ("DOUBLE", 1e-7)])
def test_read_window_every_sample_format(tmp_path, subtype, tol):
    sr = 8000
    x = _noise(3 * sr, channels=2)
    path = _write(tmp_path / f"a_{subtype}.wav", x, sr, subtype)
    info = audio_info(path)
    assert info == (sr, 2, 3 * sr, subtype)
    y = read_window(path, start_s=1.25, duration_s=0.5)
    assert y.dtype == np.float32 and y.shape == (2, 4000)
    np.testing.assert_allclose(y, x[:, 10000:14000], atol=tol)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
def test_read_window_channels(tmp_path, channels):
    x = _noise(16000, channels=channels, seed=channels)
    path = _write(tmp_path / "c.wav", x, 8000, "FLOAT")
    y = read_window(path, start_s=0.5, duration_s=1.0)
    np.testing.assert_array_equal(y, x[:, 4000:12000])
    mono = read_window(path, start_s=0.5, duration_s=1.0, mono=True)
    assert mono.shape == (1, 8000)
    np.testing.assert_allclose(mono[0], x[:, 4000:12000].mean(axis=0), atol=1e-7)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
def test_read_window_resamples_a_sine_in_place_and_length_exact(tmp_path, sr):
    target = 44100
    t = np.arange(int(2.3 * sr)) / sr
    path = _write(tmp_path / f"s{sr}.wav", (0.5 * np.sin(2 * np.pi * 1000 * t))[None], sr, "PCM_24")
    start_s, dur = 0.7, 1.0
    y = read_window(path, start_s=start_s, duration_s=dur, target_sr=target)
    assert y.shape == (1, round(dur * target)) and y.dtype == np.float32
    spec = np.abs(np.fft.rfft(y[0] * np.hanning(y.shape[1])))
    assert np.fft.rfftfreq(y.shape[1], 1 / target)[np.argmax(spec)] == pytest.approx(1000, abs=1.5)
    # phase-exact: sample k is at time start_s + k / target of the original sine
    ref = 0.5 * np.sin(2 * np.pi * 1000 * (start_s + np.arange(y.shape[1]) / target))
    np.testing.assert_allclose(y[0], ref, atol=2e-3)


def test_windowed_resampling_equals_cutting_the_whole_file(tmp_path):
    sr, target = 48000, 44100
    x = _noise(2 * sr, channels=1, seed=3)
    path = _write(tmp_path / "w.wav", x, sr, "FLOAT")
    y = read_window(path, start_s=0.6, duration_s=0.5, target_sr=target)
    whole = resample(x, sr, target)
    k = round(0.6 * target)
    np.testing.assert_allclose(y, whole[:, k:k + y.shape[1]], atol=1e-4)


def test_window_at_the_very_end_of_the_file(tmp_path):
    path = _write(tmp_path / "e.wav", _noise(22050, seed=4), 22050, "FLOAT")
    y = read_window(path, start_s=0.5, duration_s=0.5, target_sr=44100)
    assert y.shape == (1, 22050) and np.all(np.isfinite(y))


def test_streamed_frame_energies_match_in_memory(tmp_path):
    x = _noise(300_001, channels=2, seed=5)  # more than two read blocks, odd length
    path = _write(tmp_path / "long.wav", x, 8000, "FLOAT")
    info, e = frame_energies_file(path, hop=441)
    assert info.frames == 300_001
    expected = frame_energies(x.mean(axis=0, dtype=np.float64), hop=441)
    assert e.shape == (300_001 // 441,)
    np.testing.assert_allclose(e, expected, rtol=1e-6)


# ------------------------------------------------------------------ bad input


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = _write(tmp_path / "good.wav", _noise(16000), 8000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = tmp_path / "truncated.wav"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = _write(tmp_path / "empty.wav", np.zeros((1, 0), np.float32), 8000)
    nan = _noise(16000)
    nan[0, 5000] = np.nan
    nan[0, 7000] = np.inf
    nonfinite = _write(tmp_path / "nonfinite.wav", nan, 8000, "FLOAT")
    return {"good": good, "corrupt": corrupt, "truncated": truncated, "empty": empty,
            "nonfinite": nonfinite, "missing": tmp_path / "missing.wav"}


@pytest.mark.parametrize(("name", "match", "kind"), [
    ("corrupt", "cannot read audio", "unreadable"),
    ("truncated", r"truncated \(header declares 32000 data bytes, file holds", "truncated"),
    ("empty", "found 0 frames", "empty"),
    ("missing", "not found", "missing"),
    ("nonfinite", "found 2 NaN/Inf", "non_finite"),
])
def test_bad_files_raise_naming_the_file(tmp_path, name, match, kind):
    path = _bad_files(tmp_path)[name]
    for call in (lambda: read_window(path, start_s=0.0, duration_s=1.0, target_sr=16000),
                 lambda: frame_energies_file(path, hop=80)):
        with pytest.raises(AudioError, match=f"{path.name}.*{match}") as info:
            call()
        assert info.value.file == str(path) and info.value.kind == kind


def test_nonfinite_samples_can_be_zeroed(tmp_path, caplog):
    path = _bad_files(tmp_path)["nonfinite"]
    y = read_window(path, start_s=0.0, duration_s=1.0, nonfinite="zero")
    assert np.all(np.isfinite(y)) and y[0, 5000] == 0 and y[0, 7000] == 0
    assert "2 NaN/Inf samples set to 0" in caplog.text


def test_window_outside_the_file(tmp_path):
    path = _bad_files(tmp_path)["good"]
    with pytest.raises(AudioError,
                       match=r"good\.wav: shorter than the window \(expected 1\.500\.\.2\.500 s, found 2\.000 s\)"):
        read_window(path, start_s=1.5, duration_s=1.0)
    with pytest.raises(AudioError, match=r"good\.wav: expected the range \[-1, 9\)"):
        read_frames(path, start=-1, frames=10)


# ------------------------------------------------------------------ writes


def test_write_wav_roundtrip_is_atomic(tmp_path):
    x = _noise(800, channels=2)
    out = tmp_path / "sub" / "o.wav"
    write_wav(out, x, 8000)
    y, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == 8000 and sf.info(out).subtype == "FLOAT"
    np.testing.assert_array_equal(y.T, x)
    assert [p.name for p in out.parent.iterdir()] == ["o.wav"]


def test_json_csv_npy_roundtrips_and_errors(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2.5], "inf": float("-inf")})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2.5], "inf": float("-inf")}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CacheError, match=r"bad\.json: expected JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(CacheError, match=r"none\.json: not found"):
        read_json(tmp_path / "none.json")
    write_csv(tmp_path / "t.csv", [{"a": 1, "b": "x"}], ["a", "b"])
    assert read_csv(tmp_path / "t.csv", ["a"]) == [{"a": "1", "b": "x"}]
    with pytest.raises(CacheError, match=r"t\.csv: expected columns \['a', 'c'\], missing \['c'\]"):
        read_csv(tmp_path / "t.csv", ["a", "c"])
    arr = np.arange(12, dtype=np.float32).reshape(2, 6)
    save_npy_atomic(tmp_path / "x.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), arr)
    assert npy_header(tmp_path / "x.npy") == ((2, 6), np.dtype(np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-4])
    assert npy_header(tmp_path / "cut.npy") is None
    assert npy_header(tmp_path / "absent.npy") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "bad.json", "cut.npy", "t.csv", "x.npy"]
