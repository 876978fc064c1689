"""Fixtures only; what test files share otherwise lives in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import HH_SLICE


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
