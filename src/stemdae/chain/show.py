"""What a fitted chain does, for an engineer: settings as text, curves as a figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from stemdae.chain.chain import Chain
from stemdae.chain.dynamics import static_gain_db

LABELS = {"highpass": "high-pass (12 dB/oct)", "low_shelf": "low shelf", "high_shelf": "high shelf",
          "compressor": "compressor", "saturation": "saturation (tanh)", "reverb": "reverb"}


def settings_text(settings: dict, *, title: str = "") -> str:
    """One line per effect in signal order, values rounded as an engineer would set them."""
    lines = [title] if title else []
    for effect, values in settings.items():
        if effect in ("format", "config"):
            continue
        label = LABELS.get(effect, effect.replace("bell", "bell "))
        # names carry their units (freq_hz, gain_db, attack_ms, ...)
        parts = [f"{name} {value:.0f}" if name == "freq_hz" and value >= 100 else f"{name} {value:.3g}" for name, value in values.items()]
        lines.append(f"  {label:24s} " + ", ".join(parts))
    return "\n".join(lines)


def curves(chain: Chain, *, n_points: int = 400) -> dict[str, np.ndarray]:
    """EQ magnitude (dB) on a log grid 20 Hz-20 kHz and the compressor's static curve (dB in -> dB out)."""
    freqs = np.geomspace(20.0, min(20000.0, chain.config.sr / 2 * 0.999), n_points)
    level_in = np.linspace(-60.0, 0.0, 121)
    with torch.no_grad():
        eq_db = chain.eq_response_db(freqs).numpy()
        gain = static_gain_db(torch.from_numpy(level_in), chain.value("compressor", "threshold_db"), chain.value("compressor", "ratio"))
        level_out = level_in + gain.numpy() + float(chain.value("compressor", "makeup_db"))
    return {"freq_hz": freqs, "eq_db": eq_db, "level_in_db": level_in, "level_out_db": level_out}


def figure(chain: Chain, path: Path, *, title: str = "") -> Path:
    """Write the EQ response and compressor static curve as one PNG; returns ``path``."""
    c = curves(chain)
    fig = Figure(figsize=(10, 4))
    ax_eq, ax_comp = fig.subplots(1, 2)
    ax_eq.semilogx(c["freq_hz"], c["eq_db"])
    ax_eq.set(xlabel="frequency (Hz)", ylabel="gain (dB)", title="EQ magnitude response", xlim=(20, c["freq_hz"][-1]))
    ax_eq.grid(True, which="both", alpha=0.3)
    ax_comp.plot(c["level_in_db"], c["level_out_db"], label="compressor + make-up")
    ax_comp.plot(c["level_in_db"], c["level_in_db"], "--", color="grey", label="unity")
    ax_comp.set(xlabel="envelope in (dBFS)", ylabel="out (dBFS)", title="compressor static curve")
    return _save(fig, ax_comp, path, title)


def spread(settings: list[dict]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """``effect -> name -> (min, median, max)`` over per-segment settings (conditional mode)."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for effect, values in settings[0].items():
        if effect in ("format", "config"):
            continue
        for name in values:
            v = np.array([s[effect][name] for s in settings], dtype=float)
            out.setdefault(effect, {})[name] = (float(v.min()), float(np.median(v)), float(v.max()))
    return out


def spread_text(settings: list[dict], *, title: str = "") -> str:
    """One line per effect: each setting as ``median [min, max]`` over the segments."""
    lines = [title] if title else []
    for effect, values in spread(settings).items():
        label = LABELS.get(effect, effect.replace("bell", "bell "))
        parts = [f"{name} {mid:.3g} [{lo:.3g}, {hi:.3g}]" for name, (lo, mid, hi) in values.items()]
        lines.append(f"  {label:24s} " + ", ".join(parts))
    return "\n".join(lines)


def spread_figure(preset: Chain, settings: list[dict], path: Path, *, title: str = "") -> Path:
    """EQ response of every segment's settings (thin) over the preset's (thick), and threshold vs ratio."""
    fig = Figure(figsize=(10, 4))
    ax_eq, ax_comp = fig.subplots(1, 2)
    for s in settings:
        c = curves(Chain.from_settings(s))
        ax_eq.semilogx(c["freq_hz"], c["eq_db"], color="tab:blue", alpha=0.25, lw=0.8)
    c = curves(preset)
    ax_eq.semilogx(c["freq_hz"], c["eq_db"], color="black", lw=2, label="preset")
    ax_eq.set(xlabel="frequency (Hz)", ylabel="gain (dB)", xlim=(20, c["freq_hz"][-1]),
              title=f"EQ per segment ({len(settings)} segments)")
    ax_eq.grid(True, which="both", alpha=0.3)
    ax_eq.legend()
    ax_comp.scatter([s["compressor"]["threshold_db"] for s in settings], [s["compressor"]["ratio"] for s in settings],
                    s=12, alpha=0.6, label="segments")
    pc = preset.settings()["compressor"]
    ax_comp.scatter([pc["threshold_db"]], [pc["ratio"]], color="black", marker="x", s=60, label="preset")
    ax_comp.set(xlabel="threshold (dB)", ylabel="ratio", title="compressor per segment")
    return _save(fig, ax_comp, path, title)


def _save(fig: Figure, ax_comp, path: Path, title: str) -> Path:
    """The compressor panel's legend and grid, the title, then the PNG (through writeguard: one line on a full disk)."""
    from stemdae import plots

    ax_comp.legend()
    ax_comp.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return plots.save(fig, path, dpi=100)
