"""``Chain``: an engineer's chain per group as one differentiable ``nn.Module``.

Order: high-pass (two first-order sections, 12 dB/octave) -> saturation and a
low-pass (optional: an amp and its cabinet, two first-order sections) -> low shelf ->
``n_bells`` peaking bells -> high shelf -> compressor -> make-up gain -> reverb
(optional). Every setting is a logit mapped
into its engineer range (``ranges.py``); ``settings()`` reads them out in Hz,
dB, Q, ratio, ms and s as a JSON-ready dict, and ``from_settings()`` builds
the chain back from such a dict. ``render.py`` plays the same dict through
pedalboard.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from stemdae.chain import filters
from stemdae.chain.dynamics import compress
from stemdae.chain.ranges import INITIAL, RANGES, Range, bell_initial
from stemdae.chain.record import FORMAT, check_format
from stemdae.chain.reverb import add_reverb, impulse_response, reverb_noise
from stemdae.errors import ModelError


@dataclass(frozen=True)
class ChainConfig:
    """Structure of a chain (not learned): sample rate and which effects it has."""

    sr: int = 44100
    n_bells: int = 3
    saturation: bool = False
    reverb: bool = True
    reverb_ir_s: float = 1.0
    reverb_seed: int = 0
    eq_tail_s: float = 0.5  # zero padding for the EQ's IIR tail (see filters.py)
    lowpass: bool | None = None  # None: with the saturation (the amp's cabinet)
    reverb_buildup: bool = True  # the reverb's onset build-up (reverb.py)

    def __post_init__(self) -> None:
        if self.lowpass is None:
            object.__setattr__(self, "lowpass", self.saturation)


def config_from_dict(d: dict) -> ChainConfig:
    """A :class:`ChainConfig` from its saved dict; keys an older file lacks (``lowpass``,
    ``reverb_buildup``) mean what it had: no such section."""
    return ChainConfig(**{"lowpass": False, "reverb_buildup": False, **d})


class Chain(nn.Module):
    """Differentiable chain; ``forward`` maps ``(batch, n)`` raw audio to ``(batch, n)``."""

    def __init__(self, config: ChainConfig = ChainConfig()):
        super().__init__()
        self.config = config
        self.logits = nn.ParameterDict()
        start = self._initial_settings()
        for effect, name, rng in self._slots():
            value = _lookup(start, effect, name)
            self.logits[f"{effect}__{name}"] = nn.Parameter(torch.tensor(rng.logit(value, key=f"{effect}.{name}")))
        if config.reverb:
            noise = reverb_noise(config.sr, ir_s=config.reverb_ir_s, seed=config.reverb_seed)
            self.register_buffer("noise", torch.from_numpy(noise), persistent=False)

    # -- structure -----------------------------------------------------------------
    def _effects(self) -> list[tuple[str, str]]:
        """(effect key in settings, range family) in signal order."""
        c = self.config
        effects = [("highpass", "highpass")]
        effects += [("saturation", "saturation")] if c.saturation else []
        effects += [("lowpass", "lowpass")] if c.lowpass else []
        effects += [("low_shelf", "low_shelf")] + [(f"bell{i}", "bell") for i in range(c.n_bells)]
        effects += [("high_shelf", "high_shelf"), ("compressor", "compressor")]
        effects += [("reverb", "reverb")] if c.reverb else []
        return effects

    def _slots(self):
        for effect, family in self._effects():
            for name, rng in RANGES[family].items():
                if name != "buildup_ms" or self.config.reverb_buildup:
                    yield effect, name, rng

    def _initial_settings(self) -> dict:
        start = {k: dict(v) for k, v in INITIAL.items()}
        for i in range(self.config.n_bells):
            start[f"bell{i}"] = bell_initial(i, self.config.n_bells)
        return start

    def value(self, effect: str, name: str) -> torch.Tensor:
        family = effect.rstrip("0123456789")
        return RANGES[family][name].value(self.logits[f"{effect}__{name}"])

    def values(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every setting as a scalar tensor in engineer units (differentiable)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for effect, name, _ in self._slots():
            out.setdefault(effect, {})[name] = self.value(effect, name)
        return out

    # -- signal --------------------------------------------------------------------
    def eq_coefs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All EQ sections as ``(b, a)`` of shape ``(n_sections, 3)``, in signal order."""
        return eq_coefs(self.values(), self.config)

    def eq_response_db(self, freqs_hz) -> torch.Tensor:
        """Magnitude of the whole EQ in dB at ``freqs_hz``."""
        b, a = self.eq_coefs()
        h = filters.response_at(b, a, freqs_hz, self.config.sr).prod(0)
        return 20 * torch.log10(h.abs())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return process(x, self.values(), self.config, getattr(self, "noise", None))

    # -- engineer units ------------------------------------------------------------
    def settings(self) -> dict:
        """Every setting in engineer units, plus the structure: JSON-serialisable."""
        out: dict = {"format": FORMAT, "config": asdict(self.config)}
        with torch.no_grad():
            for effect, name, _ in self._slots():
                out.setdefault(effect, {})[name] = round(float(self.value(effect, name)), 6)
        return out

    @classmethod
    def from_settings(cls, settings: dict) -> "Chain":
        """Build a chain from a :meth:`settings` dict; a missing or out-of-range key is a ``ModelError``."""
        check_format(settings, FORMAT, "chain settings")
        try:
            chain = cls(config_from_dict(settings["config"]))
        except (KeyError, TypeError) as exc:
            raise ModelError(f"chain settings: bad 'config': {exc}") from None
        with torch.no_grad():
            for effect, name, rng in chain._slots():
                value = _lookup(settings, effect, name)
                chain.logits[f"{effect}__{name}"].fill_(rng.logit(value, key=f"{effect}.{name}"))
        return chain

    def save(self, path: Path, **meta) -> None:
        """Plain tensors and dicts only, so ``torch.load(weights_only=True)`` reads it.

        ``meta``: more plain data (``group``, ``frontend``, ``trained_on``: what
        ``stemdae process`` needs, :mod:`stemdae.chain.predictor`).
        """
        torch.save({**meta, "format": FORMAT, "config": asdict(self.config), "state_dict": self.state_dict(),
                    "settings": self.settings()}, path)

    @classmethod
    def load(cls, path: Path) -> "Chain":
        blob = load_blob(path, FORMAT)
        chain = cls(config_from_dict(blob["config"]))
        chain.load_state_dict(blob["state_dict"])
        return chain


