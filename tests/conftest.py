"""Shared fixtures: composing the real config tree with fast overrides, and the real-data slice shipped in data/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import pit.config  # noqa: F401  (registers the schemas)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
HH_SLICE = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"   # shipped in the repo (data/hh-rlhf/README.md)
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A pipeline that finishes in seconds: few pairs, a very small model, a handful of steps.
FAST_TRAIN = [
    "model.config.n_layer=1", "model.config.n_embd=32", "model.config.n_head=2",
    "model.config.n_positions=128", "train.sft_policy.max_steps=4", "train.sft_policy.batch_size=8",
    "train.sft_policy.val_every=2", "train.sft_policy.eval_samples=8", "train.sft_pit.max_steps=3",
    "train.sft_pit.batch_size=8", "train.sft_pit.val_every=3", "train.sft_pit.eval_samples=8",
    "train.reward.max_steps=3", "train.reward.batch_size=8", "train.reward.val_every=3",
    "train.gap_reward.max_steps=3", "train.gap_reward.batch_size=8", "train.gap_reward.val_every=3",
    "train.judge.max_steps=2", "train.judge.batch_size=8", "train.judge.val_every=2",
    "train.rlhf_policy.iterations=2", "train.rlhf_policy.batch_size=8", "train.rlhf_policy.eval_samples=8",
    "train.rlhf_policy.ppo.ppo_epochs=1", "train.rlhf_policy.ppo.minibatches=2",
    "train.pit_rl.iterations=2", "train.pit_rl.batch_size=8", "train.pit_rl.eval_samples=8",
    "train.pit_rl.ppo.ppo_epochs=1", "train.pit_rl.ppo.minibatches=2",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "logger=none",
]
# The pipeline tests also exercise the Self-Refine baseline (the default, baseline=none, runs without it).
FAST = ["dataset.n_pairs=300", "baseline=self_refine", *FAST_TRAIN]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network: hub and W&B stay offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def stage_status(results: dict) -> dict[str, str]:
    """Each stage's status (ran, reused, resumed) in a results dict."""
    return {name: record["status"] for name, record in results["stages"].items()}


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The real config tree composed as `python -m pit.run` would, with paths under `tmp_path`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


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
