"""PPO settings: a plain dataclass, also the schema of `train.<stage>.ppo`; its defaults are the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from pit.errors import ConfigError


@dataclass
class PPOConfig:
    """PPO settings, each documented once here (the YAML only overrides).

    lr: learning rate of the policy (AdamW, cosine decay over the stage's iterations). Chosen on val for the tiny
        default: 1e-5 lifts M_P's val oracle 0.35 -> 0.53 in 40 iterations, 3e-6 only to 0.36; 1e-4 with β 0.05
        collapsed an earlier M_P (KL 190), R_P being exploitable.
    value_lr: learning rate of the value head (its own parameter group): a zero-initialised head at the policy's
        learning rate never learns, and the advantages would be whitened returns (explained variance at the end
        of the default's rlhf_policy: 0.39 at 3e-3, 0.24 at 1e-3, about 0 at the policy's lr).
    advantage: `gae` (a learned critic, GAE over tokens) or `group` (no critic: `group_size` samples per input, each
        scored against the mean of the others, RLOO-style; the stage's batch_size counts samples, so it holds
        batch_size / group_size inputs).
    group_size: samples per input with `advantage: group`.
    ppo_epochs: passes over each rollout batch; minibatches: updates per pass (batch split into this many).
    clip: PPO's ratio clip ε.
    value_clip: clip of the value update around the old values, in reward units; null (default): no clip. With a
        zero-initialised head and rewards of scale 2-5, a 0.2 clip holds the critic back for tens of iterations
        (measured: explained variance about 0 after 40); Engstrom et al. (2020) found value clipping no help.
    value_coef: weight of the value loss (its gradient also reaches the shared trunk at `lr`).
    entropy_coef: weight of the entropy bonus.
    gamma, lam: discount and GAE λ over response tokens.
    init_beta: KL coefficient β of the per-token penalty β·(log π − log π_ref); fixed unless `target_kl` is set.
    target_kl: per-sequence KL (nats) the adaptive controller steers β towards; null keeps β fixed (the default,
        as TRL's PPOTrainer does: with 64 episodes per iteration the Ziegler controller barely moves β).
    kl_horizon: episodes over which the adaptive controller closes a KL error (counted over all ranks).
    max_grad_norm: gradient-norm clip of each update.
    no_eos_penalty: score given to responses that hit max_new_tokens without EOS (null: keep the reward's).
    """

    lr: float = 1e-5
    value_lr: float = 3e-3
    advantage: str = "gae"
    group_size: int = 4
    ppo_epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    value_clip: float | None = None
    value_coef: float = 0.1
    entropy_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    init_beta: float = 0.2
    target_kl: float | None = None
    kl_horizon: int = 10_000
    max_grad_norm: float = 1.0
    no_eos_penalty: float | None = None

    def __post_init__(self) -> None:
        if self.advantage not in ("gae", "group"):
            raise ConfigError(f"ppo.advantage={self.advantage!r}: expected 'gae' or 'group'")
        if self.advantage == "group" and self.group_size < 2:
            raise ConfigError(f"ppo.group_size={self.group_size}: a group baseline needs at least 2 samples per input")

    def inputs_per_iteration(self, batch_size: int) -> int:
        """Distinct inputs in a rollout batch of `batch_size` samples (`group`: each input sampled group_size times)."""
        group = self.group_size if self.advantage == "group" else 1
        if batch_size % group:
            raise ConfigError(f"batch_size={batch_size} must be a multiple of ppo.group_size={group} "
                              f"(advantage: group)")
        return batch_size // group
