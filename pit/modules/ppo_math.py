"""The math of PPO for language models, as small pure functions over `[batch, response_tokens]` tensors.

Conventions: `mask` is 1 on response tokens up to and including EOS and 0 on padding after it (prompt
tokens never appear here: callers slice the response part). The sequence reward is added at the last
response token; every token pays the KL penalty `β · (log π − log π_ref)` (Ziegler et al. 2019; TRL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(x - mean) / std` over masked positions (unbiased variance); masked-out positions become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`log p(tokens[b, t])` under `logits[b, t]` (logits already aligned with the tokens they predict)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy of the policy over response tokens."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards `-β·(log π − log π_ref)`, plus the sequence score at each row's last response token.

    Returns (rewards, kl) with both zero outside the mask.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -beta * kl
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens, without a loop over time.

    δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t, A_t = Σ_{k≥t} (γλ)^{k−t} δ_k over masked k, returns = A + V.
    The sum is one matmul with the upper-triangular matrix of discounts (T is a few hundred at most).
    """
    values = values * mask
    next_values = F.pad(values[:, 1:], (0, 1))
    deltas = (rewards + gamma * next_values - values) * mask
    steps = torch.arange(rewards.shape[1], device=rewards.device)
    power = (steps.unsqueeze(0) - steps.unsqueeze(1)).to(rewards.dtype)          # [t, k] = k - t
    discounts = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0), torch.zeros_like(power))
    advantages = (deltas @ discounts.T) * mask
    return advantages, (advantages + values) * mask


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out baseline (RLOO; Ahmadian et al. 2024): each episode's return minus the mean return of the
    other `group_size − 1` samples of its input, at every response token; rows come in consecutive groups."""
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"group advantages need groups of >= 2 samples dividing the batch: {group_size=}, "
                         f"batch {rewards.shape[0]}")
    returns = (rewards * mask).sum(1).view(-1, group_size)
    baseline = (returns.sum(1, keepdim=True) - returns) / (group_size - 1)
    return (returns - baseline).reshape(-1, 1) * mask


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float) -> PolicyLoss:
    """PPO's clipped surrogate `max(−A·ρ, −A·clip(ρ, 1±ε))`, its clip fraction and an approx. KL (k3, Schulman)."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`½·max((V − R)², (clip(V, V_old ± ε) − R)²)` over response tokens, and the fraction clipped; `clip=None` is
    the plain squared error `½·(V − R)²`, and no fraction (None: nothing is clipped, so there is none to report)."""
    if clip is None:
        return 0.5 * masked_mean((values - returns) ** 2, mask), None
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    return loss, masked_mean((clipped_error > unclipped_error).float(), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`1 − Var(R − V) / Var(R)` over response tokens: 1 for a perfect critic, ≤ 0 for a useless one."""
    residual_var = masked_mean((returns - values - masked_mean(returns - values, mask)) ** 2, mask)
    return 1 - residual_var / masked_mean((returns - masked_mean(returns, mask)) ** 2, mask).clamp(min=1e-8)


class AdaptiveKLController:
    """β adapted towards a target KL (Ziegler et al. 2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)."""

    def __init__(self, init_beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = init_beta, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.beta *= 1 + error * n_steps / self.horizon
        return self.beta


class FixedKLController:
    """A constant β (`target_kl: null`)."""

    def __init__(self, init_beta: float):
        self.beta = init_beta

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.beta
