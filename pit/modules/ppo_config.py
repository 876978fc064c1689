"""PPO settings: a plain dataclass, also the schema of `train.<stage>.ppo`; its defaults are the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from pit.errors import ConfigError


@dataclass
class PPOConfig:
    """PPO settings of one stage. Each field is documented once, below it, with its unit; the defaults here are
    the effective defaults (conf/config.yaml only overrides, e.g. `advantage: group` for rlhf_policy)."""

    lr: float = 1e-5
    """Learning rate of the policy (AdamW, cosine decay over the stage's iterations). Chosen on val for the tiny
    default: 1e-5 lifts M_P's val oracle 0.35 -> 0.53 in 40 iterations, 3e-6 only to 0.36; 1e-4 with β 0.05
    collapsed an earlier M_P (KL 190), R_P being exploitable."""

    value_lr: float = 3e-3
    """Learning rate of the value head (its own parameter group, no weight decay). A zero-initialised head at the
    policy's learning rate never learns, and the advantages would be whitened returns (explained variance at the
    end of the default's rlhf_policy: 0.39 at 3e-3, 0.24 at 1e-3, about 0 at the policy's lr)."""

    advantage: str = "gae"
    """`gae`: a learned critic, GAE over tokens. `group`: no critic; `group_size` samples per input, each scored
    against the mean of the others (RLOO-style); the stage's batch_size counts samples, so it holds
    batch_size / group_size inputs."""

    group_size: int = 4
    """Samples per input with `advantage: group` (at least 2)."""

    ppo_epochs: int = 4
    """Passes over each rollout batch."""

    minibatches: int = 4
    """Optimizer updates per pass: the rollout batch is split into this many minibatches."""

    clip: float = 0.2
    """PPO's ratio clip ε: the ratio π/π_old is clipped to [1 − ε, 1 + ε] (dimensionless)."""

    value_clip: float | None = None
    """Clip of the value update around the old values, in reward units; null: no clip. With a zero-initialised
    head and rewards of scale 2-5, a 0.2 clip holds the critic back for tens of iterations (measured: explained
    variance about 0 after 40); Engstrom et al. (2020) found value clipping no help."""

    value_coef: float = 0.1
    """Weight of the value loss in the total loss (its gradient also reaches the shared trunk at `lr`)."""

    entropy_coef: float = 0.0
    """Weight of the entropy bonus (nats per token) subtracted from the loss."""

    gamma: float = 1.0
    """Discount per response token."""

    lam: float = 0.95
    """GAE λ per response token (`advantage: gae`)."""

    init_beta: float = 0.2
    """KL coefficient β of the per-token penalty β·(log π − log π_ref), reward units per nat; fixed unless
    `target_kl` is set."""

    target_kl: float | None = None
    """Per-sequence KL (nats) the adaptive controller steers β towards; null keeps β fixed (the default, as TRL's
    PPOTrainer does: with 64 episodes per iteration the Ziegler controller barely moves β)."""

    kl_horizon: int = 10_000
    """Episodes (counted over all ranks) over which the adaptive controller closes a KL error."""

    max_grad_norm: float = 1.0
    """Gradient-norm (L2) clip of each update."""

    no_eos_penalty: float | None = None
    """Score, in reward units, given to responses that hit max_new_tokens without EOS; null: keep the reward's."""

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
