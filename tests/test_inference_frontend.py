"""The front-end contract: processing sees what training and evaluation saw, read from the model file."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile as sf

import stemdae
from stemdae.dsp.energy import search_hop
from stemdae.dsp.stft import stft
from stemdae.frontend import FrontEnd, TrainedOn, corpus_kind
from stemdae.inference import load_model
from stemdae.segments import normalize_pair

from test_process import make_model, noise

FE = dict(sr=22050, n_fft=512, hop=128, target_lufs=-20.0, window_s=3.0)  # not params.yaml's defaults


def test_training_segment_through_process_gives_the_evaluation_magnitudes(tmp_path):
    """A training segment, preceded by a quieter passage, fed through ``stemdae.process``:
    frame for frame, the model sees and returns what the evaluation path computes for that segment."""
    pred = load_model(str(make_model(tmp_path / "m", hidden=(16,), n_fft=FE["n_fft"], hop=FE["hop"], sr=FE["sr"],
                                     target_lufs=FE["target_lufs"], window_s=FE["window_s"])))
    sr, n = FE["sr"], round(FE["window_s"] * FE["sr"])
    # The segments stage: raw and stem of one window, each normalised with the model's front end.
    pair, _ = normalize_pair(noise(n, seed=1, amp=0.05), noise(n, seed=2), sr, target_lufs=FE["target_lufs"],
                             peak_ceiling_dbfs=-1.0)
    # The features stage (dsp.stft.stft of the segment) and the evaluation (predict_magnitude of those rows).
    raw_mag = np.abs(stft(pair, n_fft=FE["n_fft"], hop=FE["hop"]))[0].T
    evaluated = pred.predict_magnitude(raw_mag)
    # A recording: 2.1 s of the same material 9 dB down, then the segment (its loudest 3 s window).
    search = search_hop(n, target_hop=round(0.01 * sr))
    lead = math.lcm(search, FE["hop"]) * 3
    quiet = 10 ** (-9 / 20) * pair[0][-lead:]
    recording = np.concatenate([quiet, pair[0]])
    seen_in, seen_out = [], []
    stemdae.process(recording, sr, model=pred, tap=lambda c, m_in, m_out: (seen_in.append(m_in),
                                                                             seen_out.append(m_out)))
    m_in, m_out = np.concatenate(seen_in), np.concatenate(seen_out)
    first = lead // FE["hop"] + FE["n_fft"] // FE["hop"] // 2  # frames wholly inside the segment
    k = first - lead // FE["hop"]
    np.testing.assert_allclose(m_in[first:], raw_mag[k:], rtol=2e-3, atol=1e-6 * raw_mag.max())
    np.testing.assert_allclose(m_out[first:], evaluated[k:], rtol=2e-3, atol=1e-5 * evaluated.max())


def test_front_end_round_trip_and_refusals():
    fe = FrontEnd(**FE, peak_ceiling_dbfs=-1.0)
    assert FrontEnd.from_dict(fe.to_dict()) == fe
    with pytest.raises(Exception, match="no front-end record"):
        FrontEnd.from_dict(None, where="x/model.pt")
    with pytest.raises(Exception, match="unknown keys"):
        FrontEnd.from_dict({**fe.to_dict(), "gain": 3})
    with pytest.raises(Exception, match="not one this stemdae implements"):
        FrontEnd.from_dict({**fe.to_dict(), "mono": "left"})


def test_demo_trained_model_warns(tmp_path, caplog):
    (tmp_path / "corpus" / "Song").mkdir(parents=True)
    assert corpus_kind(tmp_path / "corpus") == "real"
    (tmp_path / "corpus" / "Song" / "Song_CHAINS.json").write_text("{}")
    assert corpus_kind(tmp_path / "corpus") == "demo"
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef.dir\n  path: data\n")
    trained_on = TrainedOn.of_corpus(tmp_path / "corpus", tmp_path / "data.dvc")
    assert trained_on == TrainedOn("demo", "0123456789abcdef.dir")
    demo = make_model(tmp_path / "demo", trained_on=trained_on)
    with caplog.at_level(logging.WARNING):
        stemdae.process(noise(3000), 44100, model=str(demo))
    assert any("synthetic demo corpus" in r.getMessage() for r in caplog.records)
    caplog.clear()
    real = make_model(tmp_path / "real", trained_on=TrainedOn("real", "x"))
    with caplog.at_level(logging.WARNING):
        stemdae.process(noise(3000), 44100, model=str(real))
    assert not any("demo" in r.getMessage() for r in caplog.records)


def test_cli_model_alone_without_params_yaml_stereo_in_stereo_out(tmp_path, monkeypatch):
    """``stemdae process FILE --model DIR``: no --group, no params.yaml in the cwd; stereo stays stereo."""
    from stemdae.cli import main

    model_dir = make_model(tmp_path / "models" / "bass", group="bass")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    sf.write(work / "take.wav", noise(48000 * 2, channels=2).T, 48000, subtype="FLOAT")
    assert main(["-q", "process", "take.wav", "--model", str(model_dir)]) == 0
    info = sf.info(work / "take.bass.wav")  # the group comes from the model file
    assert (info.channels, info.samplerate, info.frames) == (2, 48000, 96000)
    assert main(["-q", "process", "take.wav", "--model", str(model_dir), "--channels", "mono",
                 "-o", "mono.wav"]) == 0
    assert sf.info(work / "mono.wav").channels == 1
