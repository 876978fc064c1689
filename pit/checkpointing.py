"""Mid-stage checkpoints: everything a training stage needs to continue exactly where it was killed.

A checkpoint is Lightning's (weights, optimizer, scheduler, loop counters, module extras such as PPO's
KL controller) plus ours: the number of batches consumed and the RNG states (torch, CUDA, numpy, python).
The data position is restored by replaying the shuffled loader up to that batch (`StepStream`), so the
shuffling generator ends in the same state as in an uninterrupted run. Files are written to a temp name
and renamed; a JSON sidecar with size and SHA-256 marks a checkpoint complete, and one that does not
match its sidecar is named in the log and skipped, never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from pit import interrupt
from pit.artifacts import file_problem, file_sha256, write_json_atomic, writer_id
from pit.errors import ConfigError

log = logging.getLogger(__name__)


class StepStream:
    """`total` batches of a shuffling DataLoader, epoch after epoch, as one stream that can start at batch `skip`.

    Skipped batches are drawn and discarded (not recomputed from a formula), so the batches after them and the
    loader's generator state are those of a run that never stopped. Lightning sees one epoch of `total` batches.
    Under DDP, rank r of w takes batches r, r + w, ... of a `total · w` stream (what a distributed sampler gives:
    each step sees w different batches), and `skip` counts this rank's batches.
    """

    def __init__(self, loader: DataLoader, total: int, skip: int = 0):
        if len(loader) == 0:
            raise ConfigError(f"{len(loader.dataset)} training examples do not fill one batch of {loader.batch_size}: "
                              f"lower the stage's batch_size or use more data")
        self.loader, self.total, self.skip = loader, total, skip

    def __len__(self) -> int:
        return self.total   # Lightning counts the skipped batches as done (its loop state comes from the checkpoint)

    def __iter__(self) -> Iterator[Any]:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        produced = 0
        while True:
            for batch in self.loader:
                if produced >= self.skip * world and produced % world == rank:
                    yield batch
                produced += 1
                if produced == self.total * world:
                    return


def rng_state() -> dict[str, Any]:
    """The global random states a training step draws from, in a form `torch.load(weights_only=True)` accepts."""
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"name": name, "keys": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "keys": list(keys), "gauss": gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["keys"]), p["gauss"]))


OTHER_THREADS = "resumes with another torch thread count"   # the warning's words, for tests to look for


def warn_if_threads_differ(directory: Path, saved: int | None, trainer: L.Trainer) -> None:
    """Say so when a CPU stage resumes with another torch thread count than its checkpoint was written with: the
    count sets how sums are split, so the resumed weights then differ in their last bits from an uninterrupted run.
    (A mismatch between the jobs and the reference gives the takeover test's old failure: experiments/flake.)"""
    now = torch.get_num_threads()
    if trainer.strategy.root_device.type != "cpu" or saved in (None, now) or not trainer.is_global_zero:
        return
    setting = "OMP_NUM_THREADS" if trainer.world_size > 1 else "threads"   # Lightning's CPU DDP sets it per rank
    log.warning("the checkpoint in %s %s (%d, written with %d): the stage's weights will differ in their last bits "
                "from a run that was never stopped; %s=%d resumes it bit-identically on the same CPU", directory,
                OTHER_THREADS, now, saved, setting, saved)


@dataclass(frozen=True)
class Resume:
    """A verified checkpoint to continue from: its path and the number of training batches it had consumed."""

    path: Path
    batches: int


def checkpoint_interval(every: int, max_lost: float, batches: int) -> int:
    """Training batches between checkpoints of a fit of `batches`: at most `every` and at most `max_lost` of the fit
    (at least 1); `every=0` checkpoints only at the end (0)."""
    return min(every, max(1, int(max_lost * batches))) if every else 0


def latest_checkpoint(directory: Path) -> Resume | None:
    """The newest checkpoint in `directory` whose file matches its sidecar; damaged ones are named and removed."""
    sidecars = sorted(directory.glob("step-*.json"), reverse=True) if directory.is_dir() else []
    for sidecar in sidecars:
        path = sidecar.with_suffix(".ckpt")
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
        if meta is None:
            problem = "has an unreadable sidecar"
        elif (found := file_problem(path, meta["size"], meta["sha256"])) is None:
            return Resume(path, meta["batches"])
        else:
            problem = f"is {found}"
        log.warning("checkpoint %s %s: not loading it, trying an older one", path, problem)
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    return None


class StageCheckpoint(L.Callback):
    """Saves a checkpoint every `every` training batches, at the end of training and at the end of the batch in which
    the job got SIGTERM or SIGINT (then stops it: `pit.interrupt`), keeping the last `keep_last`.

    On resume (`trainer.fit(ckpt_path=...)`), it restores the RNG states right before the first resumed batch.
    """

    def __init__(self, directory: Path, every: int, keep_last: int):
        self.directory, self.every, self.keep_last = directory, every, keep_last
        self.batches = 0
        self.seconds = 0.0   # time spent writing checkpoints (the cost of being resumable)
        self._saved_at = -1
        self._rng_to_restore: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupt.reinstall()
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches += 1
        # a signal to any rank stops them all at this batch (a collective: every rank saves, none is left waiting)
        stop = trainer.strategy.reduce_boolean_decision(interrupt.pending(), all=False)
        if (self.every and self.batches % self.every == 0) or stop:
            self.save(trainer)
        if stop:
            interrupt.stop(self.batches)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["pit"] = {"batches": self.batches, "rng": rng_state(), "threads": torch.get_num_threads()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.batches = self._saved_at = checkpoint["pit"]["batches"]
        self._rng_to_restore = checkpoint["pit"]["rng"]
        warn_if_threads_differ(self.directory, checkpoint["pit"].get("threads"), trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Write `step-<batches>.ckpt` atomically with its sidecar, then drop all but the newest `keep_last`."""
        if self.batches == self._saved_at:
            return
        self._saved_at, start = self.batches, time.perf_counter()
        path = self.directory / f"step-{self.batches:08d}.ckpt"
        tmp = path.with_name(f".{path.name}.{writer_id()}.tmp")
        if trainer.is_global_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)   # the full state; every rank calls it, rank zero writes
        if not trainer.is_global_zero:
            return
        os.replace(tmp, path)
        write_json_atomic(path.with_suffix(".json"), {"batches": self.batches, "size": path.stat().st_size,
                                                      "sha256": file_sha256(path)})
        for old in sorted(self.directory.glob("step-*.json"), reverse=True)[self.keep_last:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".ckpt").unlink(missing_ok=True)
        self.seconds += time.perf_counter() - start
