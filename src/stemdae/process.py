"""Process new recordings with a trained group model: ``stemdae process`` and ``stemdae.process()``.

What one recording goes through (as in training, see ``segments.py``):

1. mono downmix (mean of the channels) at the file's own rate;
2. **pass 1** (streamed): integrated loudness (BS.1770-4, 400 ms gating, by
   :class:`stemdae.stream.LoudnessMeter`) and sample peak -> one gain to
   ``segments.target_lufs``, lowered if the peak would pass
   ``segments.peak_ceiling_dbfs`` (the training segments' peak guard).
   Loudness is measured at the file's rate, before resampling (BS.1770 is
   defined at any rate; the difference is far below 0.01 LU);
3. **pass 2** (streamed): gain -> soxr HQ to the model's rate -> STFT
   (``n_fft``/``hop``, Hann) -> the model, frame by frame -> the model's
   magnitudes with the raw input's phase (or Griffin-Lim started from it) ->
   overlap-add -> soxr HQ back to the file's rate -> written;
4. with ``restore_loudness``, a last pass gives the output the input's
   integrated loudness (measured while writing); otherwise the output stays
   at the level the model produces for a ``target_lufs`` input (stem-like,
   about ``target_lufs``).

Memory is bounded by ``block_frames`` (about 50 MB at the default), not by
the file: every stage is a stream (:mod:`stemdae.stream`), and the blocks are
joined by exact overlap-add bookkeeping, so a file processed in blocks equals
the whole-array computation up to float rounding. The output is a mono
float32 WAV with exactly the input's sample count and rate.

Griffin-Lim (``phase="griffinlim"``) runs per block of ``block_frames`` frames
(32 fast-GL iterations started from the raw phase), so the output's STFT
magnitude comes closer to what the model predicted (the raw phase rarely fits
the new magnitudes exactly). Unlike the raw phase it is not block-exact (each
block is refined on its own, then overlap-added), and it costs about 3x the
raw-phase processing with the paper-size model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stemdae.config import Params, Paths
from stemdae.errors import AudioError, ConfigError, ModelError, StemdaeError
from stemdae.stream import FrameProcessor, LoudnessMeter, Resampler, griffin_lim_frames, unit_phasor, with_raw_phase

log = logging.getLogger(__name__)

__all__ = ["Settings", "load_model", "process", "process_file", "process_files", "resolve_model",
           "serve_predict"]

Phase = Literal["raw", "griffinlim"]
PHASES: tuple[str, ...] = ("raw", "griffinlim")
MAX_CHANNELS = 64  # more rows than this in a 2-D array: probably (samples, channels)
READ_BLOCK = 1 << 18  # input samples per read (about 6 s at 44.1 kHz)
_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://")
_PREDICTORS: dict[str, Any] = {}  # loaded models by source, per process


@dataclass(frozen=True)
class Settings:
    """Everything one rendering needs besides the audio and the model."""

    sr: int  # the model's sample rate
    n_fft: int
    hop: int
    target_lufs: float
    peak_ceiling_dbfs: float
    restore_loudness: bool = False
    phase: Phase = "raw"
    block_frames: int = 1024
    gl_iters: int = 32


def settings_for(predictor: Any, params: Params, *, restore_loudness: bool = False, phase: str = "raw",
                 block_frames: int = 1024) -> Settings:
    """The model's STFT/rate (from ``model.pt``, else ``params``) and the loudness settings.

    Raises
    ------
    ConfigError
        Unknown ``phase`` or ``block_frames < 1``.
    ModelError
        The model's width does not match ``n_fft``.
    """
    if phase not in PHASES:
        raise ConfigError(f"phase: expected one of {PHASES}, found {phase!r}")
    if block_frames < 1:
        raise ConfigError(f"block_frames: expected >= 1, found {block_frames}")
    meta = getattr(predictor, "meta", {}) or {}
    feats = meta.get("features") or {}
    n_fft = int(feats.get("n_fft", params.features.n_fft))
    hop = int(feats.get("hop", params.features.hop))
    sr = int(feats.get("sr", params.segments.sr))
    n_bins = getattr(predictor, "n_bins", n_fft // 2 + 1)
    if n_bins != n_fft // 2 + 1:
        raise ModelError(f"the model takes {n_bins} bins per frame, but n_fft={n_fft} gives {n_fft // 2 + 1}")
    seg = meta.get("segments") or {}
    return Settings(sr=sr, n_fft=n_fft, hop=hop,
                    target_lufs=float(seg.get("target_lufs", params.segments.target_lufs)),
                    peak_ceiling_dbfs=float(seg.get("peak_ceiling_dbfs", params.segments.peak_ceiling_dbfs)),
                    restore_loudness=restore_loudness, phase=phase, block_frames=block_frames)  # type: ignore[arg-type]


# ----------------------------------------------------------------- models


def _is_uri(source: str) -> bool:
    return str(source).startswith(_URI_SCHEMES)


def resolve_model(group: str | None, model: str | Path | None, params: Params, paths: Paths) -> str:
    """Where the model comes from: ``model`` as given, else the registry's ``champion``, else its latest.

    Without ``model`` the registered model ``<registry_prefix><group>`` is looked
    up (alias ``champion`` first, then the highest version); with nothing
    registered, a local ``models/<group>`` is used if it holds a ``model.pt``.

    Raises
    ------
    ConfigError
        ``group`` is not in ``params.groups`` (or neither group nor model given).
    ModelError
        No model found.
    """
    if group is not None and group not in params.groups:
        raise ConfigError(f"unknown group {group!r}; params.yaml defines {sorted(params.groups)}")
    if model is not None:
        s = str(model)
        if _is_uri(s):
            if s.startswith(("models:/", "runs:/")):
                from stemdae import tracking

                tracking.configure(params.tracking, paths.root)
            return s
        p = Path(s)
        if not (p.is_file() or (p / "model.pt").is_file()):
            raise ModelError(f"{s}: no model here (expected a models/<group> folder with model.pt, a model.pt, "
                             "or an MLflow URI such as models:/stemdae-vocal@champion)")
        return str(p)
    if group is None:
        raise ConfigError("process: give a group (to use its registered model) or a model")
    from stemdae import tracking

    uri = tracking.configure(params.tracking, paths.root)
    name = f"{params.tracking.registry_prefix}{group}"
    if tracking.get_alias_version(name, "champion") is not None:
        return f"models:/{name}@champion"
    version = tracking.latest_version(name)
    if version is not None:
        log.info("%s has no champion alias: using its latest version %d", name, version)
        return f"models:/{name}/{version}"
    local = paths.model_dir(group) / "model.pt"
    if local.is_file():
        log.info("no version of %s registered in %s: using %s", name, uri, local.parent)
        return str(local.parent)
    raise ModelError(f"no model for group {group!r}: no version of {name} in {uri} and no {local}; "
                     "train one (`stemdae main`) or pass --model")


def model_file(source: str) -> Path:
    """A local ``model.pt`` for ``source`` (MLflow URIs are downloaded once per process)."""
    if _is_uri(source):
        from stemdae import tracking

        return tracking.download_model_file(source)
    p = Path(source)
    return p / "model.pt" if p.is_dir() else p


def load_model(source: str | Path) -> Any:
    """The :class:`stemdae.predictor.Predictor` at ``source``, cached per process.

    Raises
    ------
    ModelError
        Missing, unreadable or not a stemdae model (message on one line).
    """
    key = str(source)
    if key not in _PREDICTORS:
        from stemdae.predictor import read_model_file

        try:
            _PREDICTORS[key] = read_model_file(model_file(key))
        except StemdaeError as err:
            raise ModelError(" ".join(str(err).split())) from None
    return _PREDICTORS[key]


# ----------------------------------------------------------------- the core


def input_gain_db(lufs: float, peak: float, st: Settings, meter: LoudnessMeter | None = None) -> float:
    """Gain to ``target_lufs``, lowered so the peak stays under the ceiling (0 dB for silence).

    As :func:`stemdae.dsp.loudness.normalize_loudness` (the training segments):
    with the ``meter``, the gain is refined once when the gained signal would
    miss the target by more than 0.01 LU (the absolute gate moves with the level).
    """
    if not math.isfinite(lufs):
        return 0.0
    gain_db = st.target_lufs - lufs
    after = meter.lufs(gain_db=gain_db) if meter is not None else st.target_lufs
    if math.isfinite(after) and abs(after - st.target_lufs) > 0.01:
        gain_db += st.target_lufs - after
    if peak > 0:
        gain_db = min(gain_db, st.peak_ceiling_dbfs - 20 * math.log10(peak))
    return gain_db


class _Exact:
    """Cuts a stream to exactly ``n`` samples (pads with zeros at the end)."""

    def __init__(self, n: int) -> None:
        self.n, self.done = n, 0

    def take(self, y: np.ndarray) -> np.ndarray:
        y = y[: max(self.n - self.done, 0)]
        self.done += y.size
        return y

    def rest(self) -> np.ndarray:
        """The zeros still missing (pass them through :meth:`take`)."""
        return np.zeros(max(self.n - self.done, 0), np.float32)


def _transform(predictor: Any, st: Settings) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(st.n_fft) / st.n_fft)).astype(np.float32)

    def transform(mag: np.ndarray, spec: np.ndarray) -> np.ndarray:
        out = predictor.predict_magnitude(np.ascontiguousarray(mag, dtype=np.float32))
        if st.phase == "griffinlim":
            phasor = griffin_lim_frames(out, unit_phasor(mag, spec), window=window, hop=st.hop, n_iter=st.gl_iters)
            return out * phasor
        return with_raw_phase(out, mag, spec)

    return transform


@dataclass
class RenderInfo:
    n: int
    sr: int
    lufs_in: float
    gain_db: float
    lufs_out: float | None = None
    restore_gain_db: float = 0.0
    peak_out: float = 0.0


def render(chunks: Callable[[], Iterable[np.ndarray]], sr: int, predictor: Any, st: Settings,
           sink: Callable[[np.ndarray], None], *, check: Callable[[np.ndarray, int], None] | None = None
           ) -> RenderInfo:
    """Passes 1 and 2 over a mono stream (see the module docstring).

    Parameters
    ----------
    chunks
        Called twice; each call yields the mono signal ``(samples,)`` at ``sr`` in chunks.
    sink
        Receives the output at ``sr`` in chunks; in total exactly as many samples as the input.
    check
        Called on each pass-1 chunk with its start sample (raise to reject the input).
    """
    meter = LoudnessMeter(sr)
    for c in chunks():
        if check is not None:
            check(c, meter.n)
        meter.update(c)
    n = meter.n
    if n == 0:
        raise AudioError("empty (expected audio samples, found 0)")
    lufs_in = meter.lufs()
    if not math.isfinite(lufs_in):
        log.warning("silent input (below -70 LUFS): processed without loudness gain")
    gain_db = input_gain_db(lufs_in, meter.peak, st, meter)
    gain = np.float32(10 ** (gain_db / 20))
    from stemdae.dsp.resample import resampled_length

    rs_in, rs_out = Resampler(sr, st.sr), Resampler(st.sr, sr)
    mid, out = _Exact(resampled_length(n, sr, st.sr)), _Exact(n)
    fp = FrameProcessor(_transform(predictor, st), n_fft=st.n_fft, hop=st.hop, block_frames=st.block_frames)
    info = RenderInfo(n=n, sr=sr, lufs_in=lufs_in, gain_db=gain_db)
    out_meter = LoudnessMeter(sr) if st.restore_loudness else None

    def emit(y: np.ndarray) -> None:
        y = out.take(y)
        if y.size:
            info.peak_out = max(info.peak_out, float(np.max(np.abs(y))))
            if out_meter is not None:
                out_meter.update(y)
            sink(y)

    for c in chunks():
        emit(rs_out.push(fp.push(mid.take(rs_in.push(c * gain)))))
    tail = mid.take(rs_in.push(np.zeros(0, np.float32), last=True))
    y = fp.push(np.concatenate([tail, mid.take(mid.rest())]))
    emit(rs_out.push(np.concatenate([y, fp.finish()]), last=True))
    emit(out.rest())
    if out_meter is not None:
        info.lufs_out = out_meter.lufs()
        if math.isfinite(info.lufs_out) and math.isfinite(lufs_in):
            info.restore_gain_db = lufs_in - info.lufs_out
    return info


# ----------------------------------------------------------------- in memory


def _mono(audio: Any) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim not in (1, 2) or x.size == 0:
        raise AudioError(f"expected audio of shape (samples,) or (channels, samples), found {x.shape}")
    if x.ndim == 2 and x.shape[0] > MAX_CHANNELS:
        raise AudioError(f"expected (channels, samples) with at most {MAX_CHANNELS} channels, found {x.shape}"
                         + (" (transposed? use audio.T)" if x.shape[1] <= MAX_CHANNELS else ""))
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise AudioError(f"expected float or integer samples, found dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.integer):  # PCM: scale to [-1, 1)
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min if np.iinfo(x.dtype).min < 0 else 1 << 7)
    mono = x.astype(np.float32, copy=False) if x.ndim == 1 else x.mean(axis=0, dtype=np.float32)
    bad = ~np.isfinite(mono)
    if bad.any():
        raise AudioError(f"expected finite samples, found {int(bad.sum())} NaN/Inf "
                         f"(first at sample {int(np.argmax(bad))})")
    return mono


def process(audio: np.ndarray, sr: int, *, group: str | None = None, model: Any = None,
            params: Params | None = None, paths: Paths | None = None, restore_loudness: bool = False,
            phase: Phase = "raw", block_frames: int = 1024) -> np.ndarray:
    """Process one recording in memory with a group model: raw audio in, stem-like audio out.

    Parameters
    ----------
    audio
        ``(samples,)`` or ``(channels, samples)``, float (or integer PCM), any
        length >= 1; downmixed to mono as in training.
    sr
        Its sample rate in Hz (any; resampled to the model's rate and back).
    group
        Instrument group; without ``model`` its registered model is used
        (alias ``champion``, else the latest version).
    model
        An MLflow model URI (``models:/stemdae-vocal/3``), a ``models/<group>``
        folder or ``model.pt``, or a loaded :class:`~stemdae.predictor.Predictor`.
    params, paths
        Settings (``segments.target_lufs``, tracking URI) and project root;
        default: the built-in defaults and the current folder.
    restore_loudness
        Give the output the input's integrated loudness (default: the model's
        level for a ``target_lufs`` input).
    phase
        ``"raw"`` (the input's phase, as the paper) or ``"griffinlim"``.
    block_frames
        STFT frames per model call (the memory bound).

    Returns
    -------
    np.ndarray
        float32 ``(samples,)``: mono, the input's length, at ``sr``.

    Raises
    ------
    AudioError
        Empty, non-finite, or wrongly shaped audio.
    ConfigError, ModelError
        Unknown group or phase; no model.

    Examples
    --------
    >>> import stemdae
    >>> y = stemdae.process(x, 48000, group="vocal")                    # doctest: +SKIP
    >>> y = stemdae.process(x, 48000, model="models/vocal", restore_loudness=True)  # doctest: +SKIP
    """
    params = params if params is not None else Params()
    paths = paths if paths is not None else Paths()
    if int(sr) != sr or sr <= 0:
        raise AudioError(f"expected a positive integer sample rate, found {sr}")
    mono = _mono(audio)
    predictor = model if hasattr(model, "predict_magnitude") else load_model(resolve_model(group, model, params, paths))
    st = settings_for(predictor, params, restore_loudness=restore_loudness, phase=phase, block_frames=block_frames)
    return _process_array(mono, int(sr), predictor, st)


def _process_array(mono: np.ndarray, sr: int, predictor: Any, st: Settings) -> np.ndarray:
    step = READ_BLOCK
    parts: list[np.ndarray] = []
    info = render(lambda: (mono[i:i + step] for i in range(0, mono.size, step)), sr, predictor, st, parts.append)
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if info.restore_gain_db:
        y *= np.float32(10 ** (info.restore_gain_db / 20))
    return y


def serve_predict(predictor: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """What the MLflow pyfunc answers: magnitudes (default) or, with ``params["input"] == "audio"``, audio.

    - ``input="magnitude"``: ``model_input`` float32 ``(frames, n_bins)`` linear
      magnitudes -> the predicted magnitudes, same shape.
    - ``input="audio"``: ``model_input`` ``(channels, samples)`` at ``params["sr"]``
      (default 44100) -> ``(1, samples)`` processed audio, as :func:`process`
      (``restore_loudness``, ``phase`` params too).

    Raises
    ------
    StemdaeError
        Bad params or input (the scoring server answers 400 with the message).
    """
    params = dict(params or {})
    x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    kind = params.get("input", "magnitude")
    if kind == "magnitude":
        return predictor.predict_magnitude(np.asarray(x, dtype=np.float32))
    if kind != "audio":
        raise ConfigError(f"params.input: expected 'magnitude' or 'audio', found {kind!r}")
    y = process(x, int(params.get("sr", 44100)), model=predictor,
                restore_loudness=bool(params.get("restore_loudness", False)),
                phase=str(params.get("phase", "raw")))  # type: ignore[arg-type]
    return y[None, :]


# ----------------------------------------------------------------- files


def _audio_error(path: Path | str, reason: str) -> AudioError:
    err = AudioError(f"{path}: {reason}")
    err.file, err.reason = str(path), reason  # type: ignore[attr-defined]
    return err


class _FileSource:
    """A file's mono downmix in blocks, re-readable (pass 1 and pass 2); soundfile, else librosa."""

    def __init__(self, path: Path, *, read_block: int = READ_BLOCK) -> None:
        import soundfile as sf

        from stemdae.io import audio_info

        self.path, self._memory, self.read_block = path, None, int(read_block)
        try:
            info = audio_info(path)  # missing, unreadable, empty, truncated, > 8 channels
            self.sr = info.sr
        except AudioError as err:
            if not path.is_file() or any(k in str(err) for k in ("not found", "empty", "truncated")):
                raise
            if "channels" in str(err):  # io's 8-channel limit is for the corpus; any count downmixes
                with sf.SoundFile(path) as f:
                    self.sr = int(f.samplerate)
            else:
                self._memory, self.sr = self._librosa(path, err)
        self._sf = sf

    @staticmethod
    def _librosa(path: Path, err: AudioError) -> tuple[np.ndarray, int]:
        """Formats libsndfile lacks (m4a, ...) via librosa/audioread: whole file in memory."""
        import warnings

        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead."
                y, sr = librosa.load(path, sr=None, mono=True, dtype=np.float32)
        except Exception:
            raise err from None
        if y.size == 0:
            raise _audio_error(path, "empty (expected audio samples, found 0 frames)")
        return y, int(sr)

    def __call__(self) -> Iterator[np.ndarray]:
        if self._memory is not None:
            step = self.read_block
            yield from (self._memory[i:i + step] for i in range(0, self._memory.size, step))
            return
        try:
            with self._sf.SoundFile(self.path) as f:
                for block in f.blocks(blocksize=self.read_block, dtype="float32", always_2d=True):
                    yield _downmix(block)
        except (self._sf.LibsndfileError, RuntimeError) as err:
            raise _audio_error(self.path, f"cannot decode ({err})") from None

    def check(self, chunk: np.ndarray, start: int) -> None:
        bad = ~np.isfinite(chunk)
        if bad.any():
            at = (start + int(np.argmax(bad))) / self.sr
            raise _audio_error(self.path, f"expected finite samples, found {int(bad.sum())} NaN/Inf from {at:.3f} s")


def _downmix(block: np.ndarray) -> np.ndarray:
    """Mean of the channels of ``(samples, channels)``, float32 ``(samples,)``.

    Column adds: numpy's ``mean(axis=1)`` over a short axis is ~20x slower, and a
    BLAS product can stall on its thread pool next to torch's.
    """
    out = block[:, 0].copy()
    for ch in range(1, block.shape[1]):
        out += block[:, ch]
    if block.shape[1] > 1:
        out *= np.float32(1.0 / block.shape[1])
    return out


def _tmp_path(out: Path) -> Path:
    import os

    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def process_file(path: Path | str, out: Path | str, *, predictor: Any, st: Settings,
                 read_block: int = READ_BLOCK) -> RenderInfo:
    """Process one audio file into a mono float32 WAV ``out``, streamed (see the module docstring).

    The output is written to a hidden temporary file beside ``out`` and renamed
    over it when complete.

    Raises
    ------
    AudioError
        Unreadable, empty, non-finite input (message starts with the file).
    StemdaeError
        ``out`` cannot be written.
    """
    import os

    import soundfile as sf

    path, out = Path(path), Path(out)
    src = _FileSource(path, read_block=read_block)
    tmp = _tmp_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = sf.SoundFile(tmp, "w", samplerate=src.sr, channels=1, subtype="FLOAT", format="WAV")
    except (OSError, sf.LibsndfileError, RuntimeError) as err:
        raise StemdaeError(f"{out}: cannot write the output ({_reason(err)})") from None
    try:
        with writer:
            info = render(src, src.sr, predictor, st, writer.write, check=src.check)
        if info.restore_gain_db:
            _scale_in_place(tmp, 10 ** (info.restore_gain_db / 20))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if info.peak_out * 10 ** (info.restore_gain_db / 20) > 1.0:
        log.warning("%s: peaks above 0 dBFS (kept: float WAV)", out)
    return info


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or " ".join(str(err).split())


def _scale_in_place(path: Path, gain: float) -> None:
    import soundfile as sf

    with sf.SoundFile(path, "r+") as f:
        pos = 0
        while pos < f.frames:
            f.seek(pos)
            block = f.read(READ_BLOCK, dtype="float32")
            f.seek(pos)
            f.write(block * np.float32(gain))
            pos += len(block)


# ----------------------------------------------------------------- batch

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".mp3",
                            ".w64", ".rf64", ".caf", ".au", ".snd", ".m4a", ".wv"})


