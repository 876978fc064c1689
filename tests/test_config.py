"""Config tree: every group choice composes and instantiates; typos and wrong types fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF, compose_config
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf.errors import ConfigKeyError, ValidationError

from pit.tracking import find_secrets

GROUPS = ["dataset", "model", "objective", "baseline", "trainer", "logger", "judge"]


@pytest.mark.parametrize("group, choice", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_choice_composes(group: str, choice: str, tmp_path: Path) -> None:
    overrides = [f"{group}={choice}"] + (["dataset.path=x.jsonl"] if (group, choice) == ("dataset", "jsonl") else [])
    cfg = compose_config(overrides, tmp_path)
    assert cfg[group] is not None


@pytest.mark.parametrize("group", ["dataset", "model", "objective", "trainer"])
def test_targets_resolve_to_constructors(group: str, tmp_path: Path) -> None:
    for path in sorted((CONF / group).glob("*.yaml")):
        extra = ["dataset.path=x.jsonl"] if path.stem == "jsonl" else []
        node = compose_config([f"{group}={path.stem}", *extra], tmp_path)[group]
        if group in ("dataset", "objective"):
            assert instantiate(node, _convert_="all") is not None
        else:
            from hydra.utils import get_object
            assert callable(get_object(node._target_))


@pytest.mark.parametrize("experiment", ["synthetic", "hh_rlhf"])
def test_experiments_compose(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config([f"+experiment={experiment}"], tmp_path)
    assert cfg.experiment_name == experiment
    assert cfg.dataset.name == experiment


def test_hh_experiment_offline_overrides(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=hh_rlhf", "model=tiny", "dataset.path=some/file.jsonl.gz"], tmp_path)
    assert cfg.model._target_.endswith("TinyCausalLM") and cfg.dataset.path == "some/file.jsonl.gz"
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize("cuda, bf16, precision", [(False, False, "32-true"), (True, True, "bf16-mixed"),
                                                    (True, False, "16-mixed")])
def test_auto_precision_follows_the_gpu(cuda: bool, bf16: bool, precision: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer=auto: bf16 mixed precision on a GPU that has bfloat16, fp16 mixed on an older one, fp32 without one
    (whatever this machine has: the GPU is set here)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert compose_config(["trainer=auto"], tmp_path).trainer.precision == precision


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="n_pair"):
        compose_config(["dataset.n_pair=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_config(["train.sft_policy.lrr=3"], tmp_path)


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="seed"):
        compose_config(["seed=abc"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="max_steps"):
        compose_config(["train.sft_pit.max_steps=lots"], tmp_path)


def test_unknown_choice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="dataset.*nonexistent"):
        compose_config(["dataset=nonexistent"], tmp_path)


def test_yaml_typo_in_a_group_file_is_an_error(tmp_path: Path) -> None:
    """The schema also guards the files themselves: a misspelt key in a YAML file fails composition."""
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(CONF, conf)
    path = conf / "dataset" / "synthetic.yaml"
    path.write_text(path.read_text().replace("n_pairs: 4000", "n_pairz: 4000"))
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError), match="n_pairz"):
            compose("config")


def test_missing_required_value_is_reported(tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = compose_config(["dataset=jsonl"], tmp_path)
    with pytest.raises(MissingMandatoryValue, match="path"):
        OmegaConf.to_container(cfg.dataset, throw_on_missing=True)


def test_objective_rejects_unknown_stage(tmp_path: Path) -> None:
    """A misspelt stage fails when the plan is built, before any work."""
    from pit.models.reward import CausalRewardSpec
    from pit.objective import Objective
    from pit.pipeline import plan_run

    objective = Objective(name="x", stages=["sft_policy", "sft_polcy"], curriculum=["dataset"])
    with pytest.raises(ValueError, match="unknown stages"):
        plan_run(compose_config([], tmp_path), objective, None, CausalRewardSpec())


def test_find_secrets() -> None:
    cfg = {"judge": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "base_url": "u",
                     "nested": [{"hf_token": "t", "ok": 1}, {"token": None}]}, "Password": "p"}
    assert find_secrets(cfg) == ["judge.api_key", "judge.nested.0.hf_token", "Password"]
    assert find_secrets({"judge": {"api_key_env": "X", "secret": ""}, "max_tokens": 3, "tokenizer": "t"}) == []
    assert find_secrets({"OPENAI_APIKEY": "x", "wandb-api-key": "y"}) == ["OPENAI_APIKEY", "wandb-api-key"]
