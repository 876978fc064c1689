"""The stage table: a new stage is one row and one body, planned, keyed, cached and reused like the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST, compose_config, stage_status

from pit import pipeline
from pit.errors import ConfigError
from pit.pipeline import Pipeline, Stage, Task
from pit.stages.context import StageContext, reads


def plan_vocab_report(plan: pipeline.Plan) -> list[Task]:
    """A toy stage: reads the tokenizer's artifact; its key holds its one setting."""
    return [Task("vocab_report", {"min_words": 3}, ("tokenizer",), {"min_words": 3})]


@reads(lambda c, *, min_words: ("tokenizer",))
def build_vocab_report(ctx: StageContext, out: Path, metrics: dict[str, float], *, min_words: int) -> None:
    """Count the train responses of at least `min_words` words, and how many tokens the tokenizer has."""
    count = sum(len(e.chosen.split()) >= min_words for e in ctx.splits["train"])
    (out / "report.json").write_text(json.dumps({"min_words": min_words, "count": count}))
    metrics.update(count=count, vocab=len(ctx.tokenizer()))
    BUILT.append(min_words)


BUILT: list[int] = []
TOY = Stage("vocab_report", plan_vocab_report, build_vocab_report, fits=False)


@pytest.mark.slow
def test_a_toy_stage_added_through_the_table_alone_runs_and_is_reused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "STAGES", [*pipeline.STAGES, TOY])
    BUILT.clear()
    cfg = compose_config([*FAST, "objective.stages=[vocab_report]"], tmp_path)
    first = Pipeline(cfg).run()
    assert stage_status(first) == {"tokenizer": "ran", "vocab_report": "ran"}
    record = first["stages"]["vocab_report"]
    artifact = tmp_path / "cache" / "vocab_report" / record["key"]
    saved = json.loads((artifact / "report.json").read_text())
    assert saved["min_words"] == 3 and record["metrics"]["count"] == saved["count"] == first["data"]["counts"]["train"]
    assert record["metrics"]["vocab"] == first["stages"]["tokenizer"]["metrics"]["vocab_size"]

    second = Pipeline(cfg).run()
    assert stage_status(second) == {"tokenizer": "reused", "vocab_report": "reused"}
    assert second["stages"]["vocab_report"]["key"] == record["key"] and BUILT == [3]


def test_an_unknown_stage_names_the_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown stages \\['vocab_report'\\]"):
        Pipeline(compose_config([*FAST, "objective.stages=[vocab_report]"], tmp_path))


def test_a_missing_upstream_stage_fails_before_any_work(tmp_path: Path) -> None:
    cfg = compose_config([*FAST, "objective.stages=[sft_policy,rlhf_policy]"], tmp_path)
    with pytest.raises(ConfigError, match="rlhf_policy optimises sft_policy against R_P: add \\['reward'\\]"):
        Pipeline(cfg)
    assert not (tmp_path / "cache" / "tokenizer").exists()


@pytest.mark.parametrize("objective", ["pit", "pit_no_sft", "pit_round1_only"])
def test_every_curriculum_round_is_keyed_on_m_p(tmp_path: Path, objective: str) -> None:
    """Each round scores M_PIT on M_P's val drafts, so a round cached for one M_P must not be reused for another."""
    plan = Pipeline(compose_config([*FAST, f"objective={objective}"], tmp_path))
    rounds = [task for stage, task in plan.tasks if stage.name == "pit_rl"]
    assert rounds and all(plan.objective.policy in task.upstream for task in rounds)
