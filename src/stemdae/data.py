"""LightningDataModule over one group's memory-mapped training cache.

- Validation songs are carved from the training songs (``training.val_fraction``
  of the songs, at least one when there are two or more, drawn with
  ``default_rng([seed, 0x7A1])``); validation uses only their unshifted rows
  (``shift_cents == 0``), training every row (all pitch shifts) of the others.
  With a single training song there is nothing to carve: validation then uses
  that song's unshifted rows (logged as a warning; the loss is not held-out).
- Batches are index arrays: :class:`EpochBatchSampler` yields *sorted* row
  blocks and :class:`CacheBatches` reads each with one fancy-index read of the
  memmaps (no per-frame Python, no full-cache load). The order of epoch ``e``
  of phase ``p`` depends only on ``(seed, p, e)``, so a resumed run draws the
  same batches as an uninterrupted one.
- ``frames_per_epoch`` draws that many frames per epoch (a fresh permutation
  each epoch, repeated if it asks for more frames than there are).
- DDP: ranks take interleaved, equally long slices of the same permutation
  (so every rank runs the same number of steps); Lightning's own distributed
  sampler is switched off (``use_distributed_sampler=False`` in ``train.py``).
- ``gpu_resident``: on a CUDA device with room for it, the group's training
  cache is copied to device memory once (in chunks, never whole in host RAM)
  and batches are gathered there by index.
- ``augmentation.method: spectral`` (the cache has ``shift.json``): training
  batches are pitch-shifted per frame as they are read (:mod:`stemdae.specaug`);
  validation batches never are.
- ``num_workers`` defaults to 0: a batch is one memmap gather (~0.1 ms per 256
  frames, see MEASUREMENTS.md) against ~40 ms of compute, so worker processes
  would only take one of the two cores away from the matmuls.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from stemdae.config import TrainingParams
from stemdae.errors import CacheError
from stemdae.featcache import FeatureCache, open_cache, release
from stemdae.specaug import ShiftSpec, k_weights, read_spec, shift_frames

log = logging.getLogger(__name__)

__all__ = ["CacheBatches", "EpochBatchSampler", "GroupDataModule", "rows_of", "split_songs"]

_VAL_STREAM = 0x7A1
_RESIDENT_CHUNK = 65536


def rows_of(index: pd.DataFrame) -> np.ndarray:
    """All cache rows covered by ``index`` rows (``row_start .. row_start + n_frames``), sorted."""
    if index.empty:
        return np.zeros(0, np.int64)
    starts, counts = index["row_start"].to_numpy(np.int64), index["n_frames"].to_numpy(np.int64)
    rows = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
    return np.sort(rows)


def split_songs(index: pd.DataFrame, *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train_songs, val_songs)``: a seeded draw of ``ceil(val_fraction * n)`` validation songs."""
    songs = sorted(index["song"].astype(str).unique())
    if len(songs) < 2 or val_fraction <= 0:
        return songs, []
    n_val = min(max(1, math.ceil(val_fraction * len(songs))), len(songs) - 1)
    rng = np.random.default_rng([seed, _VAL_STREAM])
    val = sorted(rng.choice(songs, size=n_val, replace=False).tolist())
    return [s for s in songs if s not in val], val


