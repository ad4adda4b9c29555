"""Matplotlib figures of training: the learning curve and spectrogram triptychs.

Figures are made with the object API (no pyplot state) so they work in any
backend and thread; :func:`save` writes and closes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stemdae.errors import WriteError
from stemdae.writeguard import writing

__all__ = ["learning_curve", "save", "spectrogram_triptych"]


def learning_curve(history: pd.DataFrame, *, title: str = "") -> Figure:
    """Train and validation loss against the global epoch, phases shaded.

    Parameters
    ----------
    history
        ``epoch, phase, train_loss, val_loss`` (as ``learning_curve.csv``).
    """
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.add_subplot()
    if len(history):
        span = max(float(history["epoch"].max() - history["epoch"].min() + 1), 1.0)
        for k, (phase, rows) in enumerate(history.groupby("phase", sort=False)):
            lo, hi = rows["epoch"].min() - 0.5, rows["epoch"].max() + 0.5
            ax.axvspan(lo, hi, color=f"C{k % 10}", alpha=0.08, lw=0)
            narrow = (hi - lo) / span < 0.12  # short phases: vertical labels inside the span, no overlap
            ax.text((lo + hi) / 2, 0.98 if narrow else 1.0, phase, transform=ax.get_xaxis_transform(),
                    ha="center", va="top" if narrow else "bottom", fontsize=7 if narrow else 8,
                    rotation=90 if narrow else 0)
        ax.plot(history["epoch"], history["train_loss"], "-", color="C0", label="train")
        if history["val_loss"].notna().any():
            ax.plot(history["epoch"], history["val_loss"], "-", color="C3", label="validation")
        ax.legend(loc="upper right")
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("mean absolute error (scaled)")
    if title:
        ax.set_title(title, pad=14)
    return fig


def _db(mag: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(mag, 1e-6))


def spectrogram_triptych(raw: np.ndarray, target: np.ndarray, output: np.ndarray, *, sr: int, hop: int,
                         title: str = "") -> Figure:
    """Raw input, stem target and model output side by side, in dB.

    Parameters
    ----------
    raw, target, output
        Linear magnitudes ``(frames, n_bins)``.
    sr, hop
        For the time and frequency axes.
    """
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    top = float(max(_db(a).max() for a in (raw, target, output)))
    n_frames, n_bins = raw.shape
    extent = (0.0, n_frames * hop / sr, 0.0, sr / 2 / 1000)
    for ax, mag, name in zip(axes, (raw, target, output), ("raw input", "stem target", "model output")):
        im = ax.imshow(_db(mag).T, origin="lower", aspect="auto", extent=extent, vmin=top - 80, vmax=top,
                       cmap="magma", interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    fig.colorbar(im, ax=axes, label="dB", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def save(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with writing(path):  # a full disk or read-only file system: one line naming the figure
            fig.savefig(path, dpi=dpi)
    except WriteError:
        path.unlink(missing_ok=True)  # no half-written figure
        raise
    finally:
        fig.clear()
    return path
