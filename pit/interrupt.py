"""Stopping on SIGTERM (Slurm preemption, `timeout`, `kill`) and SIGINT (Ctrl-C) without losing work or lying.

Outside a training fit a signal stops the job at once. Inside one it is held until the end of the current batch,
where the stage writes a checkpoint and then stops (`StageCheckpoint`), so a rerun resumes at that batch. Either
way `Interrupted` unwinds the job: the pipeline records where it stopped in results.json, and the process exits
128 + the signal number (143 for SIGTERM, 130 for SIGINT), never 0. A second signal during a fit stops at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A repeat this soon is the same stop (Ctrl-C reaches a torchrun worker from the terminal and again from its agent);
# a later one means "now"
REPEAT_GRACE_SECONDS = 5.0


class Interrupted(BaseException):
    """A job stopped by a signal (a BaseException, like KeyboardInterrupt: no `except Exception` may swallow it).
    `batch`: the training batch of the fit it stopped, whose checkpoint a rerun resumes from; None outside a fit."""

    def __init__(self, signum: int, batch: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.batch = signum, batch

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process killed by this signal: 128 + its number."""
        return 128 + self.signum


class _State:
    fitting = False              # inside `fitting()`: a signal waits for the end of the batch
    pending: int | None = None   # a signal received during a fit, not acted on yet
    since = 0.0                  # when it came (time.monotonic)


def _handle(signum: int, frame: FrameType | None) -> None:
    if _State.fitting and _State.pending is None:
        _State.pending, _State.since = signum, time.monotonic()
        return
    if _State.fitting and time.monotonic() - _State.since < REPEAT_GRACE_SECONDS:
        return
    _State.pending = None   # a second signal during a fit: no checkpoint, stop now
    raise Interrupted(signum)


def install() -> None:
    """Route SIGTERM and SIGINT to pit's handler (Python only lets the main thread set handlers: elsewhere, e.g. a
    launcher's worker thread, the process keeps the handlers it has)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handle)


def reinstall() -> None:
    """Take SIGTERM back from Lightning inside a fit: its handler turns SIGTERM into `SystemExit` with code 0 at the
    end of the batch (or in the middle of a validation), which would make a preempted job look finished."""
    if signal.getsignal(signal.SIGINT) is _handle:   # only where `install` ran (a job, not a library call)
        install()


@contextmanager
def fitting() -> Iterator[None]:
    """The span of one training fit: a signal received in it is held until `stop_if_pending`."""
    _State.fitting, _State.pending = True, None
    try:
        yield
    finally:
        _State.fitting = False


def pending() -> bool:
    """Whether a signal came during the current fit and still waits for its checkpoint."""
    return _State.pending is not None


def stop(batch: int) -> None:
    """Stop the job at `batch`, whose checkpoint is written, for the signal this process got (under DDP it may have
    come to another rank only: every rank stops at the same batch)."""
    signum, _State.pending = _State.pending or signal.SIGTERM, None
    raise Interrupted(signum, batch)


def stop_if_pending(batch: int) -> None:
    """Where a fit's checkpoint at `batch` is written (the end of the fit): stop the job if a signal came during it."""
    if pending():
        stop(batch)
