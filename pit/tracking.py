"""Experiment tracking (the `logger=` config group): W&B, CSV or nothing, behind one small interface.

One tracker per Hydra job. Stages log metrics namespaced by stage (`sft_policy/val_loss`); the final
numbers go to the summary. The config holds no secrets: keys name environment variables (`*_env`), and a
run whose config holds a secret-looking value is refused before anything is logged (`find_secrets`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from pit.artifacts import write_json_atomic

log = logging.getLogger(__name__)

SECRET_WORDS = {"apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
OVERRIDE_HIDDEN = ("paths.", "logger.")   # placement and tracker settings: never part of a run's W&B label


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


def run_identity(config: Mapping[str, Any], output_dir: str) -> str:
    """What makes two jobs "the same run": the resolved config without its paths (a rerun gets a new output dir)."""
    payload = json.dumps({k: v for k, v in config.items() if k != "paths"}, sort_keys=True, default=str)
    return hashlib.sha256(payload.replace(output_dir, "<output_dir>").encode()).hexdigest()[:16]


class RunLedger:
    """The tracker run id of each run identity until that run finishes, so a rerun after a kill continues it."""

    def __init__(self, directory: Path, identity: str, write: bool = True):
        self.path = directory / f"{identity}.json"
        self.lock = FileLock(f"{self.path}.lock")   # held while the run lives; the OS drops it when a job is killed
        self.owned = False
        if write:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                self.lock.acquire(timeout=0)
                self.owned = True
            except Timeout:   # the same config runs right now in another job: this one is a run of its own
                log.info("run %s is live in another job: this job logs to a new tracker run", identity)
        previous = json.loads(self.path.read_text()) if self.path.is_file() and (self.owned or not write) else {}
        self.resumed = bool(previous) and not previous.get("finished", False)
        self.run_id: str = previous["run_id"] if self.resumed else secrets.token_hex(4)
        if self.owned:
            write_json_atomic(self.path, {"run_id": self.run_id, "finished": False})

    def finish(self) -> None:
        if self.owned:
            write_json_atomic(self.path, {"run_id": self.run_id, "finished": True})

    def release(self) -> None:
        if self.owned:
            self.lock.release()
            self.owned = False


class Tracker:
    """`logger=none`: Lightning logs nothing, the tracker records nothing (results.json is still written).

    `run_id` names the run to create or continue (trackers that have runs use it; see `RunLedger`).
    """

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id

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

    def log_images(self, images: Mapping[str, Path]) -> None:
        """Record the job's figures (the PNGs stay in the job dir whatever the tracker)."""

    def finish(self, failed: bool = False) -> None:
        """Flush and close; `failed`: the job died (an exception or a signal), for trackers that record it."""


class CSVTracker(Tracker):
    """`logger=csv`: Lightning's CSVLogger under the job's output dir; config as hparams.yaml, summary as metrics."""

    def __init__(self, save_dir: str, name: str = "csv", run_id: str | None = None):
        super().__init__(run_id)
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

    def finish(self, failed: bool = False) -> None:
        self._logger.save()


def wandb_mode(mode: str) -> str:
    """`auto`: honour WANDB_MODE if set, else online with an API key and offline without one."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def _parsed(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_delete()]


def swept_keys(arguments: Sequence[str]) -> set[str]:
    """Keys a multirun gives several values (`a=1,2`, `range(...)`, `choice(...)`), from its sweep-level overrides;
    keys given one value (`+sweep=curriculum`, `evaluate.iterations=5`) are constants of the sweep."""
    return {o.key_or_group for o in _parsed(arguments) if o.is_sweep_override()}


def _unplaced(key: str) -> bool:
    return not key.startswith(OVERRIDE_HIDDEN)


def override_labels(overrides: Sequence[str], keep: Callable[[str], bool],
                    head: str | None = None) -> tuple[str | None, list[str]]:
    """(name, tags) of a run from the `key=value` overrides whose key passes `keep`: name = `head` then
    `<last key part>=<value>` of each, tags = `<key>=<value>` of each."""
    kept = [(o.key_or_group, o.get_value_element_as_str()) for o in _parsed(overrides) if keep(o.key_or_group)]
    name = " ".join([*([head] if head else []), *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in kept)])
    return name or None, [f"{k}={v}"[:64] for k, v in kept]   # W&B refuses tags over 64 characters


def read_sweep(sweep_dir: Path) -> tuple[str, list[str]] | None:
    """(start `<date>_<time>`, sweep-level overrides incl. `hydra.sweeper.params`) of a multirun, from the
    `multirun.yaml` Hydra's sweeper writes when it starts; None where there is none."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hydra = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("hydra") or {}
    params = (hydra.get("sweeper") or {}).get("params") or {}
    started = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
    return started, [*(f"{k}={v}" for k, v in params.items()), *((hydra.get("overrides") or {}).get("task") or [])]


