"""The numpy engine (stemdae.inference.npmodel) against the torch Predictor, and its torch-free model reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemdae.errors import ModelError
from stemdae.frontend import FrontEnd
from stemdae.inference.npmodel import read_numpy_model
from stemdae.model import StackedAutoencoder, output_activation_for
from stemdae.modelrecord import read_record
from stemdae.predictor import read_model_file, save_model
from stemdae.scaling import SCALINGS, Scaler

N_FFT = 64
N_BINS = N_FFT // 2 + 1


def _model(path: Path, scaling: str, activation: str, *, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = StackedAutoencoder(N_BINS, [48, 40], 0.2, activation)
    stats = {k: rng.uniform(0.1, 1.0, N_BINS) for k in ("in_mean", "in_std", "out_mean", "out_std")}
    scaler = Scaler(scaling, N_BINS, **stats)
    fe = FrontEnd(sr=16000, n_fft=N_FFT, hop=16, target_lufs=-23.0, window_s=1.0, peak_ceiling_dbfs=-1.0)
    return save_model(path / "model.pt", net, scaler, frontend=fe, group="bass")


@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_numpy_engine_equals_torch_engine(tmp_path, scaling, activation):
    """Same file, same input: the two engines agree within float32 rounding (every scaling, both output layers)."""
    path = _model(tmp_path, scaling, activation)
    mag = np.abs(np.random.default_rng(1).standard_normal((300, N_BINS))).astype(np.float32) * 3
    mag[:5] = 0.0  # silent frames: log_ratio's eps path
    a = read_model_file(path).predict_magnitude(mag)
    b = read_numpy_model(path).predict_magnitude(mag)
    assert b.dtype == np.float32 and b.shape == mag.shape and (b >= 0).all()
    assert np.abs(a).max() > 0.01  # not a trivially zero comparison
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6 * float(np.abs(a).max()))


def test_model_activation_matches_the_scaling_default(tmp_path):
    """The numpy engine reads the output activation from the file, not from the scaling."""
    path = _model(tmp_path, "log", output_activation_for("log_ratio"))  # identity output on a log model
    assert read_numpy_model(path).out_relu is False
    assert read_numpy_model(_model(tmp_path / "r", "log", "relu")).out_relu is True


def test_read_record_equals_torch_load(tmp_path):
    path = _model(tmp_path, "log_ratio", "identity")
    ours, theirs = read_record(path), torch.load(path, weights_only=True)
    assert set(ours) == set(theirs)
    assert set(ours["state_dict"]) == set(theirs["state_dict"])
    for k, v in theirs["state_dict"].items():
        np.testing.assert_array_equal(ours["state_dict"][k], v.numpy())
        assert not ours["state_dict"][k].flags.writeable
    for k in ("in_mean", "out_std"):
        np.testing.assert_array_equal(ours["scaler"][k], theirs["scaler"][k].numpy())
    assert ours["frontend"] == theirs["frontend"] and ours["model"] == theirs["model"]


def test_reader_refuses_broken_and_foreign_files(tmp_path):
    with pytest.raises(ModelError, match=r"nope.pt: missing"):
        read_record(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(ModelError, match=r"text.pt: not a readable model file \(BadZipFile"):
        read_numpy_model(tmp_path / "text.pt")
    torch.save({"format": "something/1", "w": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"other.pt: expected format 'stemdae-model/2', found 'something/1'"):
        read_numpy_model(tmp_path / "other.pt")
    path = _model(tmp_path, "log", "relu")
    d = torch.load(path, weights_only=True)
    d["state_dict"]["output.weight"] = torch.zeros(3, 3)
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match=r"bad.pt: model does not match its config"):
        read_numpy_model(tmp_path / "bad.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated archive
    with pytest.raises(ModelError, match=r"cut.pt: not a readable model file"):
        read_numpy_model(tmp_path / "cut.pt")


def test_process_on_the_cpu_never_imports_torch(tmp_path):
    """`stemdae process --model` in fp32 on the CPU runs without torch (its import is a quarter of the budget)."""
    path = _model(tmp_path / "m", "log_ratio", "identity")
    x = 0.1 * np.random.default_rng(0).standard_normal((16000 * 2, 2)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 16000)
    code = (
        "import sys, json\n"
        "from stemdae.cli import main\n"
        "rc = main(['process', sys.argv[1], '--model', sys.argv[2], '-o', sys.argv[3]])\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'mlflow': 'mlflow' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.wav"), str(path.parent),
                          str(tmp_path / "out.wav")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"rc": 0, "torch": False, "mlflow": False}
    y, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and y.shape == x.shape
