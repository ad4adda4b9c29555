"""The DAE as a Lightning module: one training step for every greedy phase, epoch records, early stopping.

:func:`plan_phases` lists the phases (``pretrain1 .. pretrainL`` then ``finetune``);
:class:`DAEModule` trains the phase set by :meth:`DAEModule.set_phase` (the layers
below frozen, a temporary head on top; see ``model.py``), keeps one record per epoch
(``history``, also in every checkpoint), re-seeds dropout per batch from
``(seed, phase, epoch, batch, rank)`` so a resumed run equals an uninterrupted one,
and keeps the best fine-tuning epoch's weights for early stopping. The trainer, the
checkpoints and the stage are :mod:`stemdae.train`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stemdae.config import ModelParams, TrainingParams
from stemdae.model import FINETUNE, StackedAutoencoder, output_activation_for
from stemdae.scaling import Scaler

log = logging.getLogger("stemdae.train")  # the stage's logger: its epoch lines belong to the train stage

__all__ = ["DAEModule", "Phase", "build_module", "plan_phases"]


def _quiet_lightning() -> None:
    """Lightning resets its logger to INFO at import and may add its own handler.

    Unless stemdae logs at DEBUG, keep its banners, tips and checkpoint notes
    (one per epoch) out of stage logs, and print each record once.
    """
    lg = logging.getLogger("lightning.pytorch")
    if logging.getLogger("stemdae").getEffectiveLevel() > logging.DEBUG:
        lg.setLevel(logging.WARNING)
    if logging.getLogger().handlers:
        lg.handlers.clear()
        lg.propagate = True


_quiet_lightning()


@dataclass(frozen=True)
class Phase:
    """One ``Trainer.fit``: ``index`` 1..L for greedy layer ``index``, 0 for fine-tuning."""

    name: str
    index: int
    epochs: int
    offset: int  # epochs of all earlier phases (for the global epoch column)


def plan_phases(model: ModelParams, training: TrainingParams, *, max_epochs_override: int | None = None) -> list[Phase]:
    """The phases to run (``max_epochs_override`` replaces ``finetune_epochs``)."""
    phases, offset = [], 0
    if training.pretrain and training.pretrain_epochs > 0:
        for k in range(1, len(model.hidden) + 1):
            phases.append(Phase(f"pretrain{k}", k, training.pretrain_epochs, offset))
            offset += training.pretrain_epochs
    phases.append(Phase("finetune", FINETUNE, max_epochs_override or training.finetune_epochs, offset))
    return phases


def _batch_seed(seed: int, phase: int, epoch: int, batch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, phase, epoch, batch, rank]).generate_state(1)[0])


class DAEModule(pl.LightningModule):
    """Lightning wrapper: one shared step for all phases, history kept in checkpoints."""

    def __init__(self, net: StackedAutoencoder, scaler: Scaler, training: TrainingParams) -> None:
        super().__init__()
        self.net, self.scaler, self.tp = net, scaler, training
        # Temporary heads of phases 1..L-1 (the last phase uses net.output).
        self.heads = nn.ModuleList(net.make_head(k) for k in range(1, net.n_layers))
        self.phase = Phase("finetune", FINETUNE, 1, 0)
        self.history: list[dict[str, Any]] = []
        self.sink: Callable[[dict[str, Any]], None] | None = None
        self.sent_upto = 0
        self._closed = -1
        # Best fine-tuning epoch so far: {"epoch", "val_loss", "state"} (early stopping).
        self.best: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        self._t_val: float | None = None
        self._train = torch.zeros(2, dtype=torch.float64)
        self._val = torch.zeros(4, dtype=torch.float64)

    def set_phase(self, phase: Phase) -> None:
        """Freeze everything but what ``phase`` trains (see ``StackedAutoencoder.set_phase``)."""
        self.phase = phase
        self.net.set_phase(phase.index)
        for k, head in enumerate(self.heads, start=1):
            head.requires_grad_(k == phase.index)
        self._closed = -1

    def _head(self) -> nn.Module | None:
        k = self.phase.index
        return self.heads[k - 1] if 1 <= k <= len(self.heads) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled network output of the current phase for linear magnitudes ``x``."""
        return self.net.forward_phase(self.scaler.scale_input(x), self.phase.index, self._head())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.l1_loss(self(x).float(), self.scaler.scale_target(y, x))
        self._train += torch.tensor([loss.item() * len(x), len(x)], dtype=torch.float64)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x).float()
        loss = F.l1_loss(out, self.scaler.scale_target(y, x))
        mag = self.scaler.inverse_target(out, x)
        mag_mae = (mag - y).abs().mean()
        log_mae = (torch.log1p(mag) - torch.log1p(y.clamp_min(0))).abs().mean()
        n = len(x)
        self._val += torch.tensor([loss.item() * n, mag_mae.item() * n, log_mae.item() * n, n], dtype=torch.float64)
        self.log("val_loss", loss, batch_size=n, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.tp.lr, weight_decay=self.tp.weight_decay)

    # ------------------------------------------------------------ epoch records

    def on_train_start(self) -> None:
        self._flush()
        self._maybe_stop()  # a run resumed after the stopping epoch must not train on

    def _track_best(self, rec: dict[str, Any]) -> None:
        if self.phase.index != FINETUNE or not math.isfinite(rec["val_loss"]):
            return
        if self.best is None or rec["val_loss"] < self.best["val_loss"]:
            state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
            self.best = {"epoch": int(rec["epoch"]), "val_loss": float(rec["val_loss"]), "state": state}
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        patience = self.tp.early_stopping_patience
        if (patience and self.best is not None and self.phase.index == FINETUNE and self.history
                and self.history[-1]["epoch"] - self.best["epoch"] >= patience):
            self.trainer.should_stop = True

    def restore_best(self) -> int | None:
        """With early stopping, load the best fine-tuning epoch's weights; returns that epoch (global)."""
        if not self.tp.early_stopping_patience or self.best is None:
            return None
        self.net.load_state_dict(self.best["state"])
        return self.best["epoch"]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global torch RNG, which Lightning and the
        # DataLoader also consume (differently on a resumed run): re-seed it
        # per batch from (seed, phase, epoch, batch, rank).
        torch.manual_seed(_batch_seed(self.tp.seed, self.phase.index, self.current_epoch, batch_idx, self.global_rank))

    def on_train_epoch_start(self) -> None:
        self._train.zero_()
        self._t_val = None
        self._t0 = time.perf_counter()

    def on_validation_epoch_start(self) -> None:
        self._val.zero_()
        if self._t_val is None:  # throughput counts training steps only
            self._t_val = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self._close_epoch()

    def on_train_epoch_end(self) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        if self._closed == self.current_epoch:
            return
        self._closed = self.current_epoch
        train = self.trainer.strategy.reduce(self._train.to(self.device), reduce_op="sum").cpu()
        elapsed = (self._t_val or time.perf_counter()) - self._t0
        v = self._val
        nan = float("nan")
        rec = {
            "epoch": self.phase.offset + self.current_epoch + 1, "phase": self.phase.name,
            "phase_epoch": self.current_epoch + 1,
            "train_loss": float(train[0] / train[1]) if train[1] else nan,
            "val_loss": float(v[0] / v[3]) if v[3] else nan,
            "val_mag_mae": float(v[1] / v[3]) if v[3] else nan,
            "val_log_mae": float(v[2] / v[3]) if v[3] else nan,
            "frames_per_s": float(train[1]) / elapsed if elapsed > 0 else nan,
        }
        self.history.append(rec)
        self._track_best(rec)
        if self.trainer.is_global_zero:
            if not self.trainer.progress_bar_callback:
                log.info("%s epoch %d/%d (global %d): train_loss %.5f val_loss %.5f, %.0f frames/s",
                         rec["phase"], rec["phase_epoch"], self.phase.epochs, rec["epoch"], rec["train_loss"],
                         rec["val_loss"], rec["frames_per_s"])
            self._flush()

    def _flush(self) -> None:
        if self.sink is None or not self.trainer.is_global_zero:
            return
        for rec in self.history:
            if rec["epoch"] > self.sent_upto:
                self.sink(rec)
                self.sent_upto = rec["epoch"]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stemdae"] = {"history": list(self.history), "phase": self.phase.name, "best": self.best}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("stemdae", {}).get("history", []))
        self.best = checkpoint.get("stemdae", {}).get("best")


def build_module(n_bins: int, model: ModelParams, training: TrainingParams, scaler: Scaler) -> DAEModule:
    """The untrained net (seeded from ``training.seed``) and its Lightning wrapper."""
    torch.manual_seed(training.seed)
    net = StackedAutoencoder(n_bins, list(model.hidden), model.dropout, output_activation_for(model.scaling))
    return DAEModule(net, scaler, training)
