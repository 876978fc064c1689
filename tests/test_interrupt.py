"""Honest exits (#31): SIGTERM and SIGINT stop a job with a checkpoint, a line saying where, a record in results.json
and exit 128 + signal; a multirun names the points that did not finish. Real signals, in subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FAST, ROOT
from omegaconf import OmegaConf

from pit import interrupt
from pit.checkpointing import checkpoint_interval
from pit.interrupt import Interrupted
from pit.sweep import BASIC_SWEEPER, planned_points, unfinished

# sft_policy alone, long enough to stop in the middle; no scheduled checkpoint before the end
SFT = [*FAST, "objective.stages=[sft_policy]", "train.sft_policy.max_steps=30", "checkpoint.every=1000",
       "checkpoint.max_lost=1.0",
       "cache.code_version=interrupt-tests"]


@pytest.fixture
def handlers() -> Iterator[None]:
    """pit's handlers in this process for one test, the previous ones back afterwards."""
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    interrupt.install()
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def test_a_signal_outside_a_fit_stops_at_once(handlers: None) -> None:
    with pytest.raises(Interrupted) as stop:
        signal.raise_signal(signal.SIGTERM)
    assert (stop.value.signal_name, stop.value.batch, stop.value.exit_code) == ("SIGTERM", None, 143)


def test_a_signal_in_a_fit_waits_for_the_end_of_the_batch(handlers: None) -> None:
    with interrupt.fitting():
        signal.raise_signal(signal.SIGINT)   # held: the batch goes on
        assert interrupt.pending()
        with pytest.raises(Interrupted) as stop:
            interrupt.stop_if_pending(12)
    assert (stop.value.signal_name, stop.value.batch, stop.value.exit_code) == ("SIGINT", 12, 130)
    assert not interrupt.pending()


def test_a_second_signal_in_a_fit_stops_at_once(handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeat within the grace (torchrun relaying the terminal's Ctrl-C) is the same stop; a later one is "now"."""
    with interrupt.fitting():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)   # within the grace: still held
        assert interrupt.pending()
        monkeypatch.setattr(interrupt, "REPEAT_GRACE_SECONDS", 0.0)
        with pytest.raises(Interrupted) as stop:
            signal.raise_signal(signal.SIGINT)
    assert (stop.value.signal_name, stop.value.batch) == ("SIGINT", None)
    interrupt.stop_if_pending(1)   # nothing held once the fit is over


def test_a_rank_without_the_signal_stops_with_the_others(handlers: None) -> None:
    """Under DDP every rank stops at the batch where any rank had a signal (`StageCheckpoint`'s all-reduce)."""
    with interrupt.fitting(), pytest.raises(Interrupted) as stop:
        interrupt.stop(5)
    assert (stop.value.signal_name, stop.value.batch) == ("SIGTERM", 5)


@pytest.mark.parametrize("every, max_lost, batches, expected", [
    (50, 0.1, 40, 4), (50, 0.1, 300, 30), (50, 0.1, 1000, 50), (50, 0.1, 5, 1), (0, 0.1, 40, 0), (1, 0.1, 40, 1)])
def test_checkpoints_lose_at_most_a_tenth_of_a_stage(every: int, max_lost: float, batches: int,
                                                     expected: int) -> None:
    assert checkpoint_interval(every, max_lost, batches) == expected


def test_the_basic_sweepers_points_are_planned_from_params_and_command_line() -> None:
    config = OmegaConf.create({"hydra": {"sweeper": {"_target_": BASIC_SWEEPER,
                                                     "params": {"gap": "full,single"}},
                                         "overrides": {"task": ["seed=0,1", "evaluate.samples=9"]}}})
    points = planned_points(config)
    assert len(points) == 4
    assert ["gap=single", "seed=1", "evaluate.samples=9"] in points


def test_unfinished_points_are_named_with_why(tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"points": [
        {"overrides": ["seed=0"], "status": "finished"},
        {"overrides": ["seed=1"], "status": "running"},
        {"overrides": ["seed=2"], "status": "failed", "error": "boom"},
        {"overrides": ["seed=3"], "status": "not started"}]}))
    assert unfinished(path) == ["#1 seed=1: interrupted", "#2 seed=2: failed (boom)", "#3 seed=3: not started"]


