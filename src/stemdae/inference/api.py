"""In memory: ``stemdae.process(audio, sr, ...)`` and what the MLflow pyfunc answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from stemdae.config import Params, Paths
from stemdae.errors import AudioError, ConfigError
from stemdae.inference.files import ArraySource
from stemdae.inference.models import load_model, resolve_model, warn_if_demo
from stemdae.inference.render import render, settings_for

__all__ = ["as_channels", "process", "serve_predict"]

MAX_CHANNELS = 64  # more rows than this in a 2-D array: probably (samples, channels)


def as_channels(audio: Any) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` float or integer PCM -> float32 ``(channels, samples)``.

    Raises
    ------
    AudioError
        Wrong shape or dtype (a transposed array is named as such).
    """
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
    return np.atleast_2d(x.astype(np.float32, copy=False))


def process(audio: np.ndarray, sr: int, *, group: str | None = None, model: Any = None,
            params: Params | None = None, paths: Paths | None = None, restore_loudness: bool = False,
            phase: str = "raw", channels: str = "same", block_frames: int = 1024, device: str = "cpu",
            precision: str = "fp32", tap: Any = None) -> np.ndarray:
    """Process one recording in memory with a group model: raw audio in, stem-like audio out.

    Parameters
    ----------
    audio
        ``(samples,)`` or ``(channels, samples)``, float (or integer PCM), any length >= 1.
    sr
        Its sample rate in Hz (any; resampled to the model's rate and back).
    group
        Instrument group; without ``model`` its registered model is used
        (alias ``champion``, else the latest version, else ``models/<group>``).
    model
        An MLflow model URI, a ``models/<group>`` folder or ``model.pt``, or a loaded
        :class:`~stemdae.predictor.Predictor`. Its front end (rate, STFT, loudness
        rule) comes from the model file.
    params, paths
        Only for finding a registered model (tracking URI, registry prefix) and the project root.
    restore_loudness
        Undo the input gain on the output (it keeps the input's level).
    phase
        ``"raw"`` (the input's phase, as the paper) or ``"griffinlim"``.
    channels
        ``"same"`` (the input's layout, every channel with the same gain), ``"mono"`` or ``"stereo"``.
    block_frames
        STFT frames per model call (the memory bound).
    device
        ``cpu``, ``cuda`` or ``auto`` (for a model given by name).
    precision
        ``"fp32"`` (as evaluated) or ``"bf16"`` (the network in bfloat16: about 4x less
        CPU time for the network on CPUs with bf16 units, magnitudes within about 0.1%).
    tap
        ``tap(channel, magnitudes in, magnitudes out)`` for every model call (diagnostics, tests).

    Returns
    -------
    np.ndarray
        float32 ``(samples,)`` with ``channels="mono"`` or for a 1-D input with ``"same"``,
        else ``(channels, samples)``; the input's length, at ``sr``.

    Raises
    ------
    AudioError
        Empty, non-finite, or wrongly shaped audio.
    ConfigError, ModelError
        Unknown option; no model.

    Examples
    --------
    >>> import stemdae
    >>> y = stemdae.process(x, 48000, group="vocal")                    # doctest: +SKIP
    >>> y = stemdae.process(x, 48000, model="models/vocal", restore_loudness=True)  # doctest: +SKIP
    """
    if int(sr) != sr or sr <= 0:
        raise AudioError(f"expected a positive integer sample rate, found {sr}")
    x = as_channels(audio)
    if hasattr(model, "predict_magnitude") or hasattr(model, "stream"):  # a loaded DAE or chain model
        predictor = model
    else:
        params, paths = params or Params(), paths or Paths()
        source = resolve_model(group, model, params, paths)
        predictor = load_model(source, device=device, params=params, paths=paths, precision=precision)
        warn_if_demo(predictor, source)
    st = settings_for(predictor, restore_loudness=restore_loudness, phase=phase, channels=channels,
                      block_frames=block_frames, precision=precision)
    parts: list[np.ndarray] = []
    render(ArraySource(x, int(sr)), predictor, st, parts.append, tap=tap)
    y = np.concatenate(parts).T
    one_d = y.shape[0] == 1 and (np.ndim(audio) == 1 or channels == "mono")
    return y[0] if one_d else np.ascontiguousarray(y)


def serve_predict(predictor: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """What the MLflow pyfunc answers: magnitudes (default) or, with ``params["input"] == "audio"``, audio.

    - ``input="magnitude"``: float32 ``(frames, n_bins)`` linear magnitudes -> the predicted magnitudes.
    - ``input="audio"``: ``(channels, samples)`` at ``params["sr"]`` (default 44100) ->
      ``(channels, samples)`` processed audio, as :func:`process` (``restore_loudness``,
      ``phase``, ``channels``, ``precision`` params too).

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
    y = process(np.atleast_2d(x), int(params.get("sr", 44100)), model=predictor,
                restore_loudness=bool(params.get("restore_loudness", False)), phase=str(params.get("phase", "raw")),
                channels=str(params.get("channels", "same")), precision=str(params.get("precision", "fp32")))
    return np.atleast_2d(y)
