"""Experiment tracking (the `logger=` config group): W&B, CSV or nothing, behind one small interface.

One tracker per Hydra job. Stages log metrics namespaced by stage (`sft_policy/val_loss`); the final
numbers go to the summary. The config holds no secrets: keys name environment variables (`*_env`), and a
run whose config holds a secret-looking value is refused before anything is logged (`find_secrets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

SECRET_WORDS = {"apikey", "token", "secret", "password", "passwd", "credential", "credentials"}


def is_secret_key(key: str) -> bool:
    """`api_key`, `hf_token`, `password`... (whole words of the key), but not `max_tokens` or `api_key_env`."""
    words = [w for w in re.split(r"[_\-.]", key.lower()) if w]
    if words and words[-1] == "env":
        return False
    return any(w in SECRET_WORDS for w in words) or "apikey" in "".join(words)


def find_secrets(value: Any, path: str = "") -> list[str]:
    """Dotted paths of secret-looking keys holding a value (`judge.api_key`); `*_env` keys name a variable, allowed."""
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            name = f"{path}{key}"
            if is_secret_key(str(key)) and item not in (None, ""):
                found.append(name)
            else:
                found.extend(find_secrets(item, f"{name}."))
        return found
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in find_secrets(item, f"{path}{i}.")]
    return []


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"a": {"b": 1}, "c": [2]}` -> `{"a/b": 1.0, "c/0": 2.0}`, keeping only numbers (what a summary can hold)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, list):
            value = dict(enumerate(value))
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class Tracker:
    """`logger=none`: Lightning logs nothing, the tracker records nothing (results.json is still written)."""

    @property
    def lightning_logger(self) -> Logger | bool:
        return False

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's resolved config (already scrubbed of secrets)."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record a set of namespaced metrics outside a Lightning fit."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Record the run's final numbers."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Record example generations."""

    def finish(self) -> None:
        """Flush and close."""


class CSVTracker(Tracker):
    """`logger=csv`: Lightning's CSVLogger under the job's output dir; config as hparams.yaml, summary as metrics."""

    def __init__(self, save_dir: str, name: str = "csv"):
        self._logger = CSVLogger(save_dir=save_dir, name=name, version="")

    @property
    def lightning_logger(self) -> Logger:
        return self._logger

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._logger.log_hyperparams(dict(config))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._logger.log_metrics(dict(metrics))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._logger.log_metrics(flatten(summary, "summary/"))

    def finish(self) -> None:
        self._logger.save()


def wandb_mode(mode: str) -> str:
    """`auto`: honour WANDB_MODE if set, else online with an API key and offline without one."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbTracker(Tracker):
    """`logger=wandb`: one W&B run per Hydra job (group = experiment name); offline without an API key."""

    def __init__(self, project: str, save_dir: str, group: str | None = None, name: str | None = None,
                 entity: str | None = None, tags: list[str] | None = None, mode: str = "auto"):
        import wandb

        Path(save_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, entity=entity, group=group, name=name, tags=list(tags or []),
                              dir=save_dir, mode=wandb_mode(mode), reinit="finish_previous")
        self._logger = WandbLogger(experiment=self.run)
        self._wandb = wandb

    @property
    def lightning_logger(self) -> Logger:
        return self._logger

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(flatten(summary))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def finish(self) -> None:
        self.run.finish()
