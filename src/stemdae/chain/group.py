"""Fit and store one group's preset chain from the ``segments`` stage's training pairs.

Files (``models/chain/<group>/``, beside and not inside the DAE's ``models/<group>/``,
which the ``train@<group>`` stage owns and DVC rewrites): ``chain.pt`` (``Chain.save``: plain tensors
and dicts, loads with ``weights_only=True``), ``settings.json`` (engineer
units), ``fit_history.csv`` (``step, loss``), ``fit_summary.json`` (pairs, the validation songs
left out, time, losses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from stemdae import io
from stemdae.segfile import read_segment, segment_path
from stemdae.chain.chain import Chain, ChainConfig
from stemdae.chain.fit import fit_preset
from stemdae.errors import CacheError, ConfigError, ModelError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("pair_id", "song", "group", "split")


def chain_dir(models_dir: Path, group: str) -> Path:
    return Path(models_dir) / "chain" / group


def split_songs_of(segments_dir: Path, group: str, *, split: str = "train") -> list[str]:
    """The songs of ``group``'s ``split`` segments (sorted)."""
    manifest = Path(segments_dir) / "manifest.csv"
    return sorted({r["song"] for r in io.read_csv(manifest, MANIFEST_COLUMNS) if r["group"] == group and r["split"] == split})


def validation_songs(params, segments_dir: Path, group: str, *, seed: int | None = None) -> list[str]:
    """The DAE's validation draw for ``group`` (``training.val_fraction``; ``seed``, default
    ``training.seed``): the songs a chain fit leaves out, as the DAE's training does."""
    import pandas as pd

    from stemdae.data import split_songs

    t = params.training_for(group)
    songs = pd.DataFrame({"song": split_songs_of(segments_dir, group)})
    return split_songs(songs, val_fraction=t.val_fraction, seed=t.seed if seed is None else seed)[1]


def training_pairs(segments_dir: Path, group: str, *, split: str = "train",
                   exclude_songs: Collection[str] = ()) -> list[np.ndarray]:
    """The ``(2, n)`` raw/stem segments of ``group`` in ``split``, in manifest order, but ``exclude_songs``."""
    manifest = Path(segments_dir) / "manifest.csv"
    rows = [r for r in io.read_csv(manifest, MANIFEST_COLUMNS)
            if r["group"] == group and r["split"] == split and r["song"] not in set(exclude_songs)]
    if not rows:
        raise CacheError(f"{manifest}: no {split} segments of group {group!r}"
                         + (f" outside the {len(exclude_songs)} validation song(s)" if exclude_songs else ""))
    pairs = []
    for row in rows:
        pairs.append(read_segment(segment_path(segments_dir, row["pair_id"])))
    return pairs


def fit_group(segments_dir: Path, models_dir: Path, group: str, *, sr: int, config: ChainConfig,
              steps: int, seed: int, crop_s: float = 2.0, batch: int = 4, lr: float = 0.05,
              mode: str = "preset", meta: dict | None = None, exclude_songs: Collection[str] = ()) -> dict:
    """Fit the group's preset and write its files; returns a small summary dict.

    ``mode="conditional"``: then the encoder too, from the fitted preset (``steps`` more
    steps), saved as ``conditional.pt``; ``chain.pt`` stays the preset (what ``stemdae process`` renders).
    ``meta``: plain data saved in ``chain.pt`` beside the chain (``frontend``, ``trained_on``).
    ``exclude_songs``: training songs left out of the fit (the validation songs on which
    ``stemdae chain evaluate`` chooses the mode).
    """
    if mode not in ("preset", "conditional"):
        raise ConfigError(f"chain.mode: expected 'preset' or 'conditional', found {mode!r}")
    pairs = training_pairs(segments_dir, group, exclude_songs=exclude_songs)
    t0 = time.perf_counter()
    chain = fit_preset(pairs, sr, steps=steps, seed=seed, config=config, crop_s=crop_s, batch=batch, lr=lr)
    seconds = time.perf_counter() - t0
    out = chain_dir(models_dir, group)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "conditional":
        from stemdae.chain.conditional import fit_conditional

        cond = fit_conditional(pairs, sr, steps=steps, seed=seed, base=chain, crop_s=crop_s, batch=batch)
        cond.save(out / "conditional.pt", group=group, **(meta or {}))
        seconds = time.perf_counter() - t0
    chain.save(out / "chain.pt", group=group, **(meta or {}))
    io.write_json(out / "settings.json", chain.settings())
    io.write_csv(out / "fit_history.csv", ({"step": i + 1, "loss": v} for i, v in enumerate(chain.fit_history)), ("step", "loss"))
    log.info("chain %s: %d pairs, %d steps in %.1f s, loss %.4f -> %.4f", group, len(pairs), steps, seconds,
             chain.fit_history[0], chain.fit_history[-1])
    summary = {"group": group, "pairs": len(pairs), "validation_songs": sorted(exclude_songs), "steps": steps,
               "seed": seed, "mode": mode, "fit_s": round(seconds, 2), "loss_first": chain.fit_history[0],
               "loss_last": chain.fit_history[-1], "dir": str(out)}
    io.write_json(out / "fit_summary.json", summary)
    return summary


def load_chain(source: Path) -> Chain:
    """A chain from ``chain.pt``, a ``settings.json`` or a directory holding either."""
    source = Path(source)
    if source.is_dir():
        source = source / "chain.pt" if (source / "chain.pt").exists() else source / "settings.json"
    if not source.exists():
        raise ModelError(f"{source}: no chain model here (fit one with `stemdae chain fit --group G`)")
    if source.suffix == ".json":
        return Chain.from_settings(io.read_json(source))
    return Chain.load(source)
