"""The gap reward R_PIT(x, y, y_ref) as a scorer of texts: a trained model, R_P's difference, or both (residual).

Every gap scorer exposes the networks it runs as `.models`, so a trainer can move them to its device, and says
whether it can read a policy's token ids directly (`reads_tokens_of`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from pit.data.templates import Templates
from pit.models.reward import RewardModel, load_reward_model

GAP_META = "gap_reward.json"


class TrainedGap:
    """`R_PIT(x, y, y_ref)`: a reward model reading the improver input `(x, y_ref)` and the response `y`."""

    def __init__(self, model: RewardModel, templates: Templates):
        self.model, self.templates = model, templates
        self.models: tuple[RewardModel, ...] = (model,)

    def reads_tokens_of(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        return all(m.reads_tokens_of(tokenizer) for m in self.models)

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        inputs = [self.templates.improver_input(p, r) for p, r in zip(prompts, references, strict=True)]
        return self.model.score(inputs, responses, response_ids)


class RewardDifferenceGap(TrainedGap):
    """`objective.gap_loss=rp_difference`: no training, `g(y, y_ref) = R_P(x, y) - R_P(x, y_ref)`."""

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        return reward_difference(self.model, self.templates, prompts, responses, references, response_ids)


class ResidualGap(TrainedGap):
    """`objective.gap_loss=residual`: `g = R_P(x, y) - R_P(x, y_ref) + h(x, y_ref, y)`.

    `h` (the trained model) reads the improver input like R_PIT and starts at zero, so before training the gap is
    R_P's difference; Eq. 2 then teaches it only what R_P's difference gets wrong about gaps.
    """

    def __init__(self, residual: RewardModel, reward: RewardModel, templates: Templates):
        super().__init__(residual, templates)
        self.reward = reward
        self.models = (residual, reward)

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        difference = reward_difference(self.reward, self.templates, prompts, responses, references, response_ids)
        return difference + super().score(prompts, responses, references, response_ids)


def reward_difference(reward: RewardModel, templates: Templates, prompts: list[str], responses: list[str],
                      references: list[str], response_ids: list[list[int]] | None = None) -> torch.Tensor:
    """`R_P(x, y) - R_P(x, y_ref)` for each row (responses may come as the policy's ids; references are text)."""
    inputs = [templates.policy_input(p) for p in prompts]
    if response_ids is not None:
        return reward.score(inputs, responses, response_ids) - reward.score(inputs, references)
    both = reward.score(inputs + inputs, responses + references)
    return both[: len(prompts)] - both[len(prompts):]


def save_gap(directory: Path, model: RewardModel | None, reward_dir: Path | None) -> None:
    """A gap model's files: the trained model (`full`, `single`, `residual`) and/or the R_P artifact it adds."""
    if model is not None:
        model.save(directory)
    (directory / GAP_META).write_text(json.dumps({"reward_dir": str(reward_dir) if reward_dir else None,
                                                  "trained": model is not None}))


def load_gap(directory: Path, templates: Templates) -> TrainedGap:
    """The gap scorer a `gap_reward` stage saved."""
    meta = json.loads((directory / GAP_META).read_text())
    reward = load_reward_model(Path(meta["reward_dir"])) if meta["reward_dir"] is not None else None
    if reward is None:
        return TrainedGap(load_reward_model(directory), templates)
    if not meta.get("trained", False):   # artifacts from before `residual` existed are R_P differences
        return RewardDifferenceGap(reward, templates)
    return ResidualGap(load_reward_model(directory), reward, templates)
