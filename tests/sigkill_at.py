"""`python tests/sigkill_at.py KIND:STAGE:N [pit.run overrides]`: run `pit.run` and SIGKILL it at one point.

KIND is `checkpoint` (right after checkpoint N of STAGE is complete), `checkpoint-write` (after checkpoint N's
file is renamed into place, before its sidecar is written) or `artifact` (STAGE's files are written, its
completion marker is not). STAGE is the last part of the stage name (`2_policy` for `pit_rl/2_policy`).
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
        deadline = time.monotonic() + 120
        while not Path(when).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    kind, stage, n = sys.argv.pop(1).split(":")
    if kind == "checkpoint":
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
