"""The `gap=` choices (`conf/gap/*.yaml`) and the `gap_reward` stage: how R_PIT(x, y, y_ref) is made.

A choice owns everything about its gap model: which finished stages it reads (`reads`, R_P for the ones that add
R_P's difference), whether it trains, the settings it refuses, how it is fit and saved, and how a later stage loads
it back as a scorer (`pit.models.gap`). Nothing else dispatches on which gap a run uses: a new variant is a subclass
here (or anywhere importable) and a YAML naming it.

A saved gap model refers to the artifacts it reads by (stage, key) in `gap_reward.json`, never by path; a later
stage opens them through its own context, in whatever cache directory the run uses now.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pit.artifacts import MARKER, file_sha256
from pit.data.encode import collate_groups, collate_groups_with_offsets
from pit.data.schema import PreferenceExample
from pit.errors import ConfigError
from pit.models.gap import EnsembleGap, ResidualGap, RewardDifferenceGap, TrainedGap, reward_difference
from pit.models.reward import RewardModel, load_reward_model
from pit.modules.preference import GAP_GROUPS, GapRewardModule, preference_training
from pit.modules.preference_losses import GAP_COMPARISONS, comparison_accuracy
from pit.stages.context import StageContext, reads

GAP_META = "gap_reward.json"
Items = Callable[[list[PreferenceExample]], list[Any]]


class GapReward:
    """`gap=full` (Eq. 2's five comparisons) and `gap=single` (g(w,l) > g(l,w)): an R_PIT trained on its own."""

    reads: tuple[str, ...] = ()   # finished stages it reads besides the one its backbone starts from
    trains: bool = True

    def __init__(self, name: str, comparisons: list[list[str]] | None = None):
        self.name = name
        self.comparisons = tuple((hi, lo) for hi, lo in comparisons or ())
        if bad := sorted({g for pair in self.comparisons for g in pair} - set(GAP_GROUPS)):
            raise ConfigError(f"gap.comparisons: unknown groups {bad}; a comparison is [higher, lower] of "
                              f"{list(GAP_GROUPS)} (response, reference: wl = y_w against y_l)")
        if self.trains and not self.comparisons:
            raise ConfigError(f"gap={name} trains a model: give gap.comparisons (Eq. 2 is {GAP_COMPARISONS})")

    def check(self, hp: DictConfig) -> None:
        """Refuse `train.gap_reward` settings this gap cannot train with (before any work)."""

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: DictConfig) -> None:
        """Train the gap model with `hp` on the train split (validated on val) and save it into `out`."""
        model = ctx.new_reward_model(ctx.reward_spec, ctx.adapters)
        items, collate = self.training_items(ctx, model)
        module = GapRewardModule(model, self.comparisons, prefix="gap_reward",
                                 **preference_training(hp, ctx.model_spec))
        ctx.fitter.fit(module, hp, items(ctx.splits["train"]), items(ctx.splits["val"]), collate, metrics)
        model.backbone = ctx.adapters.merged(model.backbone)
        model.save(out)
        self.save(ctx, out)

    def training_items(self, ctx: StageContext, model: RewardModel) -> tuple[Items, Callable[..., Any]]:
        """How rows become training items, and their collate function."""
        return partial(gap_items, ctx, model), partial(collate_groups, pad_id=model.pad_id())

    def save(self, ctx: StageContext, out: Path) -> None:
        """`gap_reward.json`: this choice's name and, of every artifact it reads, its key and the SHA-256 of its
        completion marker (which lists every file's digest): what it was built with, without a path."""
        reads = {stage: {"key": ctx.artifact(stage).name, "marker": file_sha256(ctx.artifact(stage) / MARKER)}
                 for stage in self.reads}
        (out / GAP_META).write_text(json.dumps({"gap": self.name, "reads": reads}))

    def load(self, ctx: StageContext, directory: Path) -> TrainedGap:
        """The scorer saved in `directory`, its reads opened through `ctx` (the current cache)."""
        return TrainedGap(load_reward_model(directory), ctx.source.templates)

    def reward_model(self, ctx: StageContext, directory: Path) -> RewardModel:
        """R_P as this gap model was built with: the run's `reward` artifact, checked against the one it recorded
        (a rebuilt R_P under the same key, e.g. with `cache.code_version` pinned, is refused)."""
        recorded = json.loads((directory / GAP_META).read_text())["reads"]["reward"]
        found = ctx.artifact("reward")
        if recorded != {"key": found.name, "marker": file_sha256(found / MARKER)}:
            raise ConfigError(f"{directory / GAP_META}: built with R_P {recorded['key']}, which is not this run's R_P "
                              f"{found} as it is now (rebuilt since?): delete {directory} to rebuild it")
        return ctx.reward_model("reward")


