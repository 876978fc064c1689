"""The supervised stages (docs/design.md §1–2): the tokenizer, SFT of M_P and M_PIT, R_P, and R_PIT trained with
Eq. 2 or one term of it, as R_P's difference, or as R_P's difference plus a trained residual.

`fit_reward_model` also trains the judge's reward model (`pit.evaluate.judges`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pit.data.encode import collate_groups, collate_groups_with_offsets, collate_sft, encode_pairs
from pit.data.schema import PreferenceExample
from pit.models.factory import save_model
from pit.models.gap import load_gap, reward_difference, save_gap
from pit.models.reward import RewardModel, load_reward_model
from pit.modules.preference import GapRewardModule, RewardModule, preference_training
from pit.modules.preference_losses import COMBINED_GAPS, GAP_COMPARISONS, comparison_accuracy
from pit.modules.sft import SFTModule
from pit.stages.context import Adapters, RewardSpec, StageContext


def build_tokenizer(ctx: StageContext, out: Path, metrics: dict[str, float]) -> None:
    """Train (tiny model) or fetch (pretrained) the tokenizer once; every later stage loads this one."""
    texts = [t for e in ctx.splits["train"] for t in (ctx.policy_input(e), ctx.improver_input_of_rejected(e),
                                                       e.chosen)]
    tokenizer = ctx.model_spec.tokenizer(texts)
    tokenizer.save_pretrained(out)
    metrics["vocab_size"] = len(tokenizer)


def build_sft(ctx: StageContext, out: Path, metrics: dict[str, float], *, name: str, hp: DictConfig,
              improver: bool) -> None:
    """Fine-tune on (input, y_w) with the loss on response tokens, save the model, sample from it on val.

    The input is x (M_P, the control) or, for M_PIT (`improver`), (x, y_l): M_PIT learns to turn y_l into y_w.
    """
    make_input = ctx.improver_input_of_rejected if improver else ctx.policy_input
    max_input_tokens = ctx.source.max_improver_tokens if improver else ctx.source.max_prompt_tokens
    tokenizer = ctx.tokenizer()
    model = ctx.adapters.wrap(ctx.trainable(ctx.model_spec.model(tokenizer) if hp.init_from is None
                                            else ctx.load_stage_model(hp.init_from)))

    def encode(split: str) -> list[Any]:
        rows = ctx.splits[split]
        return encode_pairs(tokenizer, [make_input(e) for e in rows], [e.chosen for e in rows], max_input_tokens,
                            ctx.source.max_response_tokens)

    module = SFTModule(model, hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps, prefix=name,
                       compile=ctx.model_spec.compile_training)
    collate = partial(collate_sft, pad_id=tokenizer.pad_token_id)
    trainer = ctx.fitter.fit(module, hp, encode("train"), encode("val"), collate, metrics)
    model = ctx.adapters.merged(model)
    save_model(model, tokenizer, out)
    model.to(trainer.strategy.root_device)
    val = ctx.splits["val"][: hp.eval_samples]
    refs = [e.rejected if improver else e.chosen for e in val]
    metrics.update(ctx.sample_eval(name, model, tokenizer, [make_input(e) for e in val], val, refs,
                                   max_input_tokens))


def build_reward(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """R_P on the train split."""
    model = fit_reward_model(ctx, "reward", ctx.reward_spec, hp, ctx.splits["train"], metrics, ctx.adapters)
    model.save(out)


def fit_reward_model(ctx: StageContext, name: str, spec: RewardSpec, hp: Any, train_rows: list[PreferenceExample],
                     metrics: dict[str, float], adapters: Adapters) -> RewardModel:
    """Train a scalar reward model r(x, y) on (y_w > y_l) pairs of `train_rows` with `adapters`, validated on the
    val split."""
    model = ctx.new_reward_model(spec, adapters)
    module = RewardModule(model, prefix=name, **preference_training(hp))
    ctx.fitter.fit(module, hp, reward_items(ctx, model, train_rows), reward_items(ctx, model, ctx.splits["val"]),
                   partial(collate_groups, pad_id=model.pad_id()), metrics)
    model.backbone = adapters.merged(model.backbone)
    return model


def reward_items(ctx: StageContext, model: RewardModel, rows: list[PreferenceExample]) -> list[tuple[list[int], ...]]:
    """(chosen, rejected) encodings of `x = policy_input(prompt)` with each response."""
    inputs = [ctx.policy_input(e) for e in rows]
    return list(zip(model.encode(inputs, [e.chosen for e in rows]),
                    model.encode(inputs, [e.rejected for e in rows]), strict=True))


def build_gap_reward(ctx: StageContext, out: Path, metrics: dict[str, float], *, gap_loss: str,
                     hp: DictConfig) -> None:
    """R_PIT: R_P's difference (`rp_difference`, nothing to train) or a gap model trained on the train split."""
    if gap_loss == "rp_difference":
        record_gap_difference(ctx, out, metrics)
    else:
        fit_gap_model(ctx, out, metrics, gap_loss, hp)


def fit_gap_model(ctx: StageContext, out: Path, metrics: dict[str, float], gap_loss: str, hp: DictConfig) -> None:
    """R_PIT trained with Eq. 2 (`full`, `residual`, `ensemble`) or its single term (`single`).

    `residual` trains h in g = R_P(x, y) - R_P(x, y_ref) + h(x, y_ref, y): R_P's differences are fixed offsets
    of the four groups, and h's head starts at zero, so training starts from `rp_difference`. `ensemble` trains
    R_PIT as `full` does and scores with the mean of it and R_P's difference.
    """
    residual = gap_loss == "residual"
    model = ctx.new_reward_model(ctx.reward_spec, ctx.adapters)
    if residual:
        model.zero_head()
    loss = "full" if gap_loss in COMBINED_GAPS else gap_loss
    module = GapRewardModule(model, loss, prefix="gap_reward", **preference_training(hp))
    pad_id = model.pad_id()
    if residual:
        reward = load_reward_model(ctx.artifact("reward"))

        def items(rows: list[PreferenceExample]) -> list[Any]:
            return list(zip(gap_items(ctx, model, rows), gap_offsets(ctx, reward, rows), strict=True))

        collate = partial(collate_groups_with_offsets, pad_id=pad_id)
    else:
        items, collate = partial(gap_items, ctx, model), partial(collate_groups, pad_id=pad_id)
    ctx.fitter.fit(module, hp, items(ctx.splits["train"]), items(ctx.splits["val"]), collate, metrics)
    model.backbone = ctx.adapters.merged(model.backbone)
    save_gap(out, gap_loss, model, reward_dir=ctx.artifact("reward") if gap_loss in COMBINED_GAPS else None)
    if gap_loss == "ensemble":   # the trained part's val metrics are above; these are of the mean the PPO uses
        metrics.update({f"ensemble_{k}": v for k, v in gap_ordering(ctx, out).items()})


def record_gap_difference(ctx: StageContext, out: Path, metrics: dict[str, float]) -> None:
    """`rp_difference`: nothing to train; record how R_P's differences order the four combinations on val."""
    save_gap(out, "rp_difference", None, reward_dir=ctx.artifact("reward"))
    metrics.update(gap_ordering(ctx, out))


def gap_ordering(ctx: StageContext, out: Path) -> dict[str, float]:
    """`val_acc_*`: how the gap scorer saved in `out` orders the four (response, reference) combinations on val."""
    gap = load_gap(out, ctx.source.templates)
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
