"""The front-end contract: how audio becomes the model's input, saved inside every model file.

One frozen record, :class:`FrontEnd`, says everything between a recording and
the magnitudes a model sees: the rate, the STFT, the mono rule and the
loudness rule. Training writes it into ``model.pt`` (built from ``params.yaml``
by :func:`FrontEnd.from_params`); every consumer of a model — evaluation,
``stemdae process``, the MLflow pyfunc — reads it back from the file
(:func:`FrontEnd.from_dict`), never from the ``params.yaml`` of the day.

The loudness rule is the training segments' rule (``pairs.py`` picks the
highest-energy ``window_s`` window, ``segments.py`` normalises it with
:func:`stemdae.dsp.loudness.normalize_loudness`): the gain that puts the
recording's highest-energy ``window_s`` window at ``target_lufs``, scaled down
when that window's sample peak would pass ``peak_ceiling_dbfs``.

:class:`TrainedOn` records what a model was trained on (corpus kind and data
version) so processing can warn when a demo-trained model meets a real file.

Pure Python: no numpy, torch or MLflow (level 1 of docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from stemdae.errors import ModelError

__all__ = ["DEMO_MARKERS", "FrontEnd", "TrainedOn", "corpus_kind"]

#: Files that mark a demo (synthetic) corpus: H2's marker at the root, or the per-song chain files.
DEMO_MARKERS = (".stemdae-demo-corpus", "STEMDAE_DEMO_CORPUS", "DEMO_CORPUS.json")


@dataclass(frozen=True)
class FrontEnd:
    """Signal front end of one model (see the module docstring).

    Attributes
    ----------
    sr
        The model's sample rate, Hz.
    n_fft, hop
        STFT frame and hop, samples.
    window
        STFT window (``"hann"``, periodic).
    center
        Frames centred (``n_fft // 2`` padding each side) ...
    pad_mode
        ... with this padding (``"reflect"``).
    mono
        How channels become the model's one channel: ``"mean"``.
    target_lufs
        Loudness the statistic is brought to, LUFS.
    loudness_stat
        ``"loudest_window"``: BS.1770 integrated loudness of the highest-energy ``window_s`` window.
    window_s
        That window, seconds.
    peak_ceiling_dbfs
        The window's sample peak after the gain stays at or below this.
    """

    sr: int
    n_fft: int
    hop: int
    target_lufs: float
    window_s: float
    peak_ceiling_dbfs: float
    window: str = "hann"
    center: bool = True
    pad_mode: str = "reflect"
    mono: str = "mean"
    loudness_stat: str = "loudest_window"

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data (saved in ``model.pt``, loadable with ``weights_only=True``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "model.pt") -> FrontEnd:
        """The record saved by :meth:`to_dict`.

        Raises
        ------
        ModelError
            Missing (a model file written before the front end was saved) or malformed.
        """
        if not isinstance(d, dict):
            raise ModelError(f"{where}: no front-end record (written by an older stemdae); "
                             "retrain it with `stemdae train --group <group>`")
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(n for n in ("sr", "n_fft", "hop", "target_lufs",
                                                                       "window_s", "peak_ceiling_dbfs") if n not in d)
        if unknown or missing:
            raise ModelError(f"{where}: front-end record with unknown keys {unknown} / missing keys {missing}")
        try:
            fe = cls(**{k: type(getattr(_DEFAULT, k))(v) for k, v in d.items()})
        except (TypeError, ValueError) as err:
            raise ModelError(f"{where}: malformed front-end record ({err})") from None
        if (fe.window, fe.center, fe.pad_mode, fe.mono, fe.loudness_stat) != ("hann", True, "reflect", "mean",
                                                                              "loudest_window"):
            raise ModelError(f"{where}: front end {fe} is not one this stemdae implements")
        if fe.n_fft < 2 or fe.n_fft % 2 or not 1 <= fe.hop <= fe.n_fft or fe.sr <= 0 or fe.window_s <= 0:
            raise ModelError(f"{where}: front end with sr={fe.sr}, n_fft={fe.n_fft}, hop={fe.hop}, "
                             f"window_s={fe.window_s} is not usable")
        return fe

    @classmethod
    def from_params(cls, params: Any) -> FrontEnd:
        """From a validated :class:`stemdae.config.Params` (``segments`` and ``features``)."""
        seg, feat = params.segments, params.features
        return cls(sr=int(seg.sr), n_fft=int(feat.n_fft), hop=int(feat.hop), target_lufs=float(seg.target_lufs),
                   window_s=float(seg.window_s), peak_ceiling_dbfs=float(seg.peak_ceiling_dbfs),
                   window=str(feat.window))


_DEFAULT = FrontEnd(sr=44100, n_fft=2048, hop=1024, target_lufs=-23.0, window_s=10.0, peak_ceiling_dbfs=-1.0)


@dataclass(frozen=True)
class TrainedOn:
    """What a model was trained on: ``corpus`` (``"demo"``, ``"real"``), ``data_version`` (data.dvc md5)."""

    corpus: str
    data_version: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TrainedOn | None:
        if not isinstance(d, dict) or "corpus" not in d:
            return None
        return cls(str(d["corpus"]), str(d.get("data_version", "unknown")))

    @classmethod
    def of_corpus(cls, corpus_root: Path, data_dvc: Path) -> TrainedOn:
        return cls(corpus_kind(corpus_root), _dvc_md5(data_dvc))


def corpus_kind(root: Path) -> str:
    """``"demo"`` when ``root`` holds a demo marker or any ``<Song>/<Song>_CHAINS.json``, else ``"real"``."""
    root = Path(root)
    if any((root / m).exists() for m in DEMO_MARKERS):
        return "demo"
    try:
        return "demo" if next(root.glob("*/*_CHAINS.json"), None) is not None else "real"
    except OSError:
        return "real"


def _dvc_md5(data_dvc: Path) -> str:
    """The first ``md5:`` of a ``.dvc`` file (without a YAML parser), ``unknown`` without one."""
    try:
        for line in Path(data_dvc).read_text().splitlines():
            key, _, value = line.strip().lstrip("- ").partition(":")
            if key == "md5" and value.strip():
                return value.strip()
    except OSError:
        pass
    return "unknown"
