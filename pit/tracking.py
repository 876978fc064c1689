"""Experiment tracking (the `logger=` config group): W&B, CSV or nothing, behind one small interface.

One tracker per Hydra job. Stages log metrics namespaced by stage (`sft_policy/val_loss`); the final
numbers go to the summary. The config is logged with secrets removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)


def scrub_secrets(value: Any) -> Any:
    """A copy of a nested config with every value under a secret-looking key replaced by `<redacted>`."""
    if isinstance(value, Mapping):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else scrub_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_secrets(v) for v in value]
    return value


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"a": {"b": 1}}` -> `{"a/b": 1.0}`, keeping only numbers (what a summary or a CSV column can hold)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
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
