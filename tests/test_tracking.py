"""W&B must never stop training: unreachable at start, failing mid-run; and the run ledger that continues a run."""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime
from pathlib import Path

import pytest
import wandb
from helpers import CONF, FAST, compose_config, history_keys

from pit.run import run
from pit.tracking import (
    CSVTracker,
    RunLedger,
    Tracker,
    WandbTracker,
    override_labels,
    run_identity,
    sweep_labels,
    swept_keys,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged(run_dir: Path) -> set[str]:
    (run_file,) = run_dir.glob("run-*.wandb")
    return history_keys(run_file)


@pytest.mark.slow
def test_unreachable_server_at_start_gives_an_offline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.delenv("WANDB_MODE")
    with caplog.at_level(logging.WARNING):
        tracker = WandbTracker(project="p", save_dir=str(tmp_path), mode="auto", init_timeout=2, run_id="feed1234")
    tracker.log_metrics({"stage/metric": 1.5})
    tracker.finish()
    assert "W&B could not start" in caplog.text and "k" * 40 not in caplog.text
    (offline,) = (tmp_path / "wandb").glob("offline-run-*-feed1234")
    wandb.teardown()   # returns once W&B's service has written the run file (finish may return before)
    assert "stage/metric" in logged(offline)


@pytest.mark.slow
def test_wandb_failing_mid_run_does_not_stop_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """From the 5th `log` call on, W&B raises: the pipeline finishes; later numbers land in fallback.jsonl."""
    real_log, calls = wandb.sdk.wandb_run.Run.log, {"n": 0}

    def failing_log(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 5:
            raise ConnectionError("W&B backend went away")
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", failing_log)
    cfg = compose_config([o for o in FAST if o != "logger=none"] + ["objective=sft_only"], tmp_path)
    with caplog.at_level(logging.WARNING):
        results = run(cfg)
    assert results["stages"]["evaluate"]["status"] == "ran"
    assert caplog.text.count("training continues") == 1
    out = tmp_path / "out"
    fallback = [json.loads(line) for line in (out / "fallback.jsonl").read_text().splitlines()]
    assert any("sft_pit/val_loss" in row for row in fallback)                       # a Lightning metric call
    assert any(row["call"] == "log" and "evaluate/delta_pit_vs_policy" in row for row in fallback)
    (offline,) = (out / "wandb").glob("offline-run-*")
    wandb.teardown()   # returns once W&B's service has written the run file (finish may return before: seen 1 in 3)
    assert "data/train" in logged(offline)                                   # logged before the failure


def test_ledger_continues_an_unfinished_run_only(tmp_path: Path) -> None:
    first = RunLedger(tmp_path, "abc")
    beside = RunLedger(tmp_path, "abc")          # the same config while the first runs: a run of its own
    assert not beside.resumed and beside.run_id != first.run_id and not beside.owned
    first.release()                              # the first never finished (killed: the OS drops its lock)
    again = RunLedger(tmp_path, "abc")
    assert again.resumed and again.run_id == first.run_id
    again.finish()
    again.release()
    fresh = RunLedger(tmp_path, "abc")
    assert not fresh.resumed and fresh.run_id != first.run_id
    assert RunLedger(tmp_path, "other").run_id != fresh.run_id


def test_run_identity_ignores_paths_only() -> None:
    config = {"seed": 0, "paths": {"output_dir": "/out/1"}, "logger": {"save_dir": "/out/1"}}
    moved = {"seed": 0, "paths": {"output_dir": "/out/2"}, "logger": {"save_dir": "/out/2"}}
    assert run_identity(config, "/out/1") == run_identity(moved, "/out/2")
    assert run_identity({**config, "seed": 1}, "/out/1") != run_identity(config, "/out/1")


def test_swept_keys_are_those_given_several_values() -> None:
    arguments = ["+sweep=gap_loss", "gap=full,single", "seed=range(0,3)", "evaluate.iterations=5",
                 "judge=choice(oracle,llm)", "~trainer.devices"]
    assert swept_keys(arguments) == {"gap", "seed", "judge"}


def test_override_labels_name_by_last_key_part_and_tag_by_key() -> None:
    overrides = ["+sweep=gap_loss", "gap=full", "evaluate.sampling.temperature=0.7", "seed=1"]
    keep = {"gap", "evaluate.sampling.temperature"}.__contains__
    assert override_labels(overrides, keep) == (
        "gap=full temperature=0.7", ["gap=full", "evaluate.sampling.temperature=0.7"])
    assert override_labels(["+experiment=hh_rlhf", "seed=1", "paths.cache_dir=/c"],
                           lambda k: k not in ("experiment", "paths.cache_dir"), "hh_rlhf") == ("hh_rlhf seed=1",
                                                                                                 ["seed=1"])
    assert override_labels([], keep) == (None, [])


def _hydra_job(overrides: list[str], mode: object, sweep_dir: Path) -> None:
    """Compose the config as a Hydra job with these command-line overrides and make it the current HydraConfig."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.sweep.dir = str(sweep_dir)
    HydraConfig.instance().set_config(cfg)


def test_sweep_points_are_named_by_swept_values_grouped_per_launch(tmp_path: Path) -> None:
    """Under multirun: name = the swept values only, tags = swept key=value, group = <date>_<time>_<sweep>."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    assert sweep_labels("default", None, ["x"]) == ("default", None, ["x"])   # no Hydra job: the config's labels
    sweep = tmp_path / "gap_loss"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(  # what Hydra's sweeper writes: the launch's overrides and params
        "hydra:\n  sweeper:\n    params:\n      gap: full,single\n"
        "  overrides:\n    task:\n    - +sweep=gap_loss\n    - seed=1\n    - evaluate.sampling.temperature=0,0.7\n")
    started = datetime.fromtimestamp((sweep / "multirun.yaml").stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
    _hydra_job(["+sweep=gap_loss", "seed=1", "evaluate.sampling.temperature=0.7", "gap=full"],
               RunMode.MULTIRUN, sweep)
    try:
        assert sweep_labels("default", None, ["paper"]) == (
            f"{started}_gap_loss", "temperature=0.7 gap=full",
            ["evaluate.sampling.temperature=0.7", "gap=full", "paper"])
        assert sweep_labels("default", "mine", [])[1] == "mine"   # a name the user set wins
        (sweep / "multirun.yaml").unlink()                      # another sweeper: every override counts as swept
        assert sweep_labels(None, None, [])[0] == "gap_loss"
    finally:
        HydraConfig.instance().cfg = None


def test_single_run_is_named_by_experiment_and_overrides(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _hydra_job(["+experiment=synthetic", "seed=1", "paths.cache_dir=/c"], RunMode.RUN, tmp_path)
    try:
        assert sweep_labels("default", None, []) == ("default", "synthetic seed=1", ["seed=1"])
    finally:
        HydraConfig.instance().cfg = None


class FakeRun:
    def __init__(self) -> None:
        self.exit_codes: list[int | None] = []

    def finish(self, exit_code: int | None = None) -> None:
        self.exit_codes.append(exit_code)


@pytest.mark.parametrize(("failed", "exit_code"), [(True, 1), (False, None)])
def test_finish_marks_a_failed_job_failed_in_wandb(tmp_path: Path, failed: bool, exit_code: int | None) -> None:
    tracker = WandbTracker.__new__(WandbTracker)   # no wandb.init: only the run object matters here
    tracker.run, tracker._failed, tracker.fallback = FakeRun(), False, tmp_path / "fallback.jsonl"
    tracker.finish(failed=failed)
    assert tracker.run.exit_codes == [exit_code] and not tracker.fallback.exists()


def test_every_tracker_accepts_failed(tmp_path: Path) -> None:
    Tracker().finish(failed=True)
    CSVTracker(str(tmp_path)).finish(failed=True)