def sweep_labels(group: str | None, name: str | None, tags: list[str]) -> tuple[str | None, str | None, list[str]]:
    """W&B group, name and tags of this Hydra job (a name set in the config wins). A multirun point: named by its
    swept values (`gap=full`), tagged `key=value` of the swept keys, grouped per launch of its sweep
    (`<date>_<time>_<sweep name>`). A single run: named by its experiment then its command-line overrides, tagged
    with those overrides, in the config's group. Without multirun.yaml every override of a point counts as swept."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return group, name, tags
    hydra = HydraConfig.get()
    overrides, choices = list(hydra.overrides.task), hydra.runtime.choices
    if hydra.mode != RunMode.MULTIRUN:
        auto, found = override_labels(overrides, lambda k: k != "experiment" and _unplaced(k),
                                      choices.get("experiment") or group)
        return group, name or auto, sorted({*tags, *found})
    sweep_dir = Path(hydra.runtime.cwd, hydra.sweep.dir)
    sweep = read_sweep(sweep_dir)
    auto, found = override_labels(overrides, swept_keys(sweep[1]).__contains__ if sweep else _unplaced)
    label = choices.get("sweep") or sweep_dir.name
    return f"{sweep[0]}_{label}" if sweep else label, name or auto, sorted({*tags, *found})


class WandbTracker(Tracker):
    """`logger=wandb`: one W&B run per Hydra job, named, tagged and grouped by `sweep_labels` (group = experiment
    name, or one per sweep launch under multirun); offline without an API key.

    W&B must never stop training: a server that cannot be reached at start gives an offline run (same id, for
    `wandb sync`), and a W&B call that fails mid-run is reported once and its numbers go to `fallback.jsonl`
    in `save_dir` instead. A `run_id` of an interrupted run is continued (`resume="allow"`).
    """

    def __init__(self, project: str, save_dir: str, group: str | None = None, name: str | None = None,
                 entity: str | None = None, tags: list[str] | None = None, mode: str = "auto",
                 init_timeout: float = 90.0, run_id: str | None = None):
        import wandb

        super().__init__(run_id)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        self.fallback = Path(save_dir) / "fallback.jsonl"
        self._failed = False
        group, name, tags = sweep_labels(group, name, list(tags or []))
        init = dict(project=project, entity=entity, group=group, name=name, tags=list(tags or []), dir=save_dir,
                    id=run_id, resume="allow" if run_id else None, reinit="finish_previous",
                    settings=wandb.Settings(init_timeout=init_timeout))
        try:
            self.run = wandb.init(mode=wandb_mode(mode), **init)
        except wandb.errors.Error as err:
            log.warning("W&B could not start (%s): logging offline under %s; upload later with `wandb sync`",
                        err, save_dir)
            wandb.teardown()   # the failed attempt still holds the run id in W&B's service process
            self.run = wandb.init(mode="offline", **init)
        self._logger = _GuardedWandbLogger(self._guard, experiment=self.run)
        self._wandb = wandb

    def _guard(self, what: str, call: Callable[[], Any], payload: Mapping[str, Any]) -> None:
        """Run a W&B call; if it fails, say so once and keep the numbers in `fallback.jsonl`."""
        try:
            call()
        except Exception as err:   # any failure inside W&B: training must go on
            if not self._failed:
                log.warning("W&B %s failed (%s: %s); training continues, numbers go to %s", what,
                            type(err).__name__, err, self.fallback)
            self._failed = True
            with self.fallback.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"call": what, **flatten(payload)}) + "\n")

    @property
    def lightning_logger(self) -> Logger:
        return self._logger

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._guard("config", lambda: self.run.config.update(dict(config), allow_val_change=True), {})

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._guard("log", lambda: self.run.log(dict(metrics)), metrics)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(flatten(summary)), summary)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._guard("table", lambda: self.run.log({key: self._wandb.Table(columns=columns, data=rows)}), {})

    def log_images(self, images: Mapping[str, Path]) -> None:
        self._guard("images", lambda: self.run.log({f"figures/{name}": self._wandb.Image(str(path))
                                                    for name, path in images.items()}), {})

    def finish(self, failed: bool = False) -> None:
        """Close the run; W&B marks it failed on `failed` (exit code 1), finished otherwise."""
        self._guard("finish", lambda: self.run.finish(exit_code=1 if failed else None), {})


class _GuardedWandbLogger(WandbLogger):
    """Lightning's W&B logger whose metric calls go through the tracker's guard."""

    def __init__(self, guard: Callable[[str, Callable[[], Any], Mapping[str, Any]], None], **kwargs: Any):
        super().__init__(**kwargs)
        self._guard = guard

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guard("log", lambda: super(_GuardedWandbLogger, self).log_metrics(metrics, step), metrics)
