"""Differentiable EQ: RBJ-cookbook biquads evaluated on the rFFT grid.

The coefficients are the ones JUCE (and so pedalboard) uses for
``PeakFilter``, ``LowShelfFilter``, ``HighShelfFilter`` (RBJ cookbook, gain as
``A = 10**(gain_db/40)``), ``HighpassFilter`` and ``LowpassFilter`` (first-order,
bilinear with prewarping). A filter is applied by multiplying the spectrum of the
zero-padded signal by ``H(e^jw)``: with enough padding the IIR tail that wraps
around is negligible, so the result equals the recursive filter started from
rest (what pedalboard computes) to float precision, and it costs one FFT pair
for the whole cascade instead of a sample loop.
"""

from __future__ import annotations

import functools
import math

import torch


def _cos_sin(freq_hz: torch.Tensor, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    w0 = 2 * math.pi * freq_hz / sr
    return torch.cos(w0), torch.sin(w0)


def peak_coefs(freq_hz, gain_db, q, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RBJ peaking bell. Returns ``(b, a)``, each shape ``(..., 3)``, unnormalised."""
    amp = 10 ** (gain_db / 40)
    cos_w, sin_w = _cos_sin(freq_hz, sr)
    alpha = sin_w / (2 * q)
    b = torch.stack([1 + alpha * amp, -2 * cos_w, 1 - alpha * amp], -1)
    a = torch.stack([1 + alpha / amp, -2 * cos_w, 1 - alpha / amp], -1)
    return b, a


def shelf_coefs(freq_hz, gain_db, q, sr: int, *, high: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """RBJ low (``high=False``) or high shelf; ``q`` as in pedalboard's shelves."""
    amp = 10 ** (gain_db / 40)
    cos_w, sin_w = _cos_sin(freq_hz, sr)
    beta = sin_w * torch.sqrt(amp) / q
    sign = 1.0 if high else -1.0  # the two shelves differ by w -> pi - w
    ap1, am1 = amp + 1, amp - 1
    b = torch.stack(
        [
            amp * (ap1 + sign * am1 * cos_w + beta),
            -sign * 2 * amp * (am1 + sign * ap1 * cos_w),
            amp * (ap1 + sign * am1 * cos_w - beta),
        ],
        -1,
    )
    a = torch.stack(
        [
            ap1 - sign * am1 * cos_w + beta,
            sign * 2 * (am1 - sign * ap1 * cos_w),
            ap1 - sign * am1 * cos_w - beta,
        ],
        -1,
    )
    return b, a


def highpass1_coefs(freq_hz, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order high-pass of JUCE/pedalboard ``HighpassFilter``: ``b=[1,-1]``, ``a=[n+1,n-1]``."""
    n = torch.tan(math.pi * freq_hz / sr)
    b = torch.stack([torch.ones_like(n), -torch.ones_like(n), torch.zeros_like(n)], -1)
    a = torch.stack([n + 1, n - 1, torch.zeros_like(n)], -1)
    return b, a


#: A low-pass's cutoff is at most this fraction of the rate (its range reaches 19.5 kHz, which a
#: 22.05 kHz chain cannot have); the renderer (chain/render.py) applies the same limit.
LOWPASS_MAX_FRACTION = 0.45


def lowpass1_coefs(freq_hz, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order low-pass of JUCE/pedalboard ``LowpassFilter``: ``b=[n,n]``, ``a=[n+1,n-1]``.

    The cutoff is limited to ``LOWPASS_MAX_FRACTION * sr``.
    """
    n = torch.tan(math.pi * torch.clamp(torch.as_tensor(freq_hz), max=LOWPASS_MAX_FRACTION * sr) / sr)
    b = torch.stack([n, n, torch.zeros_like(n)], -1)
    a = torch.stack([n + 1, n - 1, torch.zeros_like(n)], -1)
    return b, a


def freq_response(b: torch.Tensor, a: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex ``H(e^jw)`` of ``(..., 3)`` biquads on the ``n_fft // 2 + 1`` rFFT bins.

    Evaluated directly as ``(b0 + b1 z^-1 + b2 z^-2) / (a0 + a1 z^-1 + a2 z^-2)``, exact on the
    grid, in the precision of ``b`` (float32 -> complex64): cheaper, forward and backward, than
    the rFFT of the zero-padded taps.
    """
    z1, z2 = _grid(n_fft, b.dtype)
    b, a = b.unsqueeze(-1), a.unsqueeze(-1)
    return (b[..., 0, :] + b[..., 1, :] * z1 + b[..., 2, :] * z2) / (a[..., 0, :] + a[..., 1, :] * z1 + a[..., 2, :] * z2)


def cascade_response(b: torch.Tensor, a: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Response of the cascade of ``(..., n_sections, 3)`` sections: ``(..., n_fft // 2 + 1)``.

    A running product, not ``prod()``: its backward costs a multiply per section, where
    ``prod``'s goes through cumulative products.
    """
    h = freq_response(b[..., 0, :], a[..., 0, :], n_fft)
    for k in range(1, b.shape[-2]):
        h = h * freq_response(b[..., k, :], a[..., k, :], n_fft)
    return h


@functools.lru_cache(maxsize=8)
def _grid(n_fft: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (2 * math.pi / n_fft)
    z1 = torch.exp(-1j * w).to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return z1, z1 * z1


def response_at(b: torch.Tensor, a: torch.Tensor, freqs_hz, sr: int) -> torch.Tensor:
    """Complex response at arbitrary frequencies (for plots and tests), shape ``(..., len(freqs))``."""
    w = 2 * math.pi * torch.as_tensor(freqs_hz, dtype=torch.float64) / sr
    z = torch.exp(-1j * w)  # z^-1
    powers = torch.stack([torch.ones_like(z), z, z * z], 0)  # (3, F)
    return (b.to(torch.complex128) @ powers) / (a.to(torch.complex128) @ powers)


def fft_len(n_samples: int, tail: int) -> int:
    """A power of two at least ``n_samples + tail`` (room for the filter tail)."""
    return 1 << max(1, math.ceil(math.log2(n_samples + tail)))


def apply_response(x: torch.Tensor, response: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Filter ``x`` ``(..., n)`` by a complex response on the ``n_fft`` rFFT grid; same length out."""
    n = x.shape[-1]
    spec = torch.fft.rfft(x, n=n_fft) * response.to(torch.complex64 if x.dtype == torch.float32 else torch.complex128)
    return torch.fft.irfft(spec, n=n_fft)[..., :n]
