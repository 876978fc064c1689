"""The supervised stages (docs/design.md §1–2): the tokenizer, SFT of M_P and M_PIT, and R_P (R_PIT's stage is its
`gap=` choice's, `pit.stages.gap`).

`fit_reward_model` also trains the judge's reward model (`pit.stages.judges`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pit.data.encode import collate_groups, collate_sft, encode_pairs
from pit.data.schema import PreferenceExample
from pit.models.factory import save_model
from pit.models.reward import RewardModel
from pit.modules.preference import RewardModule, preference_training
from pit.modules.sft import SFTModule
from pit.stages.context import Adapters, RewardSpec, StageContext, reads


@reads(lambda c: ())
def build_tokenizer(ctx: StageContext, out: Path, metrics: dict[str, float]) -> None:
    """Train (tiny model) or fetch (pretrained) the tokenizer once; every later stage loads this one."""
    texts = [t for e in ctx.splits["train"] for t in (ctx.policy_input(e), ctx.improver_input_of_rejected(e),
                                                       e.chosen)]
    tokenizer = ctx.model_spec.tokenizer(texts)
    tokenizer.save_pretrained(out)
    metrics["vocab_size"] = len(tokenizer)


@reads(lambda c, *, name, hp, improver: ("tokenizer", hp.init_from))
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
                       compile=ctx.model_spec.compile_training, fused_loss=ctx.model_spec.fused_loss,
                       fused_optimizer=ctx.model_spec.fused_optimizer)
    collate = partial(collate_sft, pad_id=tokenizer.pad_token_id)
    trainer = ctx.fitter.fit(module, hp, encode("train"), encode("val"), collate, metrics)
    model = ctx.adapters.merged(model)
    save_model(model, tokenizer, out)
    model.to(trainer.strategy.root_device)
    val = ctx.splits["val"][: hp.eval_samples]
    refs = [e.rejected if improver else e.chosen for e in val]
    metrics.update(ctx.sample_eval(name, model, tokenizer, [make_input(e) for e in val], val, refs,
                                   max_input_tokens))


@reads(lambda c, *, hp: ("tokenizer", c.reward_spec.init_from))
def build_reward(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """R_P on the train split."""
    model = fit_reward_model(ctx, "reward", ctx.reward_spec, hp, ctx.splits["train"], metrics, ctx.adapters)
    model.save(out)


def fit_reward_model(ctx: StageContext, name: str, spec: RewardSpec, hp: Any, train_rows: list[PreferenceExample],
                     metrics: dict[str, float], adapters: Adapters) -> RewardModel:
    """Train a scalar reward model r(x, y) on (y_w > y_l) pairs of `train_rows` with `adapters`, validated on the
    val split."""
    model = ctx.new_reward_model(spec, adapters)
    module = RewardModule(model, prefix=name, **preference_training(hp, ctx.model_spec))
    ctx.fitter.fit(module, hp, reward_items(ctx, model, train_rows), reward_items(ctx, model, ctx.splits["val"]),
                   partial(collate_groups, pad_id=model.pad_id()), metrics)
    model.backbone = adapters.merged(model.backbone)
    return model


def reward_items(ctx: StageContext, model: RewardModel, rows: list[PreferenceExample]) -> list[tuple[list[int], ...]]:
    """(chosen, rejected) encodings of `x = policy_input(prompt)` with each response."""
    inputs = [ctx.policy_input(e) for e in rows]
    return list(zip(model.encode(inputs, [e.chosen for e in rows]),
                    model.encode(inputs, [e.rejected for e in rows]), strict=True))
