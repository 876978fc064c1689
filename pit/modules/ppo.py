"""PPO for a causal LM against any reward function of text (R_P, R_PIT, the oracle), as a Lightning module.

Each training step takes a batch of prompts, samples responses with the shared generator (KV cache,
no grad), scores them, computes KL-penalised token rewards against the frozen reference, GAE advantages
and returns, then runs `ppo_epochs` passes of minibatch updates with manual optimization. The value
head shares the policy's trunk. The math lives in `pit.modules.ppo_math`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pit.data.encode import encode_inputs, pad_rows
from pit.errors import TrainingDiverged
from pit.models.factory import disable_dropout
from pit.models.generate import Sampling, input_budget, sample
from pit.modules.optim import AdamWTraining, adamw_warmup_cosine
from pit.modules.ppo_config import PPOConfig
from pit.modules.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_penalized_rewards,
    masked_entropy,
    masked_whiten,
    token_logprobs,
)

RewardFn = Callable[[list["Rollout"], list[str], list[list[int]]], torch.Tensor]   # (items, texts, token ids)
TableFn = Callable[[str, list[str], list[list[Any]]], None]   # (key, columns, rows), e.g. Tracker.log_table
PROGRESS_BAR = ("reward_mean", "kl")   # the iteration metrics shown on the stage's progress bar


@dataclass
class Rollout:
    """One prompt of a PPO batch: what the policy reads, the raw prompt, and (for PIT) the reference response."""

    input_text: str
    prompt: str
    reference: str | None = None


@dataclass
class RolloutBatch:
    """What one iteration's rollout leaves for the updates: tokens, masks, scores and the old policy's numbers."""

    ids: torch.Tensor
    mask: torch.Tensor
    resp_mask: torch.Tensor
    prompt_len: int
    texts: list[str]
    ended: torch.Tensor
    scores: torch.Tensor
    old_logp: torch.Tensor
    old_values: torch.Tensor | None   # None without a critic (advantage: group)
    advantages: torch.Tensor
    returns: torch.Tensor
    kl: torch.Tensor
    gen_seconds: float


class PPOModule(AdamWTraining, L.LightningModule):
    """Optimises `policy` to maximise `reward_fn(items, responses) - β·KL(policy ‖ reference)`.

    The reward function receives the batch's `Rollout`s back with the decoded responses and their token ids (up
    to, not including, EOS), so R_PIT can also see each reference response, and a reward model that shares the
    policy's tokenizer reads the sampled ids instead of re-encoding the text. `scorers` are the networks it runs
    (a plain tuple, so not submodules: they stay out of the optimizer, checkpoints and DDP), moved to the policy's
    device when fitting starts. Every `table_every` iterations, `table_rows` rollouts go to `log_table` (a W&B
    table). Each iteration's metrics go to Lightning's loggers (which keep every `log_every_n_steps`-th; reward and
    KL also to the progress bar). Checkpoints carry the KL coefficient and the history, not the frozen reference.
    `reference=None`: the policy is a LoRA model and the reference is that model with its adapters switched off.
    Dropout is off in the policy, so the old and new log-probs of an update differ only by the update.
    """

    def __init__(self, policy: PreTrainedModel, reference: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase,
                 reward_fn: RewardFn, sampling: Sampling, max_input_tokens: int, config: PPOConfig, prefix: str,
                 total_steps: int, scorers: tuple[nn.Module, ...] = (), log_table: TableFn | None = None,
                 table_every: int = 0, table_rows: int = 0, fused_optimizer: bool = False):
        super().__init__()
        self.automatic_optimization, self.fused_optimizer = False, fused_optimizer
        self.policy, self.reference, self.tokenizer, self.reward_fn = policy, reference, tokenizer, reward_fn
        disable_dropout(policy)
        if reference is not None:
            reference.requires_grad_(False).eval()
        # `group`: the leave-one-out baseline replaces the critic; a head outside every loss would stop DDP
        # ("parameters that were not used"), so there is none
        self.value_head = nn.Linear(policy.config.hidden_size, 1) if config.advantage == "gae" else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.max_input_tokens = input_budget(policy, max_input_tokens, sampling.max_new_tokens)
        self.sampling, self.config, self.prefix = sampling, config, prefix
        self.logit_temperature = sampling.temperature if sampling.temperature > 0 else 1.0
        self.total_steps = total_steps
        self.kl_controller = (AdaptiveKLController(config.init_beta, config.target_kl, config.kl_horizon)
                              if config.target_kl is not None else FixedKLController(config.init_beta))
        self.scorers = scorers   # networks `reward_fn` runs: kept out of the optimizer, moved to our device
        self.log_table, self.table_every, self.table_rows = log_table, table_every, table_rows
        self.history: list[dict[str, float]] = []

    @property
    def critic(self) -> bool:
        """Whether advantages come from a learned value head (GAE) rather than the group baseline."""
        return self.value_head is not None

    def on_fit_start(self) -> None:
        for scorer in self.scorers:
            scorer.requires_grad_(False).to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the KL coefficient and the iteration history; leave out the frozen reference (its stage has it)."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("reference.")}
        checkpoint["ppo"] = {"beta": self.kl_controller.beta, "history": self.history}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.reference is not None:
            checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})
        self.kl_controller.beta = checkpoint["ppo"]["beta"]
        self.history = checkpoint["ppo"]["history"]

    def _forward(self, model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int,
                 with_values: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs, logits and values of the response tokens `ids[:, prompt_len:]` (positions follow the mask).

        The logits are divided by the sampling temperature, so the log-probs are those of the distribution the
        rollouts were drawn from (on-policy at any T). The LM head runs only on the positions that predict
        response tokens (`logits_to_keep`), not the prompt.
        """
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = ids.shape[1] - prompt_len + 1
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=with_values,
                    logits_to_keep=keep)
        logits = out.logits[:, -keep:-1] / self.logit_temperature
        values = self.value_head(out.hidden_states[-1][:, prompt_len - 1:-1].float()).squeeze(-1) if with_values \
            else None
        return token_logprobs(logits, ids[:, prompt_len:]), logits, values

    def _reference_logprobs(self, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        if self.reference is not None:
            return self._forward(self.reference, ids, mask, prompt_len, with_values=False)[0]
        with self.policy.disable_adapter():
            return self._forward(self.policy, ids, mask, prompt_len, with_values=False)[0]

    def training_step(self, batch: list[Rollout], batch_idx: int) -> None:
        """One PPO iteration: sample and score a rollout batch, then `ppo_epochs` passes of minibatch updates."""
        if not self.critic:   # the loader gives batch_size / group_size inputs; each is sampled group_size times
            batch = [item for item in batch for _ in range(self.config.group_size)]
        rollout = self._rollout(batch)
        stats = self._update(rollout, batch_idx)
        self._log(batch, rollout, stats, batch_idx)

    def _rollout(self, batch: list[Rollout]) -> RolloutBatch:
        """Sample responses, score them, and compute old log-probs, values, KL-penalised rewards and advantages."""
        cfg, start = self.config, time.perf_counter()
        rows = encode_inputs(self.tokenizer, [item.input_text for item in batch], self.max_input_tokens)
        prompt_ids, prompt_mask = pad_rows(rows, self.tokenizer.pad_token_id, self.device, left=True)
        response, response_mask = sample(self.policy, prompt_ids, prompt_mask, self.sampling,
                                         self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
        gen_seconds = time.perf_counter() - start
        texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)
        ended = (response == self.tokenizer.eos_token_id).any(1)
        lengths = (response_mask.sum(1) - ended.long()).tolist()
        response_ids = [row[:n] for row, n in zip(response.tolist(), lengths, strict=True)]
        scores = self.reward_fn(batch, texts, response_ids).to(self.device, torch.float32)
        if cfg.no_eos_penalty is not None:
            scores = torch.where(ended, scores, torch.full_like(scores, cfg.no_eos_penalty))
        ids = torch.cat([prompt_ids, response], 1)
        mask = torch.cat([prompt_mask, response_mask], 1)
        resp_mask, prompt_len = response_mask.float(), prompt_ids.shape[1]
        with torch.no_grad():
            old_logp, _, old_values = self._forward(self.policy, ids, mask, prompt_len, with_values=self.critic)
            ref_logp = self._reference_logprobs(ids, mask, prompt_len)
            rewards, kl = kl_penalized_rewards(scores, old_logp, ref_logp, resp_mask, self.kl_controller.beta)
            if self.critic:
                advantages, returns = gae(rewards, old_values, resp_mask, cfg.gamma, cfg.lam)
            else:
                advantages = returns = group_advantages(rewards, resp_mask, cfg.group_size)
            advantages = masked_whiten(advantages, resp_mask)
        return RolloutBatch(ids, mask, resp_mask, prompt_len, texts, ended, scores, old_logp, old_values, advantages,
                            returns, kl, gen_seconds)

    def _update(self, r: RolloutBatch, batch_idx: int) -> dict[str, float]:
        """`ppo_epochs` passes of clipped policy + value updates over random minibatches; mean statistics."""
        cfg = self.config
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        stats: dict[str, list[torch.Tensor]] = {}
        n, start = r.ids.shape[0], time.perf_counter()
        for _ in range(cfg.ppo_epochs):
            for chunk in torch.randperm(n, device=self.device).chunk(cfg.minibatches):
                logp, logits, values = self._forward(self.policy, r.ids[chunk], r.mask[chunk], r.prompt_len,
                                                     with_values=self.critic)
                m = r.resp_mask[chunk]
                pg = clipped_policy_loss(logp, r.old_logp[chunk], r.advantages[chunk], m, cfg.clip)
                entropy = masked_entropy(logits, m)
                step = {"policy_loss": pg.loss, "clip_fraction": pg.clip_fraction, "approx_kl": pg.approx_kl,
                        "entropy": entropy}
                loss = pg.loss - cfg.entropy_coef * entropy
                if values is not None:   # the critic's loss; no value statistics without one
                    vf, vf_clipped = clipped_value_loss(values, r.old_values[chunk], r.returns[chunk], m,
                                                        cfg.value_clip)
                    loss = loss + cfg.value_coef * vf
                    step["value_loss"] = vf
                    if vf_clipped is not None:   # `value_clip: null` clips nothing: no fraction to log
                        step["value_clip_fraction"] = vf_clipped
                if not torch.isfinite(loss):
                    parts = ", ".join(f"{k} {step[k].item()}" for k in ("policy_loss", "value_loss") if k in step)
                    raise TrainingDiverged(f"{self.prefix}: non-finite PPO loss at iteration {batch_idx} ({parts}); "
                                           f"the stage stops, its checkpoints stay for a rerun. Lower "
                                           f"train.<stage>.ppo.lr or raise ppo.init_beta")
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.configure_gradient_clipping(optimizer, cfg.max_grad_norm, "norm")
                optimizer.step()
                for key, value in step.items():
                    stats.setdefault(key, []).append(value.detach())
        scheduler.step()
        # one device-to-host copy per iteration, not one per statistic and minibatch
        names, values = list(stats), torch.stack([torch.stack(v).float().mean() for v in stats.values()]).tolist()
        means = dict(zip(names, values, strict=True))
        means["train_tokens_per_s"] = r.resp_mask.sum().item() * cfg.ppo_epochs / max(time.perf_counter() - start,
                                                                                        1e-9)
        return means

    def _log(self, batch: list[Rollout], r: RolloutBatch, stats: dict[str, float], batch_idx: int) -> None:
        """Step the KL controller with the all-rank KL and episode count; record and log the iteration."""
        n = len(batch)
        mean_kl = self.trainer.strategy.reduce(r.kl.sum(1).mean(), reduce_op="mean").item()   # one β for all ranks
        beta = self.kl_controller.update(mean_kl, n * self.trainer.world_size)
        metrics = {"reward_mean": r.scores.mean().item(), "reward_std": r.scores.std().item() if n > 1 else 0.0,
                   "kl": mean_kl, "beta": beta, "response_length": r.resp_mask.sum(1).mean().item(),
                   "ended_with_eos": r.ended.float().mean().item(),
                   "gen_tokens_per_s": r.resp_mask.sum().item() / max(r.gen_seconds, 1e-9), **stats}
        if r.old_values is not None:
            metrics["explained_variance"] = explained_variance(r.old_values, r.returns, r.resp_mask).item()
        self.history.append(metrics)
        if self.log_table is not None and self.table_every and batch_idx % self.table_every == 0:
            rows = [[batch_idx, item.input_text, text, score, bool(end)]
                    for item, text, score, end in zip(batch, r.texts, r.scores.tolist(), r.ended.tolist(), strict=True)]
            self.log_table(f"{self.prefix}/rollouts", ["iteration", "input", "response", "reward", "ended_with_eos"],
                           rows[: self.table_rows])
        logged = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for on_bar in (True, False):   # reward and KL also on the progress bar
            self.log_dict({f"{self.prefix}/{k}": v for k, v in logged.items() if (k in PROGRESS_BAR) == on_bar},
                          prog_bar=on_bar, batch_size=n)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with two learning rates: `lr` for the policy, `value_lr` for the value head (when there is one)."""
        head = [] if self.value_head is None else [{"params": list(self.value_head.parameters()),
                                                    "lr": self.config.value_lr, "weight_decay": 0.0}]
        return adamw_warmup_cosine(self.policy, self.config.lr, 0.0, 0, self.total_steps, extra_groups=head,
                                   fused=self.fused_optimizer)
