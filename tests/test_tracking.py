"""W&B must never stop training: unreachable at start, failing mid-run; and the run ledger that continues a run."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest
import wandb
from helpers import CONF, FAST, compose_config, history_keys

from pit.run import run
from pit.tracking import RunLedger, WandbTracker, run_identity


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
    deadline = time.monotonic() + 20   # after a failed start W&B's service may still be writing the run file
    while "stage/metric" not in logged(offline) and time.monotonic() < deadline:
        time.sleep(0.5)
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


def test_sweep_points_are_named_by_overrides_grouped_per_sweep_and_tagged() -> None:
    """Under multirun: name = the point's overrides, group = <experiment>/<sweep dir>, tags = the keys it sets."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from pit.tracking import sweep_labels

    assert sweep_labels("default", None, ["x"]) == ("default", None, ["x"])   # no Hydra job: the config's labels
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["seed=1", "objective.gap_loss=full"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = "multirun/gap_loss"
        cfg.hydra.job.override_dirname = "objective.gap_loss=full,seed=1"
    HydraConfig.instance().set_config(cfg)
    try:
        assert sweep_labels("default", None, ["paper"]) == (
            "default/gap_loss", "objective.gap_loss=full,seed=1", ["objective.gap_loss", "paper", "seed"])
        assert sweep_labels("default", "mine", [])[1] == "mine"   # a name the user set wins
    finally:
        HydraConfig.instance().cfg = None