@dataclass(frozen=True)
class Job:
    src: Path
    out: Path


@dataclass
class FileResult:
    src: str
    out: str
    error: str | None = None
    duration_s: float = 0.0
    elapsed_s: float = 0.0


def _has_magic(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def expand_inputs(inputs: Iterable[Path | str], *, skip_suffixes: tuple[str, ...] = ()
                  ) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files to process as ``(file, name relative to its folder argument)``, and ``(input, problem)`` pairs.

    A folder gives its audio files (recursively, by suffix), a glob its matches
    (``**`` recursive), a file itself. Files ending in one of ``skip_suffixes``
    (earlier outputs, ``*.<group>.wav``) are left out of folders and globs.
    """
    import glob

    files: list[tuple[Path, Path]] = []
    bad: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path, rel: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append((p, rel))

    def wanted(p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.endswith(skip_suffixes)

    for item in map(str, inputs):
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if wanted(q))
            if not found:
                bad.append((item, "folder holds no audio files"))
            for q in found:
                add(q, q.relative_to(p))
        elif p.is_file():
            add(p, Path(p.name))
        elif _has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if wanted(Path(q)))
            if not found:
                bad.append((item, "no audio files match"))
            for q in found:
                add(q, Path(q.name))
        else:
            bad.append((item, "not found (expected an audio file, a folder or a glob)"))
    return files, bad


def plan_outputs(files: list[tuple[Path, Path]], out: Path | None, *, group: str) -> list[Job]:
    """Output path per file: ``<name>.<group>.wav`` beside it, or in ``out`` (a file for one input)."""
    suffix = f".{group}.wav"
    if out is not None and len(files) == 1 and not out.is_dir() and out.suffix:
        return [Job(files[0][0], out)]
    jobs, taken = [], set()
    for src, rel in files:
        base = src.parent if out is None else out / rel.parent
        target = base / (src.stem + suffix)
        k = 2
        while target in taken:  # same name from two folders or globs
            target = base / f"{src.stem}-{k}{suffix}"
            k += 1
        taken.add(target)
        jobs.append(Job(src, target))
    return jobs


_WORKER: dict[str, Any] = {}


def _init_worker(model_path: str, st: Settings, log_level: int) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    _WORKER["st"] = st
    try:
        _WORKER["predictor"] = load_model(model_path)
    except StemdaeError as err:
        _WORKER["error"] = str(err)


def _run_job(job: Job, predictor: Any = None, st: Settings | None = None) -> FileResult:
    import time

    t0 = time.perf_counter()
    res = FileResult(str(job.src), str(job.out))
    try:
        if predictor is None:
            if "error" in _WORKER:
                raise ModelError(_WORKER["error"])
            predictor, st = _WORKER["predictor"], _WORKER["st"]
        info = process_file(job.src, job.out, predictor=predictor, st=st)
        res.duration_s = info.n / info.sr
    except StemdaeError as err:
        msg = " ".join(str(err).split())
        res.error = msg[len(str(job.src)) + 2:] if msg.startswith(f"{job.src}: ") else msg
    except Exception as err:  # a bug, but one file must not stop the batch
        log.exception("%s: unexpected error", job.src)
        res.error = f"unexpected {type(err).__name__}: {' '.join(str(err).split())}"
    res.elapsed_s = time.perf_counter() - t0
    return res


def process_files(inputs: list[Path], *, group: str, params: Params, paths: Paths, model: str | None = None,
                  out: Path | None = None, jobs: int = 0, restore_loudness: bool = False, phase: str = "raw",
                  block_frames: int = 1024):
    """``stemdae process``: every input file -> a stem-like WAV; failures are counted, not fatal.

    Parameters
    ----------
    inputs
        Files, folders (recursive) and globs.
    group
        Instrument group (its model and the output names ``<name>.<group>.wav``).
    model
        MLflow model URI or local model folder (default: see :func:`resolve_model`).
    out
        Output file (one input) or folder (default: beside each input).
    jobs
        Parallel files (0: all cores); each worker uses one torch thread.

    Returns
    -------
    stemdae.summary.Summary
        Counts, outputs and one skip per failed input; ``exit_code`` 1 when any failed.

    Raises
    ------
    ConfigError, ModelError
        Unknown group or phase, no model (nothing is processed).
    """
    import os
    import sys
    import time

    from stemdae.summary import Summary

    summary = Summary("process")
    source = resolve_model(group, model, params, paths)
    local = str(model_file(source))  # download an MLflow model once, for all workers
    predictor = load_model(local)
    meta_group = (getattr(predictor, "meta", {}) or {}).get("group")
    if meta_group and meta_group != group:
        log.warning("the model %s was trained for group %r, not %r", source, meta_group, group)
    st = settings_for(predictor, params, restore_loudness=restore_loudness, phase=phase, block_frames=block_frames)
    files, bad = expand_inputs(inputs, skip_suffixes=tuple(f".{g}.wav" for g in params.groups))
    for item, reason in bad:
        summary.skip(item, reason)
    todo = plan_outputs(files, out, group=group)
    n_workers = min(jobs if jobs > 0 else (os.cpu_count() or 1), len(todo))
    log.info("process: %d files, group %s, model %s, %d worker(s)", len(todo), group, source, max(n_workers, 1))
    results = _run_all(todo, n_workers, local, predictor, st, progress=sys.stderr.isatty())
    audio_s = sum(r.duration_s for r in results if r.error is None)
    for r in results:
        if r.error is not None:
            summary.skip(r.src, r.error)
    ok = [r for r in results if r.error is None]
    summary.outputs = [r.out for r in ok] if len(ok) <= 10 else [f"{len(ok)} files under {out or 'their folders'}"]
    summary.done()
    summary.counts = {"files": len(todo) + len(bad), "processed": len(ok), "failed": len(todo) - len(ok) + len(bad),
                      "audio_s": round(audio_s, 1),
                      "realtime_factor": round(summary.elapsed_s / audio_s, 4) if audio_s else None}
    summary.exit_code = 1 if summary.skips else 0
    log.info("process: %d of %d files in %.1f s", len(ok), len(todo) + len(bad), time.perf_counter() - summary.started)
    return summary


def _run_all(todo: list[Job], n_workers: int, local: str, predictor: Any, st: Settings, *,
             progress: bool) -> list[FileResult]:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="file", disable=not progress or not todo, desc="process")
    results: list[FileResult] = []
    try:
        if n_workers <= 1:
            for job in todo:
                results.append(_run_job(job, predictor, st))
                bar.update()
            return results
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # fork where there is one: workers start at once and share the loaded model (copy-on-write).
        # Safe with torch as in DataLoader workers: each worker runs torch with one thread
        # (no OpenMP region is entered after the fork).
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context(method), initializer=_init_worker,
                                 initargs=(local, st, logging.getLogger().level)) as pool:
            futures = {pool.submit(_run_job, job): job for job in todo}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    results.append(fut.result())
                except Exception as err:  # a worker died (out of memory, killed)
                    results.append(FileResult(str(job.src), str(job.out), error=f"worker failed ({err})"))
                bar.update()
        order = {str(j.src): i for i, j in enumerate(todo)}
        return sorted(results, key=lambda r: order[r.src])
    finally:
        bar.close()


# ----------------------------------------------------------------- `stemdae.process(...)`
# Importing this submodule makes the package attribute ``stemdae.process`` the
# module itself (the import system sets it), which would shadow the lazily
# exported function after the first import. A callable module keeps
# ``stemdae.process(audio, sr, ...)`` working either way.


class _CallableModule(__import__("types").ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return process(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