class EpochBatchSampler:
    """Yields sorted index blocks of ``rows``, reshuffled per ``(seed, phase, epoch)``.

    Parameters
    ----------
    rows
        Candidate cache rows.
    batch_size
        Frames per batch (the last batch may be shorter).
    shuffle
        False: ``rows`` in order (validation).
    frames_per_epoch
        Frames per epoch (None: all rows once).
    rank, world_size
        This process's slice under DDP.
    """

    def __init__(self, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int = 0,
                 frames_per_epoch: int | None = None, rank: int = 0, world_size: int = 1) -> None:
        self.rows, self.batch_size, self.shuffle, self.seed = np.asarray(rows, np.int64), int(batch_size), shuffle, seed
        self.frames_per_epoch, self.rank, self.world_size = frames_per_epoch, rank, world_size
        self.epoch, self.phase = 0, 0
        # Under a Trainer the epoch is read from it when iteration starts: a
        # resumed fit does not always call set_epoch before its first epoch.
        self.epoch_source: Any = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> np.ndarray:
        n = len(self.rows)
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source.current_epoch)
        if not self.shuffle:
            order = np.arange(n)
        else:
            rng = np.random.default_rng([self.seed, self.phase, self.epoch])
            want = self.frames_per_epoch or n
            order = np.concatenate([rng.permutation(n) for _ in range(max(1, -(-want // max(n, 1))))])[:want]
        per_rank = len(order) // self.world_size
        return order[self.rank::self.world_size][:per_rank]

    def __iter__(self):
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            yield np.sort(self.rows[order[start:start + self.batch_size]])

    def __len__(self) -> int:
        n = (self.frames_per_epoch or len(self.rows)) if self.shuffle else len(self.rows)
        return math.ceil((n // self.world_size) / self.batch_size)


class CacheBatches:
    """``dataset[rows] -> (raw, stem)`` float32 tensors ``(len(rows), n_bins)``.

    Holds the cache *path* and opens it lazily, so worker processes map the
    files themselves instead of receiving pickled copies of the arrays. With
    ``device_arrays`` (GPU-resident) it gathers from those instead. With
    ``shift``, every frame is pitch-shifted by a shift drawn from ``(seed, rows)``.
    """

    def __init__(self, path: Path, device_arrays: tuple[torch.Tensor, torch.Tensor] | None = None,
                 *, shift: ShiftSpec | None = None, seed: int = 0) -> None:
        self.path, self.device_arrays = Path(path), device_arrays
        self.shift, self.seed = shift, seed
        self._weights = None if shift is None else torch.from_numpy(k_weights(shift.sr, shift.n_fft).astype(np.float32))
        self._cache: FeatureCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device_arrays is not None:
            idx = torch.as_tensor(rows, device=self.device_arrays[0].device)
            raw, stem = self.device_arrays[0][idx].float(), self.device_arrays[1][idx].float()
        else:
            if self._cache is None:
                self._cache = open_cache(self.path)
            raw_np, stem_np = self._cache.batch(rows)
            raw = torch.from_numpy(raw_np.astype(np.float32, copy=False))
            stem = torch.from_numpy(stem_np.astype(np.float32, copy=False))
        if self.shift is None:
            return raw, stem
        cents = torch.from_numpy(self.shift.draw(rows, seed=self.seed)).to(raw.device)
        w = self._weights.to(raw.device)
        return shift_frames(raw, cents, weights=w), shift_frames(stem, cents, weights=w)


class GroupDataModule(pl.LightningDataModule):
    """Training/validation batches of one group's ``work/features/train/<group>`` cache.

    Raises
    ------
    CacheError
        (in :meth:`setup`) an unreadable cache or one without frames.
    """

    def __init__(self, cache_dir: str | Path, training: TrainingParams) -> None:
        super().__init__()
        self.cache_dir, self.training = Path(cache_dir), training
        self.phase = 0
        self.cache: FeatureCache | None = None
        self.train_rows = self.val_rows = np.zeros(0, np.int64)
        self.train_songs: list[str] = []
        self.val_songs: list[str] = []
        self._dataset: CacheBatches | None = None
        self._train_dataset: CacheBatches | None = None

    def prepare_data(self) -> None:  # the features stage wrote everything
        pass

    def setup(self, stage: str | None = None) -> None:
        if self.cache is None:
            self.cache = open_cache(self.cache_dir)
            if self.cache.n_frames == 0:
                raise CacheError(f"{self.cache_dir}: the training cache has no frames (no training pairs in this group)")
            self._split()

    def dataset(self) -> CacheBatches:
        """The batch reader, made once a trainer is attached (it decides GPU residency)."""
        if self._dataset is None:
            self._dataset = CacheBatches(self.cache_dir, self._resident_arrays())
        return self._dataset

    def train_dataset(self) -> CacheBatches:
        """The training batch reader: :meth:`dataset`, pitch-shifting per batch when the cache says so."""
        if self._train_dataset is None:
            spec = read_spec(self.cache_dir)
            base = self.dataset()
            self._train_dataset = base if spec is None else CacheBatches(
                self.cache_dir, base.device_arrays, shift=spec, seed=self.training.seed)
        return self._train_dataset

    def _split(self) -> None:
        t = self.training
        index = self.cache.index
        self.train_songs, self.val_songs = split_songs(index, val_fraction=t.val_fraction, seed=t.seed)
        is_val = index["song"].astype(str).isin(self.val_songs)
        self.train_rows = rows_of(index[~is_val])
        unshifted = index["shift_cents"].to_numpy() == 0
        if self.val_songs:
            self.val_rows = rows_of(index[is_val.to_numpy() & unshifted])
        elif t.val_fraction > 0:
            log.warning("%s: one training song only; validating on its unshifted frames (not held out)",
                        self.cache_dir)
            self.val_rows = rows_of(index[unshifted])
        log.info("data %s: %d train songs (%d frames), %d validation songs (%d frames)", self.cache_dir,
                 len(self.train_songs), len(self.train_rows), len(self.val_songs), len(self.val_rows))

    def _resident_arrays(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        trainer = getattr(self, "trainer", None)
        if not self.training.gpu_resident or trainer is None:
            return None
        device = trainer.strategy.root_device
        if device.type != "cuda":
            return None
        c = self.cache
        need = 2 * c.raw.nbytes
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.8 * free:
            log.warning("data: %s needs %.1f GB, %.1f GB free on %s: reading batches from the memmap",
                        self.cache_dir, need / 1e9, free / 1e9, device)
            return None
        out = []
        for arr in (c.raw, c.stem):
            t = torch.empty(arr.shape, dtype=torch.from_numpy(np.zeros(0, arr.dtype)).dtype, device=device)
            for start in range(0, arr.shape[0], _RESIDENT_CHUNK):  # chunked: never the whole cache in RAM
                stop = min(start + _RESIDENT_CHUNK, arr.shape[0])
                t[start:stop] = torch.from_numpy(np.array(arr[start:stop])).to(device)
                release(arr)
            out.append(t)
        log.info("data: %s resident on %s (%.1f GB)", self.cache_dir, device, need / 1e9)
        return out[0], out[1]

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        t = self.training
        sampler = EpochBatchSampler(self.train_rows, batch_size=t.batch_size, shuffle=True, seed=t.seed,
                                    frames_per_epoch=t.frames_per_epoch, rank=rank, world_size=world)
        sampler.phase = self.phase
        sampler.epoch_source = getattr(self, "trainer", None)
        return self._loader(sampler, self.train_dataset())

    def val_dataloader(self) -> DataLoader:
        # Every rank validates on all validation frames: the loss is then the
        # same on each, without a distributed gather.
        return self._loader(EpochBatchSampler(self.val_rows, batch_size=max(self.training.batch_size, 4096),
                                              shuffle=False), self.dataset())

    def _loader(self, sampler: EpochBatchSampler, dataset: CacheBatches) -> DataLoader:
        workers = self.training.num_workers if dataset.device_arrays is None else 0
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=False)
