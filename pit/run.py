"""Hydra entry point: `python -m pit.run [overrides]` runs one job, `python -m pit.run -m ...` a sweep."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

import pit.config  # noqa: F401  (registers the schemas every config file extends)
from pit.errors import UserError
from pit.pipeline import Pipeline

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline for a composed config, print the stage table, return the results dict."""
    results = Pipeline(cfg).run()
    print(format_summary(results))
    return results


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of stages: status, seconds and headline metrics."""
    data = results.get("data", {})
    lines = [f"data: {data.get('source')}  counts={data.get('counts')}  dropped={data.get('dropped')}",
             f"{'stage':<16} {'status':<8} {'seconds':>8}  metrics"]
    for name, record in results["stages"].items():
        metrics = record.get("metrics") or {}
        shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()) if metrics else record.get("reason", "")
        lines.append(f"{name:<16} {record['status']:<8} {record.get('seconds', 0.0):>8.1f}  {shown}")
    lines.append(f"wall: {results.get('wall_seconds', 0.0):.1f} s")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (UserError, InstantiationException, MissingMandatoryValue) as err:
        log.error("%s", err)
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
