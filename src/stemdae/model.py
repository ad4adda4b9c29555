"""The stacked autoencoder: a plain ``nn.Module`` (no Lightning, no I/O).

``n_bins -> hidden[0] -> ... -> hidden[-1] -> n_bins``; each hidden layer is
``Linear + ReLU + Dropout``; the output layer is ``Linear`` followed by an
output non-linearity chosen for the scaling of the targets:

- ``linear`` and ``log`` targets are non-negative magnitudes (or ``log1p`` of
  them), so the output is ``ReLU`` like every other layer of the paper's net;
- ``log_standardized`` targets are zero-mean per bin and ``log_ratio`` targets
  are log gains (negative values are common in both), so the output is the
  identity.

Greedy layer-wise training (Bengio et al. 2007, the paper's [34]) trains the
network in phases ``k = 1..L`` (``L = len(hidden)``): phase ``k`` trains hidden
layer ``k`` plus an output head ``hidden[k-1] -> n_bins`` on top of layers
``1..k-1``, which are frozen (they were trained by earlier phases; freezing is
what makes it *greedy*, and keeps phase ``k``'s cost to one layer's gradients).
The head of the last phase is the network's own output layer, so fine-tuning
(phase ``0`` here, ``"finetune"`` in logs) starts from a complete pretrained
stack; the heads of phases ``1..L-1`` are temporary and are not part of this
module (the Lightning wrapper owns them, so they live in checkpoints only).

Shapes: frames ``(batch, n_bins)`` in, ``(batch, n_bins)`` out.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["StackedAutoencoder", "n_parameters", "output_activation_for"]

FINETUNE = 0
OutputActivation = Literal["relu", "identity"]


def output_activation_for(scaling: str) -> OutputActivation:
    """The output non-linearity suited to a target scaling (see the module docstring)."""
    return "identity" if scaling in ("log_standardized", "log_ratio") else "relu"


class StackedAutoencoder(nn.Module):
    """Feed-forward stacked autoencoder ``n_bins -> hidden... -> n_bins``.

    Parameters
    ----------
    n_bins
        Bins per STFT frame (``n_fft // 2 + 1``), input and output width.
    hidden
        Widths of the hidden layers (the paper: ``[1024, 1024, 1024]``).
    dropout
        Dropout probability after every hidden ReLU (the paper: 0.2).
    output_activation
        ``"relu"`` or ``"identity"``; see :func:`output_activation_for`.
    """

    def __init__(self, n_bins: int, hidden: list[int], dropout: float = 0.2,
                 output_activation: OutputActivation = "relu") -> None:
        super().__init__()
        if n_bins < 1 or not hidden or any(w < 1 for w in hidden):
            raise ValueError(f"StackedAutoencoder: expected n_bins >= 1 and positive widths, got {n_bins}, {hidden}")
        if output_activation not in ("relu", "identity"):
            raise ValueError(f"output_activation must be 'relu' or 'identity', got {output_activation!r}")
        self.n_bins, self.hidden, self.dropout = int(n_bins), [int(w) for w in hidden], float(dropout)
        self.output_activation = output_activation
        widths = [self.n_bins, *self.hidden]
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(self.dropout)) for a, b in zip(widths, widths[1:])
        )
        self.output = nn.Linear(widths[-1], self.n_bins)
        self.out_act: nn.Module = nn.ReLU() if output_activation == "relu" else nn.Identity()

    @property
    def n_layers(self) -> int:
        return len(self.hidden)

    def config(self) -> dict:
        """What :meth:`from_config` needs (saved beside the state dict)."""
        return {"n_bins": self.n_bins, "hidden": list(self.hidden), "dropout": self.dropout,
                "output_activation": self.output_activation}

    @classmethod
    def from_config(cls, config: dict) -> StackedAutoencoder:
        return cls(int(config["n_bins"]), list(config["hidden"]), float(config["dropout"]),
                   config.get("output_activation", "relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_bins) -> (batch, n_bins)`` through the whole stack."""
        for layer in self.encoder:
            x = layer(x)
        return self.out_act(self.output(x))

    # ------------------------------------------------------------ greedy phases

    def make_head(self, phase: int) -> nn.Linear:
        """A fresh temporary output head for phase ``1 <= phase < n_layers``."""
        self._check_phase(phase)
        if phase == self.n_layers:
            raise ValueError("the last greedy phase uses the model's own output layer, not a temporary head")
        return nn.Linear(self.hidden[phase - 1], self.n_bins)

    def forward_phase(self, x: torch.Tensor, phase: int, head: nn.Module | None = None) -> torch.Tensor:
        """Output of greedy phase ``phase``: layers ``1..phase`` then its head.

        ``phase == n_layers`` (or ``FINETUNE``) uses the model's output layer;
        earlier phases need their temporary ``head``.
        """
        if phase == FINETUNE:
            return self(x)
        self._check_phase(phase)
        for layer in self.encoder[:phase]:
            x = layer(x)
        if phase == self.n_layers:
            return self.out_act(self.output(x))
        if head is None:
            raise ValueError(f"phase {phase} needs its temporary head")
        return self.out_act(head(x))

    def phase_parameters(self, phase: int) -> list[nn.Parameter]:
        """Parameters this module trains in ``phase`` (``FINETUNE``: all of them).

        Phase ``k`` trains hidden layer ``k`` only (plus, for the last phase,
        the output layer; temporary heads belong to the caller).
        """
        if phase == FINETUNE:
            return list(self.parameters())
        self._check_phase(phase)
        params = list(self.encoder[phase - 1].parameters())
        if phase == self.n_layers:
            params += list(self.output.parameters())
        return params

    def set_phase(self, phase: int) -> None:
        """Set ``requires_grad`` so that only :meth:`phase_parameters` train."""
        trainable = {id(p) for p in self.phase_parameters(phase)}
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)

    def _check_phase(self, phase: int) -> None:
        if not 1 <= phase <= self.n_layers:
            raise ValueError(f"greedy phase must be in 1..{self.n_layers} (or 0 = fine-tune), got {phase}")


def n_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (the paper's net: 4,199,425)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