def eq_coefs(v: dict, config: ChainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear filters of settings ``v`` (values scalar or ``(batch,)``) in signal order: ``(b, a)``,
    each ``(..., n_sections, 3)``; the first two sections are the high-pass (the saturation comes after them)."""
    sr = config.sr
    sections = [filters.highpass1_coefs(v["highpass"]["freq_hz"], sr)] * 2
    if config.lowpass:
        sections += [filters.lowpass1_coefs(v["lowpass"]["freq_hz"], sr)] * 2
    ls, hs = v["low_shelf"], v["high_shelf"]
    sections.append(filters.shelf_coefs(ls["freq_hz"], ls["gain_db"], ls["q"], sr, high=False))
    for i in range(config.n_bells):
        bell = v[f"bell{i}"]
        sections.append(filters.peak_coefs(bell["freq_hz"], bell["gain_db"], bell["q"], sr))
    sections.append(filters.shelf_coefs(hs["freq_hz"], hs["gain_db"], hs["q"], sr, high=True))
    return torch.stack([b for b, _ in sections], -2), torch.stack([a for _, a in sections], -2)


def process(x: torch.Tensor, v: dict, config: ChainConfig, noise: torch.Tensor | None) -> torch.Tensor:
    """Run ``x`` ``(batch, n)`` through the chain with settings ``v`` (each value scalar or ``(batch,)``)."""
    if x.ndim != 2:
        raise ModelError(f"chain input: expected shape (batch, samples), found {tuple(x.shape)}")
    sr = config.sr
    col = lambda t: t.reshape(-1, 1)  # noqa: E731  scalar or (batch,) -> broadcasts over samples
    n_fft = filters.fft_len(x.shape[-1], int(config.eq_tail_s * sr))
    b, a = eq_coefs(v, config)
    if config.saturation:  # high-pass -> tanh -> the other filters
        y = filters.apply_response(x, filters.cascade_response(b[..., :2, :], a[..., :2, :], n_fft), n_fft)
        drive = 10 ** (col(v["saturation"]["drive_db"]) / 20)
        y = torch.tanh(drive * y) / drive
        y = filters.apply_response(y, filters.cascade_response(b[..., 2:, :], a[..., 2:, :], n_fft), n_fft)
    else:
        y = filters.apply_response(x, filters.cascade_response(b, a, n_fft), n_fft)
    comp = v["compressor"]
    y = compress(y, threshold_db=comp["threshold_db"], ratio=comp["ratio"], attack_ms=comp["attack_ms"],
                 release_ms=comp["release_ms"], sr=sr)
    y = y * 10 ** (col(comp["makeup_db"]) / 20)
    if config.reverb:
        onset = v["reverb"].get("buildup_ms")
        ir = impulse_response(noise, col(v["reverb"]["rt60_s"]), sr, None if onset is None else col(onset))
        y = add_reverb(y, ir, col(v["reverb"]["wet_db"]))
    return y


def load_blob(path: Path, fmt: str) -> dict:
    """``torch.load(weights_only=True)`` of a model file of format ``fmt``; one-line ``ModelError`` otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelError(f"{path}: cannot load a chain model: {str(exc).strip().splitlines()[0]}") from None
    return check_format(blob, fmt, path)


def _lookup(settings: dict, effect: str, name: str) -> float:
    try:
        return settings[effect][name]
    except (KeyError, TypeError):
        raise ModelError(f"chain settings: missing {effect}.{name}") from None


__all__ = ["Chain", "ChainConfig", "Range"]
