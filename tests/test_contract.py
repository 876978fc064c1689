"""The stage contract: what a body opens is what its key holds (checked when the plan is built), artifacts refer to
each other by (stage, key) so a cache can move, `gap=` is a config group whose class owns its stage, and every
sampling pass draws from its own seed."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from helpers import FAST, FIXTURES, compose_config, stage_status
from hydra.utils import instantiate

from pit.errors import ConfigError
from pit.models.generate import purpose_seed, seeded_rng
from pit.pipeline import STAGES, plan_run
from pit.run import run
from pit.stages.context import StageContext
from pit.stages.supervised import build_reward

OBJECTIVES = sorted(p.stem for p in (FIXTURES.parent.parent / "conf" / "objective").glob("*.yaml"))
GAPS = sorted(p.stem for p in (FIXTURES.parent.parent / "conf" / "gap").glob("*.yaml"))
# the pipeline's cheapest path through R_PIT and a policy round (no RLHF of M_P, no judge, no evaluation)
POLICY_ROUND = ["objective.stages=[sft_policy,reward,sft_pit,gap_reward,pit_rl]", "objective.curriculum=[policy]"]


def planned(overrides: list[str], tmp_path: Path) -> list:
    cfg = compose_config(overrides, tmp_path)
    return plan_run(cfg, instantiate(cfg.objective, _convert_="all"), instantiate(cfg.gap, _convert_="all"),
                    instantiate(cfg.reward_model))


def test_every_shipped_plan_opens_only_what_its_keys_hold(tmp_path: Path) -> None:
    """Every objective, and every gap choice with each reward model family, plans: its declared reads are within
    its key. The reads are what each task needs: the tokenizer wherever a model is built, R_P for the gaps that add
    its difference. (`peft` enters keys only, never a plan's upstream or reads: test_lora plans with it.)"""
    combos = [[f"objective={o}"] for o in OBJECTIVES]
    combos += [[f"gap={g}", f"reward_model={rm}"] for g in GAPS for rm in ("causal", "minilm")]
    for overrides in combos:
        tasks = {task.name: task for _, task in planned(overrides, tmp_path)}
        assert tasks["tokenizer"].reads == frozenset()
        assert all("tokenizer" in task.reads for name, task in tasks.items() if name not in ("tokenizer", "gap_reward"))
        if "gap_reward" in tasks:
            gap = overrides[0].removeprefix("gap=") if overrides[0].startswith("gap=") else "residual"
            assert ("reward" in tasks["gap_reward"].reads) == (gap in ("rp_difference", "residual", "ensemble"))
            assert ("tokenizer" in tasks["gap_reward"].reads) == (gap != "rp_difference")


def test_a_gap_class_outside_pit_is_in_its_key(tmp_path: Path) -> None:
    """`pit`'s own gap classes are in every key through the package digest; a user's class (here the toy one in
    tests/) through its own file's digest, so editing it reruns R_PIT."""
    toy = {task.name: task for _, task in planned([f"hydra.searchpath=[file://{FIXTURES / 'conf'}]", "gap=length"],
                                                   tmp_path)}["gap_reward"]
    shipped = {task.name: task for _, task in planned([], tmp_path)}["gap_reward"]
    assert len(toy.config["gap"]["source"]) == 16 and "source" not in shipped.config["gap"]


def test_a_body_opening_what_its_key_does_not_hold_fails_at_plan_time(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """R_P's body declaring that it also opens M_PIT's SFT (which its key does not hold) fails before any work."""
    assert all(hasattr(stage.body, "reads") for stage in STAGES)
    monkeypatch.setattr(build_reward, "reads", lambda c, *, hp: ("tokenizer", c.reward_spec.init_from, "sft_pit"))
    with pytest.raises(ConfigError, match=r"stage reward opens \['sft_pit'\], which its key does not hold"):
        planned([], tmp_path)
    monkeypatch.delattr(build_reward, "reads")
    with pytest.raises(ConfigError, match="does not declare what it reads"):
        planned([], tmp_path)


def test_a_body_opens_only_what_it_declared() -> None:
    """At run time a body's context opens its declared stages and refuses any other, planned or not."""
    blank = {f.name: None for f in fields(StageContext) if f.init}
    ctx = StageContext(**{**blank, "artifacts": {"tokenizer": Path("t"), "reward": Path("r")}, "seed": 0})
    scoped = ctx.scoped("sft_policy", frozenset({"tokenizer"}))
    assert scoped.artifact("tokenizer") == Path("t")
    with pytest.raises(ConfigError, match="opened 'reward', which its @reads declaration does not name"):
        scoped.artifact("reward")
    assert scoped.sampling_seed("x") == purpose_seed(0, "sft_policy", "x") != purpose_seed(0, "reward", "x")


def test_a_seeded_pass_draws_alike_whatever_ran_before_and_changes_nothing_after() -> None:
    torch.manual_seed(0)
    with seeded_rng(7, torch.device("cpu")):
        first = torch.rand(3)
    after_first = torch.rand(3)
    torch.manual_seed(0)
    torch.rand(100)   # another model loaded, another pass sampled
    with seeded_rng(7, torch.device("cpu")):
        again = torch.rand(3)
    assert torch.equal(first, again)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_first)   # the global stream went on as if the pass had not run
    assert purpose_seed(0, "a", "b") != purpose_seed(1, "a", "b") and 0 <= purpose_seed(0, "a") < 2 ** 63


@pytest.mark.slow
def test_a_moved_cache_is_read_where_it_is_now(tmp_path: Path) -> None:
    """Move (not copy) the cache, rerun with a change that reruns the curriculum but reuses R_PIT (gap=residual,
    which reads R_P): it loads R_P from the moved cache; rerun the original config: every stage reused, and the
    same evaluation."""
    base = [*FAST, "objective=pit_round1_only", "gap=residual", "baseline=none"]
    first = run(compose_config(base, tmp_path))
    moved = tmp_path / "elsewhere" / "cache"
    moved.parent.mkdir()
    shutil.move(tmp_path / "cache", moved)

    def at_moved(overrides: list[str]) -> dict:
        cfg = compose_config(overrides, tmp_path)
        cfg.paths.cache_dir = str(moved)
        return run(cfg)

    changed = stage_status(at_moved([*base, "train.pit_rl.iterations=3"]))
    assert changed["gap_reward"] == "reused" and changed["pit_rl/1_dataset"] == "ran"
    again = at_moved(base)
    assert set(stage_status(again).values()) == {"reused"}
    assert again["eval"] == first["eval"]


@pytest.mark.slow
def test_a_gap_variant_is_one_class_and_one_yaml(tmp_path: Path) -> None:
    """The toy `gap=length` (tests/toy_gap.py, tests/fixtures/conf/gap/length.yaml) runs as R_PIT: its stage saves
    it, and the policy round's PPO scores its rollouts with it."""
    from toy_gap import LengthScorer

    before = LengthScorer.scored
    results = run(compose_config([*FAST, *POLICY_ROUND, f"hydra.searchpath=[file://{FIXTURES / 'conf'}]",
                                  "gap=length"], tmp_path))
    gap = results["stages"]["gap_reward"]
    assert "toy_words_chosen_minus_rejected" in gap["metrics"]
    assert json.loads((tmp_path / "cache" / "gap_reward" / gap["key"] / "gap_reward.json").read_text()) == \
        {"gap": "length", "reads": {}}
    assert LengthScorer.scored - before >= 2 * 8   # two PPO iterations of 8 rollouts (FAST)


@pytest.mark.slow
def test_policy_round_references_do_not_depend_on_the_gap_model_loaded_before_them(tmp_path: Path) -> None:
    """gap=residual loads two models before sampling the references, gap=full one: same M_P, same references."""
    references = {}
    for gap in ("residual", "full"):
        stages = run(compose_config([*FAST, *POLICY_ROUND, f"gap={gap}"], tmp_path))["stages"]
        directory = tmp_path / "cache" / "pit_rl/1_policy" / stages["pit_rl/1_policy"]["key"]
        references[gap] = (directory / "references.jsonl").read_text()
    assert references["residual"] == references["full"] and references["full"].count("\n") >= 16
