"""Fixtures, and each pytest-xdist worker's share of the CPUs; what test files share otherwise lives in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path


def _pin_xdist_worker() -> None:
    """Under `pytest -n N`, worker i runs on every N-th of the CPUs from i (its affinity mask, inherited by the jobs
    it starts), so each of its jobs takes that share of threads (pit/threads.py) and workers never oversubscribe the
    cores. Done before torch is imported, so that torch's own default is the share too."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker.startswith("gw") and count > 1 and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= count:
            os.sched_setaffinity(0, cpus[int(worker[2:]) % count::count])


_pin_xdist_worker()

import pytest  # noqa: E402  (after the pin: helpers imports torch)
from helpers import CHECKPOINTED, HH_SLICE, command_line, compose_config, model_hashes  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network: hub and W&B stay offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def hh_slice() -> Path:
    """The HH-RLHF harmless-base test slice in the repository; a missing file fails the test, never skips it."""
    if not HH_SLICE.is_file():
        pytest.fail(f"the HH-RLHF slice is missing at {HH_SLICE}")
    return HH_SLICE


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               PIT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("WANDB_API_KEY", None)
    return env


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    """`cli(args)`: `python -m pit.run ARGS` in this process (helpers.command_line), its cache under tmp_path;
    returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("PIT_CACHE_DIR", str(tmp_path / "cache"))
    return lambda args: command_line(args, capfd)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this job may use (its affinity mask, Slurm's share), not per core of the host."""
    from pit.threads import job_cpus

    return job_cpus()


@pytest.fixture(scope="session")
def checkpointed_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, str]]:
    """One uninterrupted run of CHECKPOINTED (its results and weight hashes) that the kill-and-resume tests of this
    worker compare with."""
    from pit.run import run

    tmp = tmp_path_factory.mktemp("uninterrupted")
    results = run(compose_config(CHECKPOINTED, tmp))
    assert not list((tmp / "cache").rglob(".ckpt-*/*"))                # checkpoints go once a stage completes
    return results, model_hashes(tmp / "cache")
