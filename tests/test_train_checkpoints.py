"""Training checkpoints: keyed by the cache *content*, plain data only, and a quiet log."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from stemdae.config import Paths
from stemdae.digest import tree_digest
from stemdae.errors import CacheError
from stemdae.train import fit_group
from test_train import make_cache, tiny_params


class Interrupt(pl.Callback):
    """Stop the fine-tuning phase at its first batch (pretraining phases are then finished)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        raise RuntimeError("interrupted by the test")


def _interrupted(project: Path, caplog) -> Path:
    caplog.clear()
    with pytest.raises(RuntimeError, match="interrupted by the test"):
        fit_group(tiny_params(project), "bass", Paths(project), callbacks=[Interrupt()], log_mlflow=False,
                  model_dir=project / "m", enable_progress_bar=False)
    dirs = [d for d in (project / "work" / "checkpoints" / "bass").iterdir() if d.is_dir()]
    assert len(dirs) >= 1
    return max(dirs, key=lambda d: d.stat().st_mtime_ns)


def test_tree_digest_follows_content_not_timestamps(tmp_path: Path):
    d = tmp_path / "cache"
    d.mkdir()
    (d / "raw.npy").write_bytes(b"a" * 1000)
    (d / "index.csv").write_text("x\n")
    memo = tmp_path / "memo.json"
    first = tree_digest(d, memo=memo)
    assert tree_digest(d) == first == tree_digest(d, memo=memo)
    os.utime(d / "raw.npy", ns=(1, 1))  # same bytes, new timestamp: rehashed, same digest
    assert tree_digest(d, memo=memo) == first
    (d / "raw.npy").write_bytes(b"b" + b"a" * 999)  # same size and index, new content
    assert tree_digest(d, memo=memo) != first
    (d / "raw.npy").write_bytes(b"a" * 1000)
    assert tree_digest(d, memo=memo) == first
    (d / "extra.npy").write_bytes(b"")
    assert tree_digest(d, memo=memo) != first


def test_tree_digest_memo_skips_unchanged_files(tmp_path: Path):
    d = tmp_path / "cache"
    d.mkdir()
    f = d / "raw.npy"
    f.write_bytes(b"a" * 100)
    memo = tmp_path / "memo.json"
    first = tree_digest(d, memo=memo)
    st = f.stat()
    with open(f, "r+b") as fh:  # same size, timestamps restored: the memo (like DVC's state db) trusts it
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tree_digest(d, memo=memo) == first
    assert tree_digest(d) != first  # without the memo the content is read


def test_resume_after_a_data_change_starts_over(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="stemdae")
    cache = make_cache(tmp_path)
    make_cache(tmp_path, split="test", songs=2)
    original = (cache / "stem.npy").read_bytes()
    first = _interrupted(tmp_path, caplog)
    assert (first / "pretrain1" / "final.ckpt").is_file() and (first / "pretrain2" / "final.ckpt").is_file()

    # same shapes, same index.csv, different numbers: what a re-run of `features` on new data gives
    stem = np.load(cache / "stem.npy", mmap_mode="r+")
    stem[:] = stem * 1.5
    stem.flush()
    del stem
    second = _interrupted(tmp_path, caplog)
    assert second != first
    assert "finished earlier" not in caplog.text

    # the original bytes again (new mtime): the earlier phases are reused
    (cache / "stem.npy").write_bytes(original)
    caplog.clear()
    fit_group(tiny_params(tmp_path), "bass", Paths(tmp_path), log_mlflow=False, model_dir=tmp_path / "m",
              enable_progress_bar=False)
    assert caplog.text.count("finished earlier") == 2
    assert not first.exists()  # removed on success


def test_checkpoints_are_plain_data(tmp_path: Path, caplog):
    make_cache(tmp_path)
    ckpt = _interrupted(tmp_path, caplog)
    files = sorted(ckpt.rglob("*.ckpt"))
    assert {f.name for f in files} == {"final.ckpt", "last.ckpt"}
    for f in files:
        data = torch.load(f, map_location="cpu", weights_only=True)
        assert data["stemdae"]["history"] and all(isinstance(r["val_loss"], float) for r in data["stemdae"]["history"])


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (os.environ["STEMDAE_TEST_PWNED"],))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path, caplog, monkeypatch):
    make_cache(tmp_path)
    ckpt = _interrupted(tmp_path, caplog)
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("STEMDAE_TEST_PWNED", str(pwned))
    final = ckpt / "pretrain1" / "final.ckpt"
    data = torch.load(final, map_location="cpu", weights_only=True)
    data["stemdae"]["payload"] = _Payload()
    torch.save(data, final)
    with pytest.raises(CacheError, match=r"pretrain1/final.ckpt: not a plain-data checkpoint, refused"):
        fit_group(tiny_params(tmp_path), "bass", Paths(tmp_path), log_mlflow=False, model_dir=tmp_path / "m",
                  enable_progress_bar=False)
    assert not pwned.exists()
    torch.load(final, weights_only=False)  # the payload is real: the old way of loading runs it
    assert pwned.is_dir()


def test_tiny_training_emits_no_warning(tmp_path: Path):
    make_cache(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_group(tiny_params(tmp_path), "bass", Paths(tmp_path), log_mlflow=False, model_dir=tmp_path / "m",
                  enable_progress_bar=False)
    assert [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught] == []
