"""`python tests/signal_at.py KIND:STAGE:N [pit.run overrides]`: run `pit.run` and send it a signal at one point.

KIND is `checkpoint` (right after checkpoint N of STAGE is complete), `checkpoint-write` (after checkpoint N's
file is renamed into place, before its sidecar is written), `artifact` (STAGE's files are written, its
completion marker is not) or `batch` (at the end of training batch N of STAGE, before any checkpoint of it).
STAGE is the last part of the stage name (`2_policy` for `pit_rl/2_policy`). The signal is SIGKILL, or the one
named by `SIGNAL=TERM|INT`: a real signal, which the process handles as it would one from outside.
With `SIGKILL_WHEN_FILE=<path>` set, the job waits at that point until the file exists (another job is then
known to be waiting for its lock), and dies then.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pit import artifacts, checkpointing


def die() -> None:
    if when := os.environ.get("SIGKILL_WHEN_FILE"):
        deadline = time.monotonic() + 600   # only a guard for a test that never touches the file
        while not Path(when).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.Signals[f"SIG{os.environ.get('SIGNAL', 'KILL')}"])


def main() -> None:
    kind, stage, n = sys.argv.pop(1).split(":")
    if kind == "batch":
        real_end = checkpointing.StageCheckpoint.on_train_batch_end

        def on_train_batch_end(self: checkpointing.StageCheckpoint, trainer: Any, *args: Any) -> None:
            if self.directory.parent.name == stage and self.batches + 1 == int(n):
                die()   # a handled signal returns here: the batch ends as it would have
            real_end(self, trainer, *args)

        checkpointing.StageCheckpoint.on_train_batch_end = on_train_batch_end
    elif kind == "checkpoint":
        real_save = checkpointing.StageCheckpoint.save

        def save(self: checkpointing.StageCheckpoint, trainer: Any) -> None:
            real_save(self, trainer)
            if self.directory.parent.name == stage and self.batches == int(n):
                die()

        checkpointing.StageCheckpoint.save = save
    else:
        module = checkpointing if kind == "checkpoint-write" else artifacts
        real_write = module.write_json_atomic
        target = f"step-{int(n):08d}.json" if kind == "checkpoint-write" else artifacts.MARKER

        def write(path: Path, data: Any) -> None:
            if path.name == target and path.parent.parent.name == stage:
                die()
            real_write(path, data)

        module.write_json_atomic = write
    runpy.run_module("pit.run", run_name="__main__", alter_sys=True)   # exactly `python -m pit.run`


if __name__ == "__main__":
    main()
