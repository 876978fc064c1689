"""The preference-model stages (docs/design.md §1): R_P, and R_PIT trained with Eq. 2 or one term of it, as R_P's
difference, or as R_P's difference plus a trained residual; `fit_reward_model` also trains the judge RM.

Stage bodies in the shape every stage has, `(pipeline, out, metrics)`, as in `pit.rl_stages`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pit.data.encode import collate_groups, collate_groups_with_offsets
from pit.data.schema import PreferenceExample
from pit.errors import ConfigError
from pit.models.gap import load_gap, reward_difference, save_gap
from pit.models.lora import FullWeights
from pit.models.reward import RewardModel, load_reward_model
from pit.modules.gap_reward import GapRewardModule
from pit.modules.preference import preference_training
from pit.modules.preference_losses import GAP_COMPARISONS, comparison_accuracy
from pit.modules.reward import RewardModule

if TYPE_CHECKING:
    from pit.pipeline import Pipeline


def build_reward(pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
    """R_P on the train split."""
    model = fit_reward_model(pipeline, "reward", pipeline.reward_spec, pipeline.cfg.train.reward,
                             pipeline.splits["train"], metrics)
    model.save(out)


def fit_reward_model(pipeline: Pipeline, name: str, spec: Any, hp: Any, train_rows: list[PreferenceExample],
                     metrics: dict[str, float], adapters: FullWeights | None = None) -> RewardModel:
    """Train a scalar reward model r(x, y) on (y_w > y_l) pairs of `train_rows`, validated on the val split,
    with `adapters` (default: the `peft` choice)."""
    adapters = adapters or pipeline.adapters
    model = pipeline.new_reward_model(spec, adapters)
    module = RewardModule(model, prefix=name, **preference_training(hp))
    pipeline.fitter.fit(module, hp, reward_items(pipeline, model, train_rows),
                        reward_items(pipeline, model, pipeline.splits["val"]),
                        partial(collate_groups, pad_id=model.pad_id()), metrics)
    model.backbone = adapters.merged(model.backbone)
    return model


def reward_items(pipeline: Pipeline, model: RewardModel, rows: list[PreferenceExample]) -> list[tuple[list[int], ...]]:
    """(chosen, rejected) encodings of `x = policy_input(prompt)` with each response."""
    inputs = [pipeline.policy_input_of(e) for e in rows]
    return list(zip(model.encode(inputs, [e.chosen for e in rows]),
                    model.encode(inputs, [e.rejected for e in rows]), strict=True))


def build_gap_reward(pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
    """R_PIT on the train split with Eq. 2 (`full`, `residual`) or its single term (`single`).

    `residual` trains h in g = R_P(x, y) - R_P(x, y_ref) + h(x, y_ref, y): R_P's differences are fixed offsets
    of the four groups, and h's head starts at zero, so training starts from `rp_difference`.
    """
    hp, residual = pipeline.cfg.train.gap_reward, pipeline.objective.gap_loss == "residual"
    if residual and hp.l2:
        raise ConfigError("train.gap_reward.l2 penalises whole scores, which for gap_loss=residual include R_P's "
                          "difference (it would train h to cancel it): set it to 0")
    model = pipeline.new_reward_model(pipeline.reward_spec, pipeline.adapters)
    if residual:
        model.zero_head()
    module = GapRewardModule(model, "full" if residual else pipeline.objective.gap_loss, prefix="gap_reward",
                             **preference_training(hp))
    pad_id = model.pad_id()
    if residual:
        reward = load_reward_model(pipeline.artifact("reward"))

        def items(rows: list[PreferenceExample]) -> list[Any]:
            return list(zip(gap_items(pipeline, model, rows), gap_offsets(pipeline, reward, rows), strict=True))

        collate = partial(collate_groups_with_offsets, pad_id=pad_id)
    else:
        items, collate = partial(gap_items, pipeline, model), partial(collate_groups, pad_id=pad_id)
    pipeline.fitter.fit(module, hp, items(pipeline.splits["train"]), items(pipeline.splits["val"]), collate, metrics)
    model.backbone = pipeline.adapters.merged(model.backbone)
    save_gap(out, model, reward_dir=pipeline.artifact("reward") if residual else None)


def build_gap_difference(pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
    """`rp_difference`: nothing to train; record how R_P's differences order the four combinations on val."""
    save_gap(out, None, reward_dir=pipeline.artifact("reward"))
    gap = load_gap(out, pipeline.source.templates)
    val = pipeline.splits["val"]
    prompts, chosen, rejected = [e.prompt for e in val], [e.chosen for e in val], [e.rejected for e in val]
    scores = {"wl": gap.score(prompts, chosen, rejected), "ww": gap.score(prompts, chosen, chosen),
              "ll": gap.score(prompts, rejected, rejected), "lw": gap.score(prompts, rejected, chosen)}
    metrics.update({f"val_{k}": v for k, v in comparison_accuracy(scores, GAP_COMPARISONS).items()})


def gap_items(pipeline: Pipeline, model: RewardModel, rows: list[PreferenceExample]) -> list[tuple[list[int], ...]]:
    """Encodings of the four (response, reference) combinations in GAP_GROUPS order: wl, ww, ll, lw."""
    improver = pipeline.source.templates.improver_input
    refs_w = [improver(e.prompt, e.chosen) for e in rows]
    refs_l = [improver(e.prompt, e.rejected) for e in rows]
    chosen, rejected = [e.chosen for e in rows], [e.rejected for e in rows]
    return list(zip(model.encode(refs_l, chosen), model.encode(refs_w, chosen), model.encode(refs_l, rejected),
                    model.encode(refs_w, rejected), strict=True))


def gap_offsets(pipeline: Pipeline, reward: RewardModel, rows: list[PreferenceExample]) -> list[tuple[float, ...]]:
    """R_P's part of each group's gap in GAP_GROUPS order: (d, 0, 0, -d) with d = R_P(x, y_w) - R_P(x, y_l)."""
    d = reward_difference(reward, pipeline.source.templates, [e.prompt for e in rows], [e.chosen for e in rows],
                          [e.rejected for e in rows]).tolist()
    return [(v, 0.0, 0.0, -v) for v in d]