class RewardDifference(GapReward):
    """`gap=rp_difference`: no training, g = R_P(x, y) - R_P(x, y_ref); its stage records how that orders the four
    combinations on val."""

    reads = ("reward",)
    trains = False

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: DictConfig) -> None:
        self.save(ctx, out)
        metrics.update(gap_ordering(self.load(ctx, out), ctx))

    def load(self, ctx: StageContext, directory: Path) -> TrainedGap:
        return RewardDifferenceGap(self.reward_model(ctx, directory), ctx.source.templates)


class Residual(GapReward):
    """`gap=residual`: g = R_P(x, y) - R_P(x, y_ref) + h(x, y_ref, y). R_P's differences enter training as fixed
    offsets of the four groups, and h's head starts at zero, so training starts from `rp_difference`."""

    reads = ("reward",)

    def check(self, hp: DictConfig) -> None:
        if hp.l2:
            raise ConfigError("train.gap_reward.l2 penalises whole scores, which for gap=residual include R_P's "
                              "difference (it would train h to cancel it): set it to 0")

    def training_items(self, ctx: StageContext, model: RewardModel) -> tuple[Items, Callable[..., Any]]:
        model.zero_head()
        reward = ctx.reward_model("reward")

        def items(rows: list[PreferenceExample]) -> list[Any]:
            return list(zip(gap_items(ctx, model, rows), gap_offsets(ctx, reward, rows), strict=True))

        return items, partial(collate_groups_with_offsets, pad_id=model.pad_id())

    def load(self, ctx: StageContext, directory: Path) -> TrainedGap:
        return ResidualGap(load_reward_model(directory), self.reward_model(ctx, directory), ctx.source.templates)


class Ensemble(GapReward):
    """`gap=ensemble`: R_PIT trained as `full`, scored as the mean of it and R_P's difference. Its stage adds
    `ensemble_val_acc_*`, the orderings of the mean PPO uses (the trained part's are the usual `val_*`)."""

    reads = ("reward",)

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: DictConfig) -> None:
        super().fit(ctx, out, metrics, hp)
        metrics.update({f"ensemble_{k}": v for k, v in gap_ordering(self.load(ctx, out), ctx).items()})

    def load(self, ctx: StageContext, directory: Path) -> TrainedGap:
        return EnsembleGap(load_reward_model(directory), self.reward_model(ctx, directory), ctx.source.templates)


@reads(lambda c, *, hp: (*c.gap.reads, *(("tokenizer", c.reward_spec.init_from) if c.gap.trains else ())))
def build_gap_reward(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """R_PIT as the run's `gap=` choice makes it."""
    ctx.gap.fit(ctx, out, metrics, hp)


def gap_ordering(gap: TrainedGap, ctx: StageContext) -> dict[str, float]:
    """`val_acc_*`: how a gap scorer orders the four (response, reference) combinations on val."""
    val = ctx.splits["val"]
    prompts, chosen, rejected = [e.prompt for e in val], [e.chosen for e in val], [e.rejected for e in val]
    scores = {"wl": gap.score(prompts, chosen, rejected), "ww": gap.score(prompts, chosen, chosen),
              "ll": gap.score(prompts, rejected, rejected), "lw": gap.score(prompts, rejected, chosen)}
    return {f"val_{k}": v for k, v in comparison_accuracy(scores, GAP_COMPARISONS).items()}


def gap_items(ctx: StageContext, model: RewardModel, rows: list[PreferenceExample]) -> list[tuple[list[int], ...]]:
    """Encodings of the four (response, reference) combinations in GAP_GROUPS order: wl, ww, ll, lw."""
    improver = ctx.source.templates.improver_input
    refs_w = [improver(e.prompt, e.chosen) for e in rows]
    refs_l = [improver(e.prompt, e.rejected) for e in rows]
    chosen, rejected = [e.chosen for e in rows], [e.rejected for e in rows]
    return list(zip(model.encode(refs_l, chosen), model.encode(refs_w, chosen), model.encode(refs_l, rejected),
                    model.encode(refs_w, rejected), strict=True))


def gap_offsets(ctx: StageContext, reward: RewardModel, rows: list[PreferenceExample]) -> list[tuple[float, ...]]:
    """R_P's part of each group's gap in GAP_GROUPS order: (d, 0, 0, -d) with d = R_P(x, y_w) - R_P(x, y_l)."""
    d = reward_difference(reward, ctx.source.templates, [e.prompt for e in rows], [e.chosen for e in rows],
                          [e.rejected for e in rows]).tolist()
    return [(v, 0.0, 0.0, -v) for v in d]
