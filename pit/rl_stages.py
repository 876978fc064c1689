"""The PPO stages: RLHF of M_P against R_P, and each curriculum round of M_PIT against R_PIT (DESIGN.md §2).

Stage bodies in the shape every stage has, `(pipeline, out, metrics)`: they read the pipeline's data, config
and finished artifacts, train with `PPOModule`, and leave the trained policy in `out`.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pit.artifacts import write_jsonl
from pit.data.schema import PreferenceExample
from pit.errors import ConfigError
from pit.models.factory import save_model
from pit.models.gap import load_gap
from pit.models.generate import Sampling, generate_texts
from pit.models.lora import ADAPTER_DIR
from pit.models.reward import load_reward_model
from pit.modules.ppo import PPOModule, RewardFn, Rollout
from pit.modules.ppo_config import PPOConfig
from pit.tracking import TABLE_ROWS

if TYPE_CHECKING:
    from pit.pipeline import Pipeline

def build_rlhf_policy(pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
    """PPO of M_P against R_P(x, y) on the train prompts, KL-regularised towards the SFT policy."""
    hp, source, tokenizer = pipeline.cfg.train.rlhf_policy, pipeline.source, pipeline.tokenizer()
    reward = load_reward_model(pipeline.artifact("reward"))
    same_tokens = reward.reads_tokens_of(tokenizer)

    def reward_fn(batch: list[Rollout], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return reward.score([item.input_text for item in batch], responses, ids if same_tokens else None)

    rollouts = [Rollout(pipeline.policy_input_of(e), e.prompt) for e in pipeline.splits["train"]]
    policy = train_ppo(pipeline, "rlhf_policy", hp, "sft_policy", "sft_policy", tokenizer, rollouts, reward_fn,
                       (reward,), source.max_prompt_tokens, out, metrics)
    val = pipeline.splits["val"][: hp.eval_samples]
    metrics.update(pipeline.sample_eval("rlhf_policy", policy, tokenizer, [pipeline.policy_input_of(e) for e in val],
                                        val, [e.chosen for e in val], source.max_prompt_tokens))


def build_pit_round(pipeline: Pipeline, name: str, reference_source: str, init_from: str, out: Path,
                    metrics: dict[str, float]) -> None:
    """One curriculum round: PPO of M_PIT against R_PIT(x, y, y_ref), KL-regularised towards M_PIT's SFT.

    References come from the dataset (each train pair gives two rollouts, `y_ref = y_l` and `y_ref = y_w`) or
    are samples of M_P on the train prompts, drawn once and saved with the round as `references.jsonl`.
    """
    hp, source, tokenizer = pipeline.cfg.train.pit_rl, pipeline.source, pipeline.tokenizer()
    gap = load_gap(pipeline.artifact("gap_reward"), source.templates)
    train = pipeline.splits["train"]
    if reference_source == "dataset":
        pairs = [(e, ref) for e in train for ref in (e.rejected, e.chosen)]
    else:
        pairs = list(zip(train, policy_samples(pipeline, train, hp.reference_temperature), strict=True))
        write_jsonl(out / "references.jsonl", [{"prompt": e.prompt, "reference": ref} for e, ref in pairs])
    rollouts = [Rollout(source.templates.improver_input(e.prompt, ref), e.prompt, ref) for e, ref in pairs]
    same_tokens = gap.model.reads_tokens_of(tokenizer)

    def reward_fn(batch: list[Rollout], responses: list[str], ids: list[list[int]]) -> torch.Tensor:
        return gap.score([item.prompt for item in batch], responses, [item.reference or "" for item in batch],
                         ids if same_tokens else None)

    model = train_ppo(pipeline, name, hp, init_from, "sft_pit", tokenizer, rollouts, reward_fn, (gap.model,),
                      source.max_improver_tokens, out, metrics)
    val = pipeline.splits["val"][: hp.eval_samples]
    metrics.update(pipeline.sample_eval(name, model, tokenizer, [pipeline.improver_input_of_rejected(e) for e in val],
                                        val, [e.rejected for e in val], source.max_improver_tokens))


def policy_samples(pipeline: Pipeline, rows: list[PreferenceExample], temperature: float) -> list[str]:
    """One response of M_P (the RLHF policy when it ran, else the SFT policy) per row, on the stage's device."""
    policy = pipeline.load_stage_model(pipeline.policy_stage).to(pipeline.device())
    sampling = Sampling(max_new_tokens=pipeline.source.max_response_tokens, temperature=temperature,
                        batch_size=pipeline.cfg.eval_sampling.batch_size)
    return generate_texts(policy, pipeline.tokenizer(), [pipeline.policy_input_of(e) for e in rows], sampling,
                          pipeline.source.max_prompt_tokens)


def train_ppo(pipeline: Pipeline, name: str, hp: DictConfig, init_from: str, reference: str, tokenizer: Any,
              rollouts: list[Rollout], reward_fn: RewardFn, scorers: tuple[torch.nn.Module, ...],
              max_input_tokens: int, out: Path, metrics: dict[str, float]) -> Any:
    """PPO from the weights of `init_from`, KL towards the frozen `reference` stage; saves the trained policy in
    `out` and returns it, on the training device.

    With LoRA the policy is the reference's weights plus adapters (fresh, or those of `init_from` when it is an
    earlier PPO round of the same reference) and the reference is that policy with its adapters off.
    """
    pipeline.seed()   # PPO starts from the same random state whether or not references were sampled before it
    adapters = pipeline.adapters
    if adapters.enabled:
        adapter = None if init_from == reference else pipeline.artifact(init_from) / ADAPTER_DIR
        if adapter is not None and not adapter.is_dir():
            raise ConfigError(f"{name} with peft=lora starts from {init_from}, which is neither its KL reference "
                              f"({reference}) nor a LoRA PPO round of it")
        policy, frozen = adapters.wrap(pipeline.trainable(pipeline.load_stage_model(reference)), adapter), None
    else:
        policy, frozen = pipeline.trainable(pipeline.load_stage_model(init_from)), pipeline.load_stage_model(reference)
    ppo = PPOConfig(**OmegaConf.to_container(hp.ppo, resolve=True))
    sampling = Sampling(max_new_tokens=pipeline.source.max_response_tokens, temperature=hp.temperature,
                        batch_size=hp.batch_size)
    module = PPOModule(policy, frozen, tokenizer, reward_fn, sampling, max_input_tokens, ppo, prefix=name,
                       total_steps=hp.iterations, scorers=scorers, log_table=pipeline.tracker.log_table,
                       table_every=pipeline.cfg.log_rollouts_every, table_rows=TABLE_ROWS)
    loader = DataLoader(rollouts, batch_size=hp.batch_size, shuffle=True, drop_last=True, collate_fn=list,
                        generator=torch.Generator().manual_seed(pipeline.cfg.seed))
    trainer = pipeline.fitter.fit_stream(module, loader, None, hp.iterations, metrics,
                                         max_steps=hp.iterations * ppo.ppo_epochs * ppo.minibatches, val_every=None,
                                         gradient_clip_val=None)   # PPO clips its own gradients (ppo.max_grad_norm)
    tail = module.history[-max(1, len(module.history) // 10):]
    for key in ("reward_mean", "kl", "beta", "response_length"):
        metrics[f"final_{key}"] = mean(h[key] for h in tail)
    if adapters.enabled:
        policy.save_pretrained(out / ADAPTER_DIR)
    policy = adapters.merged(policy)
    save_model(policy, tokenizer, out)
    return policy.to(trainer.strategy.root_device)
