"""How a stage trains: the configured Lightning Trainer, fed a resumable stream, with mid-stage checkpoints.

One `StageFitter` per pipeline. `start` names the stage being built and where its checkpoints live; a fit
then continues from the newest good checkpoint there, and `resumed_from` says from which batch it did.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from pit import interrupt
from pit.checkpointing import StageCheckpoint, StepStream, checkpoint_interval, latest_checkpoint
from pit.errors import ConfigError
from pit.interrupt import Interrupted

log = logging.getLogger(__name__)


class StageProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled with the stage instead of `Epoch 0/-2` (stages count steps, not epochs)."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def _get_train_description(self, current_epoch: int) -> str:
        return self.stage

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The stage's own metrics by their short names (`reward_mean`, not `rlhf_policy/reward_mean`), without the
        logger's run version (`v_num`)."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {name.removeprefix(f"{self.stage}/"): value for name, value in items.items()}


class StageFitter:
    """Fits Lightning modules for the stage being built, resuming it where a killed run left it."""

    def __init__(self, trainer: DictConfig, checkpoint: DictConfig, seed: int, logger: Logger | bool,
                 root_dir: Path):
        self.trainer_cfg, self.checkpoint_cfg, self.seed, self.logger = trainer, checkpoint, seed, logger
        self.root_dir = root_dir
        self.stage, self.checkpoints = "", root_dir
        self.resumed_from: int | None = None
        self.curves: Path | None = None

    def start(self, stage: str, checkpoints: Path) -> None:
        """The stage about to be built and its checkpoint directory."""
        self.stage, self.checkpoints, self.resumed_from, self.curves = stage, checkpoints, None, None

    def record_curves(self, directory: Path) -> None:
        """Fits of this stage also log their history as CSV into `directory` (part of the stage's artifact)."""
        self.curves = directory

    @cached_property
    def device(self) -> torch.device:
        """The device the configured trainer trains on: Lightning resolves it, once per pipeline."""
        trainer = instantiate(self.trainer_cfg)(logger=False, enable_checkpointing=False, enable_model_summary=False,
                                                default_root_dir=str(self.root_dir))
        return trainer.strategy.root_device

    def trainer(self, max_steps: int, val_every: int | None, **overrides: Any) -> L.Trainer:
        """The configured Lightning Trainer (cpu/gpu/ddp/...) with this stage's step budget and our logger."""
        validation = ({"val_check_interval": min(val_every, max_steps), "check_val_every_n_epoch": None}
                      if val_every else {"limit_val_batches": 0})
        loggers = [self.logger] if self.logger else []
        if self.curves is not None:
            loggers.append(CSVLogger(self.curves, name="", version=""))
        return instantiate(self.trainer_cfg)(
            max_steps=max_steps, max_epochs=-1, num_sanity_val_steps=0, logger=loggers or False,
            enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(self.root_dir),
            **validation, **overrides)

    def fit(self, module: L.LightningModule, hp: DictConfig, train_items: list[Any], val_items: list[Any],
            collate: Callable[[list[Any]], dict[str, Any]], metrics: dict[str, float]) -> L.Trainer:
        """Train for `hp.max_steps` with validation every `hp.val_every` steps and at the end; record val metrics."""
        train = DataLoader(train_items, batch_size=hp.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                           generator=torch.Generator().manual_seed(self.seed))
        val = DataLoader(val_items, batch_size=hp.batch_size, collate_fn=collate)
        trainer = self.fit_stream(module, train, val, hp.max_steps, metrics, max_steps=hp.max_steps,
                                  val_every=hp.val_every)
        if hp.max_steps % hp.val_every or not module.val_metrics:   # (a run resumed at its end validates here)
            trainer.validate(module, val, verbose=False)
        metrics.update(module.val_metrics)
        return trainer

    def fit_stream(self, module: L.LightningModule, train: DataLoader, val: DataLoader | None, batches: int,
                   metrics: dict[str, float], max_steps: int, val_every: int | None, **overrides: Any) -> L.Trainer:
        """Fit on `batches` batches of `train` with mid-stage checkpoints, continuing from the newest good one."""
        try:
            stream = StepStream(train, batches)
        except ConfigError as err:
            raise ConfigError(f"stage {self.stage}: {err}") from None
        resume = latest_checkpoint(self.checkpoints)
        if resume is not None:
            log.info("stage %s: resuming from %s (batch %d of %d)", self.stage, resume.path, resume.batches, batches)
            self.resumed_from = stream.skip = resume.batches
        every = checkpoint_interval(self.checkpoint_cfg.every, self.checkpoint_cfg.max_lost, batches)
        callback = StageCheckpoint(self.checkpoints, every, self.checkpoint_cfg.keep_last)
        callbacks: list[Callback] = [callback]
        if self.trainer_cfg.get("enable_progress_bar", True) and _RICH_AVAILABLE:
            callbacks.append(StageProgressBar(self.stage))
        trainer = self.trainer(max_steps, val_every, callbacks=callbacks, **overrides)
        start = time.perf_counter()
        with interrupt.fitting():
            try:
                trainer.fit(module, stream, val, ckpt_path=resume.path if resume else None, weights_only=True)
            except SIGTERMException:   # Lightning's own (SystemExit, code 0): SIGTERM before our handler took over
                raise Interrupted(signal.SIGTERM, callback.batches) from None
            interrupt.stop_if_pending(callback.batches)   # a signal after the last batch: its checkpoint is written
        metrics["train_seconds"] = round(time.perf_counter() - start, 2)
        metrics["threads"] = torch.get_num_threads()   # the bits depend on it (Lightning's CPU DDP sets it per rank)
        metrics["checkpoint_seconds"] = round(callback.seconds, 2)
        return trainer
