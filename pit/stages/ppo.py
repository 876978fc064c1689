"""The PPO stages (docs/design.md §2): RLHF of M_P against R_P (and of the compute-matched control), and each
curriculum round of M_PIT against R_PIT. Each trains with `PPOModule` and leaves the trained policy in `out`.
"""

from __future__ import annotations

import random
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pit.artifacts import write_jsonl
from pit.data.schema import PreferenceExample
from pit.errors import ConfigError
from pit.evaluate.metrics import within_prompt_correlation
from pit.models.factory import save_model
from pit.models.gap import RewardDifferenceGap, TrainedGap
from pit.models.generate import Sampling, generate_texts
from pit.models.lora import ADAPTER_DIR
from pit.modules.ppo import PPOModule, RewardFn, Rollout
from pit.modules.ppo_config import PPOConfig
from pit.stages.context import StageContext, reads


@reads(lambda c, *, name, hp, start: ("tokenizer", start, "reward"))
def build_rlhf_policy(ctx: StageContext, out: Path, metrics: dict[str, float], *, name: str, hp: DictConfig,
                      start: str) -> None:
    """PPO of the policy `start` against R_P(x, y) on the train prompts, KL-regularised towards `start` (M_P's
    RLHF, and the compute-matched control's)."""
    source, tokenizer = ctx.source, ctx.tokenizer()
    reward = ctx.reward_model("reward")
    same_tokens = reward.reads_tokens_of(tokenizer)

    def reward_fn(batch: list[Rollout], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return reward.score([item.input_text for item in batch], responses, ids if same_tokens else None)

    rollouts = [Rollout(ctx.policy_input(e), e.prompt) for e in ctx.splits["train"]]
    policy = train_ppo(ctx, name, hp, start, start, tokenizer, rollouts, reward_fn, (reward,),
                       source.max_prompt_tokens, out, metrics)
    val = ctx.splits["val"][: hp.eval_samples]
    metrics.update(ctx.sample_eval(name, policy, tokenizer, [ctx.policy_input(e) for e in val], val,
                                   [e.chosen for e in val], source.max_prompt_tokens))


@reads(lambda c, *, name, hp, reference_source, init_from: (
    "tokenizer", "gap_reward", *c.gap.reads, init_from, c.roles.improver_base, c.roles.policy,
    "reward" if c.has("reward") else None))   # R_P: its oracle correlation beside R_PIT's
def build_pit_round(ctx: StageContext, out: Path, metrics: dict[str, float], *, name: str, hp: DictConfig,
                    reference_source: str, init_from: str) -> None:
    """One curriculum round: PPO of M_PIT against R_PIT(x, y, y_ref), KL-regularised towards M_PIT's start.

    References come from the dataset (`train.pit_rl.dataset_references`: the rejected response by default, the
    chosen one too when listed) or are samples of M_P on as many train prompts as PPO will use, drawn once and
    saved with the round as `references.jsonl`.
    """
    source, tokenizer = ctx.source, ctx.tokenizer()
    gap = ctx.gap.load(ctx, ctx.artifact("gap_reward"))
    train = ctx.splits["train"]
    if reference_source == "dataset":
        pairs = [(e, getattr(e, field)) for e in train for field in hp.dataset_references]
    else:
        inputs = hp.iterations * ppo_config(hp).inputs_per_iteration(hp.batch_size)
        used = random.Random(ctx.seed).sample(train, min(len(train), inputs))
        sampling = Sampling(max_new_tokens=source.max_response_tokens, temperature=hp.reference_temperature,
                            batch_size=ctx.eval_sampling.batch_size)
        pairs = list(zip(used, policy_samples(ctx, used, sampling, "references from M_P"), strict=True))
        write_jsonl(out / "references.jsonl", [{"prompt": e.prompt, "reference": ref} for e, ref in pairs])
    rollouts = [Rollout(source.templates.improver_input(e.prompt, ref), e.prompt, ref) for e, ref in pairs]
    same_tokens = gap.reads_tokens_of(tokenizer)

    def reward_fn(batch: list[Rollout], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return gap.score([item.prompt for item in batch], responses, [item.reference or "" for item in batch],
                         ids if same_tokens else None)

    val = ctx.splits["val"][: hp.eval_samples]
    drafts = policy_samples(ctx, val, ctx.eval_sampling, "M_P's val drafts") if ctx.oracle is not None else []
    if drafts and init_from == ctx.roles.improver_base:   # the improver and the critics before any PPO of M_PIT
        improver = ctx.frozen_model(init_from)
        start = {**draft_eval(ctx, f"{name}/start", improver, val, drafts),
                 **gap_calibration(ctx, improver, gap, val, hp.temperature)}
        metrics.update({f"{key}_start": value for key, value in start.items()})
    ctx.release(ctx.roles.policy)   # M_P is not needed during PPO
    model = train_ppo(ctx, name, hp, init_from, ctx.roles.improver_base, tokenizer, rollouts, reward_fn,
                      gap.models, source.max_improver_tokens, out, metrics)
    metrics.update(ctx.sample_eval(name, model, tokenizer, [ctx.improver_input_of_rejected(e) for e in val], val,
                                   [e.rejected for e in val], source.max_improver_tokens))
    if drafts:
        metrics.update({**draft_eval(ctx, name, model, val, drafts), **gap_calibration(ctx, model, gap, val,
                                                                                         hp.temperature)})


def draft_eval(ctx: StageContext, name: str, improver: Any, rows: list[PreferenceExample],
               drafts: list[str]) -> dict[str, float]:
    """`val_draft_*`: the improver on M_P's own drafts of val prompts, decoded as every val sample is
    (`eval_sampling`, greedy like `evaluate.sampling` by default): the val mirror of the test Δ (evaluate improves
    y_0 = M_P(x)), where `val_oracle` improves the dataset's y_l."""
    inputs = [ctx.source.templates.improver_input(e.prompt, d) for e, d in zip(rows, drafts, strict=True)]
    found = ctx.sample_eval(f"{name}/drafts", improver, ctx.tokenizer(), inputs, rows, drafts,
                            ctx.source.max_improver_tokens)
    return {key.replace("val_", "val_draft_", 1): value for key, value in found.items()}


def gap_calibration(ctx: StageContext, improver: Any, gap: TrainedGap, rows: list[PreferenceExample],
                    temperature: float, samples: int = 4) -> dict[str, float]:
    """How well R_PIT (and R_P's difference) rank the improver's own samples: within-prompt correlation with the
    oracle of `samples` responses per val prompt (reference y_l), the signal PPO climbs. Measured after a round it
    is on samples PPO drew towards what that R_PIT rewards; before round 1 (`_start`) no PPO has seen either critic.

    The samples are seeded alike in every round, before and after it, and in every objective, so every gap loss is
    measured on the same draws of the same model, and before/after a round on paired draws.
    For `residual` and `ensemble`, `val_trained_oracle_corr` is the trained part alone.
    """
    source, device = ctx.source, next(improver.parameters()).device
    repeated = [e for e in rows for _ in range(samples)]
    sampling = Sampling(max_new_tokens=source.max_response_tokens, temperature=temperature or 1.0,
                        batch_size=ctx.eval_sampling.batch_size)
    label = "improver val samples"   # one seed for every round and objective: the same noise, paired comparisons
    texts = generate_texts(improver, ctx.tokenizer(), [ctx.improver_input_of_rejected(e) for e in repeated],
                           sampling, source.max_improver_tokens, label, seed=ctx.sampling_seed(label, of="M_PIT"))
    prompts, references = [e.prompt for e in repeated], [e.rejected for e in repeated]
    oracle = [ctx.oracle(p, t) for p, t in zip(prompts, texts, strict=True)]
    for model in gap.models:
        model.to(device)

    def correlation(scorer: TrainedGap) -> float:
        return within_prompt_correlation(scorer.score(prompts, texts, references).tolist(), oracle, samples)

    found = {"val_gap_oracle_corr": correlation(gap)}
    if trained := gap.trained_part():
        found["val_trained_oracle_corr"] = correlation(trained)
    if ctx.has("reward"):
        found["val_rp_oracle_corr"] = correlation(
            RewardDifferenceGap(ctx.reward_model("reward").to(device), source.templates))
    return found


def policy_samples(ctx: StageContext, rows: list[PreferenceExample], sampling: Sampling, label: str) -> list[str]:
    """One response of M_P (the RLHF policy when it ran, else the SFT policy) per row, on the stage's device, drawn
    from the pass's own seed (`label` is its purpose): what was loaded before changes no sample."""
    inputs, policy = [ctx.policy_input(e) for e in rows], ctx.roles.policy
    return generate_texts(ctx.frozen_model(policy), ctx.tokenizer(), inputs, sampling, ctx.source.max_prompt_tokens,
                          label, seed=ctx.sampling_seed(label, of=policy))


def ppo_config(hp: DictConfig) -> PPOConfig:
    """The PPO settings of a stage's `train.<stage>` block."""
    return PPOConfig(**OmegaConf.to_container(hp.ppo, resolve=True))


def train_ppo(ctx: StageContext, name: str, hp: DictConfig, init_from: str, reference: str, tokenizer: Any,
              rollouts: list[Rollout], reward_fn: RewardFn, scorers: tuple[torch.nn.Module, ...],
              max_input_tokens: int, out: Path, metrics: dict[str, float]) -> Any:
    """PPO from the weights of `init_from`, KL towards the frozen `reference` stage; saves the trained policy in
    `out` and returns it, on the training device.

    With LoRA the policy is the reference's weights plus adapters (fresh, or those of `init_from` when it is an
    earlier PPO round of the same reference) and the reference is that policy with its adapters off.
    """
    ctx.reseed()   # PPO starts from the same random state whether or not references were sampled before it
    adapters = ctx.adapters
    if adapters.enabled:
        adapter = None if init_from == reference else ctx.artifact(init_from) / ADAPTER_DIR
        if adapter is not None and not adapter.is_dir():
            raise ConfigError(f"{name} with peft=lora starts from {init_from}, which is neither its KL reference "
                              f"({reference}) nor a LoRA PPO round of it")
        policy, frozen = adapters.wrap(ctx.trainable(ctx.load_stage_model(reference)), adapter), None
    else:
        policy, frozen = ctx.trainable(ctx.load_stage_model(init_from)), ctx.frozen_model(reference)
        ctx.release(reference)   # PPO freezes and moves it as its own: no later pass may take it for pristine
    ppo = ppo_config(hp)
    sampling = Sampling(max_new_tokens=ctx.source.max_response_tokens, temperature=hp.temperature,
                        batch_size=hp.batch_size)
    module = PPOModule(policy, frozen, tokenizer, reward_fn, sampling, max_input_tokens, ppo, prefix=name,
                       total_steps=hp.iterations, scorers=scorers, log_table=ctx.tracker.log_table,
                       table_every=ctx.log_rollouts_every, table_rows=ctx.table_rows,
                       fused_optimizer=ctx.model_spec.fused_optimizer)
    loader = DataLoader(rollouts, batch_size=ppo.inputs_per_iteration(hp.batch_size), shuffle=True, drop_last=True,
                        collate_fn=list, generator=torch.Generator().manual_seed(ctx.seed))
    trainer = ctx.fitter.fit_stream(module, loader, None, hp.iterations, metrics,
                                    max_steps=hp.iterations * ppo.ppo_epochs * ppo.minibatches, val_every=None,
                                    gradient_clip_val=None)   # PPO clips its own gradients (ppo.max_grad_norm)
    tail = module.history[-max(1, len(module.history) // 10):]
    for key in ("reward_mean", "kl", "beta", "response_length", "explained_variance"):
        if key in tail[0]:   # no explained variance without a critic
            metrics[f"final_{key}"] = mean(h[key] for h in tail)
    if adapters.enabled:
        policy.save_pretrained(out / ADAPTER_DIR)
    policy = adapters.merged(policy)
    save_model(policy, tokenizer, out)
    return policy.to(trainer.strategy.root_device)
