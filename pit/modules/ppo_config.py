"""PPO settings: a plain dataclass, also the schema of `train.<stage>.ppo` in the config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PPOConfig:
    """PPO settings (defaults as in common RLHF practice for small models)."""

    lr: float = 1e-5
    ppo_epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    init_beta: float = 0.05
    target_kl: float | None = 6.0
    kl_horizon: int = 10_000
    max_grad_norm: float = 1.0
    no_eos_penalty: float | None = None
