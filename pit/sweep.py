"""What became of each point of a multirun (`<sweep dir>/sweep.json`); the points that did not finish, said at the end.

A Hydra callback (`hydra.callbacks.sweep_report` in conf/config.yaml) lists the points when the sweep starts (the
basic sweeper's, from its params and the command line; other sweepers' as they start) and records each one's end.
Points run in launcher workers write the same file under a lock. A sweep stopped by a signal, or by a point's error,
ends with one line per point that did not finish, and `pit.run` exits non-zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pit.artifacts import write_json_atomic

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
STATUS_FILE = "sweep.json"


def planned_points(config: DictConfig) -> list[list[str]]:
    """Every point's overrides, as the basic sweeper will launch them; [] for other sweepers (Optuna, Ax choose
    their points as they go)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return []
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    arguments = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    overrides = OverridesParser.create().parse_overrides([*params, *arguments])
    return [list(point) for batch in BasicSweeper.split_arguments(overrides, None) for point in batch]


class _Ledger:
    """`sweep.json` of the multirun this process started: {"points": [{"overrides", "status", "error"?}, ...]}."""

    path: Path | None = None

    @staticmethod
    def update(path: Path, num: int, **fields: Any) -> None:
        with FileLock(f"{path}.lock"):
            state = json.loads(path.read_text()) if path.is_file() else {"points": []}
            points = state["points"]
            points.extend({"overrides": [], "status": "not started"} for _ in range(num + 1 - len(points)))
            points[num].update(fields)
            write_json_atomic(path, state)


class SweepReport(Callback):
    """Records every multirun point's outcome in `<sweep dir>/sweep.json` (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / STATUS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"points": [{"overrides": p, "status": "not started"} for p in planned_points(config)]})
        _Ledger.path = path

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if (path := _sweep_file(config)) is not None:
            _Ledger.update(path, config.hydra.job.num, overrides=list(config.hydra.overrides.task),
                           status="running")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if (path := _sweep_file(config)) is None:
            return
        if job_return.status == JobStatus.COMPLETED:
            _Ledger.update(path, config.hydra.job.num, status="finished")
        else:   # an exception Hydra caught (the job's value is that exception)
            _Ledger.update(path, config.hydra.job.num, status="failed", error=str(job_return._return_value))


def record_exit(status: str, error: str) -> None:
    """A job that leaves by `sys.exit` (pit's one-line errors, a signal), which Hydra's `on_job_end` never sees."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and (path := _sweep_file(HydraConfig.instance().cfg)) is not None:
        _Ledger.update(path, HydraConfig.get().job.num, status=status, error=error)


def _sweep_file(config: DictConfig) -> Path | None:
    """The job's `sweep.json` under multirun, else None."""
    from hydra.types import RunMode

    if config.hydra.mode != RunMode.MULTIRUN:
        return None
    return Path(config.hydra.sweep.dir) / STATUS_FILE


def unfinished(path: Path) -> list[str]:
    """One line per point of `path` (a sweep.json) that did not finish, by the overrides that tell it from the other
    points: `#2 gap=single: failed (...)`. A point still `running` when the sweep ended was stopped
    in the middle (the process died)."""
    points = json.loads(path.read_text())["points"]
    common = set.intersection(*(set(p["overrides"]) for p in points)) if len(points) > 1 else set()
    shown = {"running": "interrupted"}
    return [f"#{i} {' '.join(o for o in p['overrides'] if o not in common) or '(no overrides)'}: "
            f"{shown.get(p['status'], p['status'])}" + (f" ({p['error']})" if p.get("error") else "")
            for i, p in enumerate(points) if p["status"] != "finished"]


def forget() -> None:
    """Start a command line with no multirun of this process known (several may run in one process, e.g. tests)."""
    _Ledger.path = None


def report_unfinished() -> bool:
    """At the end of a multirun this process started: name the points that did not finish; True if there are any."""
    if _Ledger.path is None or not _Ledger.path.is_file():
        return False
    lines = unfinished(_Ledger.path)
    total = len(json.loads(_Ledger.path.read_text())["points"])
    if lines:
        sys.stderr.write(f"multirun {_Ledger.path.parent}: {total - len(lines)} of {total} points finished; "
                         f"not finished:\n" + "".join(f"  {line}\n" for line in lines)
                         + "rerun the same command: finished stages are reused, interrupted ones resume\n")
    return bool(lines)
