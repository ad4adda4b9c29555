"""Issue 13's input grid: every input a user or an attacker might hand over, for the data stages and `process`.

Each case asserts the expected behaviour: correct output, a counted skip naming the file, or one line
naming the file and the problem. Cases already covered elsewhere are listed, not repeated:

- data stages: corrupt, truncated, missing raw, silent stem/raws, NaN, 0.6 s, length and rate mismatch
  (test_pairs.py::test_bad_input_is_a_counted_skip / ..._error_in_strict_mode), silent/Inf sources in
  segments (test_segments.py::test_silent_and_nonfinite_sources), metadata path escapes and symlinks
  out of the corpus at load time (test_medleydb.py), every sample format / 1-8 channels / 8-96 kHz
  in the reader (test_io.py);
- process: NaN, empty, corrupt, missing, FLAC input, 10 channels (test_process.py::
  test_batch_parallel_with_failures), 8-96 kHz in memory (test_process.py::test_length_and_rate_kept),
  output formats (test_process_safety.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from stemdae import pairs, segments
from stemdae.config import Params, Paths, params_from_dict
from stemdae.inference import process_files
from stemdae.segfile import read_segment
from test_pairs import four_songs, noise
from test_process import make_model

SEG_SR = 8000


# ------------------------------------------------------------------ data stages


def case_song(data: Path, name: str, *, sr: int = 8000, channels: int = 1, ext: str = "wav",
              subtype: str | None = None, seconds: float = 11.0) -> Path:
    """One MedleyDB-style song: an electric-bass stem with a loud burst at 3-4 s and two raw tracks."""
    song = data / name
    stem_dir, raw_dir = song / f"{name}_STEMS", song / f"{name}_RAW"
    stem_dir.mkdir(parents=True)
    raw_dir.mkdir()
    kw = {"subtype": subtype} if subtype else {}
    sig = {k: noise(burst=(3.0, 4.0), seed=30 + i, sr=sr, seconds=seconds, channels=channels, amp=a, burst_amp=b)
           for i, (k, a, b) in enumerate((("stem", 0.02, 0.3), ("R01", 0.01, 0.2), ("R02", 0.005, 0.05)))}
    stem_fn = f"{name}_STEM_01.{ext}"
    sf.write(stem_dir / stem_fn, sig["stem"].T, sr, **kw)
    raws = {}
    for rid in ("R01", "R02"):
        fn = f"{name}_RAW_01_{rid[1:]}.{ext}"
        sf.write(raw_dir / fn, sig[rid].T, sr, **kw)
        raws[rid] = {"filename": fn, "instrument": "electric bass"}
    sf.write(song / f"{name}_MIX.wav", sig["stem"].mean(axis=0), sr)
    meta = {"mix_filename": f"{name}_MIX.wav", "stem_dir": stem_dir.name, "raw_dir": raw_dir.name,
            "version": "1.2", "stems": {"S01": {"filename": stem_fn, "instrument": "electric bass",
                                                "component": "", "raw": raws}}}
    (song / f"{name}_METADATA.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    return song


def _data_params(root: Path, strict: bool = False):
    return params_from_dict({"corpus": {"root": str(root / "data"), "strict": strict},
                             "segments": {"window_s": 1.0, "sr": SEG_SR}})


def _run_stages(root: Path):
    """pairs then segments on ``root/data``; (pairs report, pairs table, segments summary)."""
    paths = Paths(root)
    pairs.run(_data_params(root), paths, jobs=1)
    seg = segments.run(_data_params(root), paths, jobs=1)
    report = json.loads((root / "reports" / "pairs.json").read_text())
    df = pd.read_csv(root / "work" / "pairs.csv", dtype={"pair_id": str, "song": str})
    return report, df, seg


GOOD_DATA = {  # case: case_song options; the pair is found in the burst and segmented
    "pcm_u8": {"subtype": "PCM_U8"},
    "sr_8k": {"sr": 8000}, "sr_22k": {"sr": 22050}, "sr_48k": {"sr": 48000}, "sr_96k": {"sr": 96000},
    **{f"channels_{c}": {"channels": c} for c in (2, 3, 6)},
    "flac": {"ext": "flac"}, "ogg": {"ext": "ogg"},
    "unicode": {"name": "Sóng ♪ 音 «x»"},
}


@pytest.mark.parametrize("case", list(GOOD_DATA))
def test_data_stages_accept(tmp_path, case):
    opts = dict(GOOD_DATA[case])
    name = opts.pop("name", "Case")
    data = four_songs(tmp_path)
    case_song(data, name, **opts)
    report, df, seg = _run_stages(tmp_path)
    assert report["skipped"]["total"] == 0, report["skipped_files"]
    row = df[df.song == name]
    assert len(row) == 1 and row.iloc[0].raw_id == "R01"  # the louder raw
    assert row.iloc[0].window_start_s == pytest.approx(3.0, abs=0.05)
    x = read_segment(tmp_path / "work" / "segments" / f"{row.iloc[0].pair_id}.seg")
    assert x.shape == (2, SEG_SR) and np.all(np.isfinite(x)) and np.abs(x).max() > 0.01
    assert seg.counts["written"] == len(df) and not seg.skips


def _tiny_file(path: Path, sr: int) -> None:
    sf.write(path, noise(seconds=0.01, sr=sr, seed=5).T, sr, subtype="PCM_16")  # 10 ms


def _empty_file(path: Path, sr: int) -> None:
    sf.write(path, np.zeros((0, 1), np.float32), sr, subtype="PCM_16")


def _inf_file(path: Path, sr: int) -> None:
    x = noise(burst=(3.0, 4.0), seed=31, sr=sr, amp=0.01)
    x[0, int(3.5 * sr)] = -np.inf  # in the window: raws are read there only
    sf.write(path, x.T, sr, subtype="FLOAT")


def _escape_symlink(path: Path, sr: int) -> None:
    outside = path.parents[3] / "outside.wav"  # beside data/, out of the corpus
    sf.write(outside, noise(burst=(3.0, 4.0), seed=31, sr=sr, amp=0.01).T, sr)
    path.unlink()
    path.symlink_to(outside)


BAD_DATA = {  # case: (which file, how it is spoiled, the kind in pairs.json, the pair survives with R02)
    "empty_raw": ("R01", _empty_file, "empty", True),
    "10ms_raw": ("R01", _tiny_file, "length", True),  # 80 samples, expected 88000 like its stem
    "10ms_stem": ("stem", _tiny_file, "too_short", False),
    "inf_raw": ("R01", _inf_file, "non_finite", True),
    "symlink_out_of_corpus": ("R01", _escape_symlink, "corpus", False),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_data_stages_count_a_skip_naming_the_file(tmp_path, case):
    which, spoil, kind, survives = BAD_DATA[case]
    data = four_songs(tmp_path)
    song = case_song(data, "Case")
    target = song / ("Case_STEMS/Case_STEM_01.wav" if which == "stem" else f"Case_RAW/Case_RAW_01_{which[1:]}.wav")
    spoil(target, 8000)
    report, df, seg = _run_stages(tmp_path)
    hits = [s for s in report["skipped_files"] if target.name in s["file"] + s["reason"]]
    assert len(hits) == 1 and hits[0]["kind"] == kind, report["skipped_files"]
    assert report["skipped"][kind] == 1
    rows = df[df.song == "Case"]
    assert list(rows.raw_id) == (["R02"] if survives else []), rows
    assert len(df[df.song != "Case"]) == 10 and seg.counts["written"] == len(df)
    with pytest.raises(Exception, match=target.name.replace(".", r"\.")) as info:
        pairs.run(_data_params(tmp_path, strict=True), Paths(tmp_path), jobs=1)
    assert "\n" not in str(info.value) and type(info.value).__module__ == "stemdae.errors"


def test_metadata_path_escape_is_a_counted_skip_in_pairs(tmp_path):
    data = four_songs(tmp_path)
    meta_path = case_song(data, "Case") / "Case_METADATA.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["stems"]["S01"]["raw"]["R01"]["filename"] = "../../../outside.wav"
    meta_path.write_text(yaml.safe_dump(meta))
    report, df, _ = _run_stages(tmp_path)
    hits = [s for s in report["skipped_files"] if "Case_METADATA.yaml" in s["file"]]
    assert len(hits) == 1 and "escapes the song folder" in hits[0]["reason"], report["skipped_files"]
    assert df[df.song == "Case"].empty and len(df) == 10


# ------------------------------------------------------------------ process


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "bass", hidden=(16,), n_fft=256, hop=64, sr=16000,
                      group="bass")


def _signal(sr: int, seconds: float, channels: int) -> np.ndarray:
    return noise(burst=(0.2 * seconds, 0.4 * seconds), seed=7, sr=sr, seconds=seconds, channels=channels)


GOOD_PROCESS = {  # case: (file name, sample rate, seconds, channels, soundfile subtype, silent)
    "pcm_u8": ("u8.wav", 16000, 1.0, 1, "PCM_U8", False),
    "sr_8k": ("a.wav", 8000, 1.0, 1, None, False),
    "sr_44k": ("a.wav", 44100, 1.0, 1, None, False),
    "sr_96k": ("a.wav", 96000, 1.0, 2, None, False),
    **{f"channels_{c}": ("a.wav", 16000, 1.0, c, None, False) for c in (1, 2, 3, 4, 5, 6)},
    "flac": ("a.flac", 22050, 1.0, 2, None, False),
    "ogg": ("a.ogg", 16000, 1.0, 1, None, False),
    "unicode_path": ("Sóng ♪ 音 «x».wav", 16000, 1.0, 1, None, False),
    "10ms": ("short.wav", 16000, 0.01, 1, None, False),
    "silent": ("silent.wav", 16000, 1.0, 2, "PCM_16", True),
}


@pytest.mark.parametrize("case", list(GOOD_PROCESS))
def test_process_accepts(small_model, tmp_path, caplog, case):
    name, sr, seconds, channels, subtype, silent = GOOD_PROCESS[case]
    folder = tmp_path / ("dír ♪" if case == "unicode_path" else "in")
    folder.mkdir()
    src = folder / name
    x = np.zeros((channels, int(sr * seconds)), np.float32) if silent else _signal(sr, seconds, channels)
    sf.write(src, x.T, sr, **({"subtype": subtype} if subtype else {}))
    before = src.read_bytes()
    out = folder / f"out{src.suffix}"
    report = process_files([src], group=None, params=Params(), paths=Paths(tmp_path), model=str(small_model),
                           out=out, jobs=1)
    assert report.exit_code == 0 and report.counts["processed"] == 1, report.text()
    info = sf.info(out)
    assert (info.samplerate, info.frames, info.channels) == (sr, x.shape[1], channels)
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    assert np.all(np.isfinite(y))
    if silent:  # no gain is applied to nothing (the model's response to zero frames is still written)
        assert f"{src}: silent (below -70 LUFS): processed without loudness gain" in caplog.text
    else:
        assert np.abs(y).max() > 1e-4
    assert src.read_bytes() == before  # the input is untouched


def _truncated(path: Path) -> None:
    sf.write(path, _signal(16000, 1.0, 1).T, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _inf(path: Path) -> None:
    x = _signal(16000, 1.0, 1)
    x[0, 4000] = np.inf
    sf.write(path, x.T, 16000, subtype="FLOAT")


def _empty(path: Path) -> None:
    sf.write(path, np.zeros((0, 2), np.float32), 16000)


BAD_PROCESS = {  # case: (how the file is made, the problem named)
    "truncated": (_truncated, "truncated"),
    "inf": (_inf, "NaN/Inf"),
    "empty": (_empty, "empty"),
}


@pytest.mark.parametrize("case", list(BAD_PROCESS))
def test_process_refuses_in_one_line_naming_the_file(small_model, tmp_path, capsys, case):
    from stemdae.cli import main

    make, problem = BAD_PROCESS[case]
    src = tmp_path / f"{case}.wav"
    make(src)
    rc = main(["--root", str(tmp_path), "process", str(src), "--model", str(small_model),
               "-o", str(tmp_path / "out.wav"), "-j", "1"])
    err = capsys.readouterr()
    assert rc == 1
    lines = [line for line in (err.out + err.err).splitlines() if src.name in line and problem in line]
    assert len(lines) == 1, err.out + err.err
    assert "Traceback" not in err.err and not (tmp_path / "out.wav").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _peak_rss_mib(cmd: list[str], cwd: Path) -> tuple[int, float, str]:
    """Run ``cmd``; (exit status, its peak RSS in MiB from ``wait4``, stderr).

    The command is started by a small fresh interpreter, not forked from this
    pytest process: Linux keeps ``ru_maxrss`` across ``execve``, so a child
    forked from a large parent reports the parent's resident size as its peak.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    launcher = ("import os, subprocess, sys\n"
                "p = subprocess.Popen(sys.argv[1:])\n"
                "_, status, usage = os.wait4(p.pid, 0)\n"
                "print(usage.ru_maxrss, file=open('maxrss.txt', 'w'))\n"
                "sys.exit(os.waitstatus_to_exitcode(status))\n")
    with open(cwd / "stderr.txt", "w") as err:
        rc = subprocess.run([sys.executable, "-c", launcher, *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=err).returncode
    return rc, int((cwd / "maxrss.txt").read_text()) / 1024, (cwd / "stderr.txt").read_text()


@pytest.mark.slow
def test_two_hour_file_in_bounded_memory(tmp_path):
    """`stemdae process` on a 2-hour file (written in blocks): peak RSS as for a 10-minute one, under 1 GB.

    10 minutes already fill the streaming bounds (a read block, ``block_frames`` frames per
    channel), so anything that grows with the length shows as the difference. Stereo output
    (the channels run in threads): with glibc's sliding mmap threshold the heap fragmented and
    the peak grew by 30+ MiB from 20 minutes to 2 hours, before render fixed the threshold.
    """
    sr, block = 8000, 2**20
    model = make_model(tmp_path / "model", hidden=(16,), n_fft=2048, hop=1024, sr=sr, group="bass")
    rng = np.random.default_rng(3)
    n_long = 2 * 3600 * sr
    with sf.SoundFile(tmp_path / "long.wav", "w", sr, 1, subtype="PCM_16") as f:
        for i in range(0, n_long, block):
            f.write((0.05 * rng.standard_normal(min(block, n_long - i))).astype(np.float32))
    sf.write(tmp_path / "short.wav", (0.05 * rng.standard_normal(600 * sr)).astype(np.float32), sr)
    rss = {}
    for name in ("short", "long"):
        t0 = time.perf_counter()
        rc, rss[name], err = _peak_rss_mib(["stemdae", "-q", "process", f"{name}.wav", "--model", str(model),
                                            "--channels", "stereo", "-j", "1", "-o", f"{name}.out.wav"], tmp_path)
        assert rc == 0, err[-3000:]
        print(f"{name}: peak RSS {rss[name]:.0f} MiB, {time.perf_counter() - t0:.1f} s")
    assert sf.info(tmp_path / "long.out.wav").frames == n_long
    assert rss["long"] < 1024 and rss["long"] < rss["short"] + 20, rss  # 2 h of float32 alone is 220 MiB
