"""The OmegaConf resolvers the config files use: `${pit.precision:}`, `${pit.job_dir:}`, `${pit.shipped:<file>}`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def precision() -> str:
    """`bf16-mixed` on GPUs that support bfloat16, `16-mixed` on older GPUs, full precision without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def job_dir() -> str:
    """Hydra's output dir of the running job; where no job runs (`--cfg job --resolve`) a placeholder saying so."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    directory = OmegaConf.select(hydra, "runtime.output_dir", throw_on_missing=False) if hydra else None
    return directory or "<the job's output dir>"


def shipped_data(name: str) -> str:
    """Absolute path of a data file shipped with pit (`data/<name>` of the source tree, `pit/data_files/<name>` in an
    installed package), so a config can name it whatever the working directory."""
    package = Path(__file__).resolve().parent
    installed = package / "data_files" / name
    return str(installed if installed.exists() else package.parent / "data" / name)


RESOLVERS: dict[str, Callable[..., Any]] = {"pit.precision": precision, "pit.job_dir": job_dir,
                                            "pit.shipped": shipped_data}