def pit_run(args: list[str], env: dict[str, str], signal_at: str | None = None,
            **kwargs: object) -> subprocess.Popen:
    entry = ["tests/signal_at.py", signal_at] if signal_at else ["-m", "pit.run"]
    return subprocess.Popen([sys.executable, *entry, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_sigterm_in_a_fit_checkpoints_says_where_and_the_rerun_resumes(tmp_path: Path,
                                                                      subprocess_env: dict[str, str]) -> None:
    """SIGTERM (what Slurm preemption sends) at batch 7 of sft_policy: exit 143, one line, results.json, a
    checkpoint at batch 7; the rerun resumes there and exits 0."""
    args = [*SFT, f"paths.cache_dir={tmp_path / 'cache'}"]
    job = pit_run([*args, f"hydra.run.dir={tmp_path / 'a'}"], {**subprocess_env, "SIGNAL": "TERM"},
                  signal_at="batch:sft_policy:7")
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 143, output[-3000:]
    line = "interrupted by SIGTERM in stage sft_policy at batch 7; rerun the same command: resumes there"
    assert output.count(line) == 1 and "Traceback" not in output
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["interrupted"] == {"signal": "SIGTERM", "stage": "sft_policy", "batch": 7}
    assert results["stages"]["sft_policy"]["status"] == "interrupted"
    assert [p.name for p in (tmp_path / "cache" / "sft_policy").glob(".ckpt-*/step-*.ckpt")] == ["step-00000007.ckpt"]

    rerun = pit_run([*args, f"hydra.run.dir={tmp_path / 'b'}"], subprocess_env)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output[-3000:]
    stage = json.loads((tmp_path / "b" / "results.json").read_text())["stages"]["sft_policy"]
    assert (stage["status"], stage["resumed_from_batch"]) == ("resumed", 7)


@pytest.mark.slow
def test_ctrl_c_from_outside_exits_130_with_a_line_and_no_traceback(tmp_path: Path,
                                                                   subprocess_env: dict[str, str]) -> None:
    """SIGINT sent by another process once the job is in sft_policy (in its fit or just before it)."""
    job = pit_run([*SFT, "train.sft_policy.max_steps=100000", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'a'}"], subprocess_env)
    assert job.stdout is not None
    seen = []
    for line in job.stdout:   # the job's log, as it comes
        seen.append(line)
        if "stage sft_policy: running" in line:
            time.sleep(2.0)   # either inside the fit or still building it: both must end the same way
            job.send_signal(signal.SIGINT)
            break
    rest, _ = job.communicate(timeout=300)
    output = "".join(seen) + rest
    assert job.returncode == 130, output[-3000:]
    assert "interrupted by SIGINT in stage sft_policy" in output and "Traceback" not in output
    assert json.loads((tmp_path / "a" / "results.json").read_text())["interrupted"]["stage"] == "sft_policy"


@pytest.mark.slow
def test_an_interrupted_multirun_names_the_points_that_did_not_finish(tmp_path: Path,
                                                                      subprocess_env: dict[str, str]) -> None:
    """Point #0 of two gets SIGTERM: the sweep stops with 143 and says #0 was interrupted and #1 never started."""
    job = pit_run(["-m", *SFT, "seed=0,1", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], {**subprocess_env, "SIGNAL": "TERM"},
                  signal_at="batch:sft_policy:3")
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 143, output[-3000:]
    assert "multirun" in output and "0 of 2 points finished" in output
    assert "#0 seed=0: interrupted" in output and "#1 seed=1: not started" in output
    points = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"]
    assert [p["status"] for p in points] == ["interrupted", "not started"]
