"""The `judge=` choices and the `judge` stage: the exact oracle, a reward model trained on the held-out judge split,
or a published reward model used as it is. Each reports its pairwise accuracy on the val split next to its results.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from pit.errors import ConfigError
from pit.evaluate.llm_judge import LLMClient, LLMVerdicts
from pit.evaluate.metrics import outcomes_from_scores
from pit.models.lora import FullWeights
from pit.models.reward import RewardModel, load_reward_model
from pit.stages.context import RewardSpec, StageContext
from pit.stages.supervised import fit_reward_model


class ScoreVerdicts:
    """Pairwise verdicts from a pointwise score (oracle, reward model); each (prompt, response) is scored once."""

    def __init__(self, score_fn: Callable[[list[str], list[str]], list[float]], tie_margin: float = 0.0):
        self.score_fn, self.tie_margin = score_fn, tie_margin
        self.memo: dict[tuple[str, str], float] = {}

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        pairs = list(zip(prompts, responses, strict=True))
        todo = list(dict.fromkeys(p for p in pairs if p not in self.memo))
        if todo:
            new = self.score_fn([p for p, _ in todo], [r for _, r in todo])
            self.memo.update(zip(todo, (float(v) for v in new), strict=True))
        return [self.memo[p] for p in pairs]

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        return outcomes_from_scores(self.scores(prompts, first), self.scores(prompts, second), self.tie_margin)


def reward_model_verdicts(model: RewardModel, ctx: StageContext, tie_margin: float) -> ScoreVerdicts:
    """A reward model judge reads `policy_input(x)` and the response, like R_P."""
    policy_input = ctx.source.templates.policy_input
    return ScoreVerdicts(lambda ps, rs: model.score([policy_input(p) for p in ps], rs).tolist(), tie_margin)


def pairwise_accuracy(model: RewardModel, ctx: StageContext) -> float:
    """How often `model` scores y_w above y_l on the val split (inputs through the policy template)."""
    val = ctx.splits["val"]
    inputs = [ctx.source.templates.policy_input(e.prompt) for e in val]
    scores = model.score(inputs + inputs, [e.chosen for e in val] + [e.rejected for e in val])
    return (scores[: len(val)] > scores[len(val):]).float().mean().item()


class OracleJudge:
    """`judge=oracle`: the synthetic dataset's exact score (nothing to train)."""

    needs_oracle = True   # checked against the dataset when the plan is built (Objective.check_choices)

    def __init__(self, name: str = "oracle"):
        self.name = name

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None:
        val = ctx.splits["val"]
        metrics["val_acc"] = mean(float(ctx.oracle(e.prompt, e.chosen) > ctx.oracle(e.prompt, e.rejected))
                                  for e in val)
        metrics["val_pairs"] = len(val)

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> ScoreVerdicts:
        return oracle_verdicts(ctx.oracle, tie_margin)


def oracle_verdicts(oracle: Callable[[str, str], float], tie_margin: float = 0.0) -> ScoreVerdicts:
    """The dataset's exact oracle as pairwise verdicts (and scores, each (prompt, response) computed once)."""
    return ScoreVerdicts(lambda ps, rs: [oracle(p, r) for p, r in zip(ps, rs, strict=True)], tie_margin)


class RewardModelJudge:
    """`judge=reward_model`: a reward model trained only on the judge split, which no other stage trains on."""

    needs_oracle = False

    def __init__(self, backbone: RewardSpec, name: str = "reward_model"):
        if backbone.init_from is not None:
            raise ConfigError("judge.backbone.init_from must be null: a held-out judge may not start from a "
                              "model trained on the policy's data")
        self.backbone, self.name = backbone, name

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None:
        judge_rows = ctx.splits["judge"]
        if not judge_rows:
            raise ConfigError("judge=reward_model trains on the judge split, which is empty (raise splits.judge)")
        model = fit_reward_model(ctx, "judge", self.backbone, hp, judge_rows, metrics,
                                 adapters=FullWeights())
        model.save(out)
        metrics.update(val_acc=pairwise_accuracy(model, ctx), val_pairs=len(ctx.splits["val"]),
                       train_pairs=len(judge_rows))

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> ScoreVerdicts:
        return reward_model_verdicts(load_reward_model(directory), ctx, tie_margin)


class AutoJudge(RewardModelJudge):
    """`judge=auto`: the exact oracle when the dataset has one, else a reward model trained on the judge split."""

    def __init__(self, backbone: RewardSpec, name: str = "auto"):
        super().__init__(backbone, name)

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None:
        if ctx.oracle is not None:
            OracleJudge(self.name).fit(ctx, out, metrics, hp)
        else:
            super().fit(ctx, out, metrics, hp)

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> ScoreVerdicts:
        if ctx.oracle is not None:
            return OracleJudge(self.name).verdicts(ctx, directory, tie_margin)
        return super().verdicts(ctx, directory, tie_margin)


class LLMJudge(LLMClient):
    """`judge=llm`: its stage measures agreement with y_w > y_l on `val_pairs` val pairs (answers cached under the
    cache dir); `verdicts` serves evaluation."""

    needs_oracle = False

    def __init__(self, *args: Any, val_pairs: int = 50, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.val_pairs = val_pairs

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None:
        val = ctx.splits["val"][: self.val_pairs]
        verdicts = self.verdicts(ctx, out, 0.0)
        outcomes = verdicts.compare([e.prompt for e in val], [e.chosen for e in val], [e.rejected for e in val])
        metrics.update(val_acc=mean(o == 1.0 for o in outcomes), val_tie=mean(o == 0.5 for o in outcomes),
                       val_pairs=len(val), requests=verdicts.requests, no_verdicts=verdicts.no_verdicts)

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> LLMVerdicts:
        return LLMVerdicts(self, ctx.cache_dir / "llm_judge" / "verdicts.jsonl")


class PretrainedRewardJudge:
    """`judge=pretrained_rm`: a published reward model by hub name or path (e.g. OpenAssistant's DeBERTa RM)."""

    needs_oracle = False

    def __init__(self, backbone: RewardSpec, name: str = "pretrained_rm"):
        self.backbone, self.name = backbone, name

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None:
        model = self.backbone.build(None, None, ctx.model_spec, ctx.source.max_response_tokens)
        metrics.update(val_acc=pairwise_accuracy(model, ctx), val_pairs=len(ctx.splits["val"]))

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> ScoreVerdicts:
        model = self.backbone.build(None, None, ctx.model_spec, ctx.source.max_response_tokens)
        return reward_model_verdicts(model, ctx, tie_margin)
