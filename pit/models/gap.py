"""The gap reward R_PIT(x, y, y_ref) as a scorer of texts: a trained model, or the difference of R_P's rewards."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pit.data.templates import Templates
from pit.models.reward import RewardModel, load_reward_model

GAP_META = "gap_reward.json"


class TrainedGap:
    """`R_PIT(x, y, y_ref)`: a reward model reading the improver input `(x, y_ref)` and the response `y`.

    Both gap scorers expose the network they run as `.model`, so a trainer can move it to its device.
    """

    def __init__(self, model: RewardModel, templates: Templates):
        self.model, self.templates = model, templates

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        inputs = [self.templates.improver_input(p, r) for p, r in zip(prompts, references, strict=True)]
        return self.model.score(inputs, responses, response_ids)


class RewardDifferenceGap:
    """`objective.gap_loss=rp_difference`: no training, `g(y, y_ref) = R_P(x, y) - R_P(x, y_ref)`."""

    def __init__(self, model: RewardModel, templates: Templates):
        self.model, self.templates = model, templates

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        inputs = [self.templates.policy_input(p) for p in prompts]
        if response_ids is not None:   # the responses as the policy's ids; references are text
            return self.model.score(inputs, responses, response_ids) - self.model.score(inputs, references)
        both = self.model.score(inputs + inputs, responses + references)
        return both[: len(prompts)] - both[len(prompts):]


def save_gap(directory: Path, model: RewardModel | None, reward_dir: Path | None) -> None:
    """A trained gap model's files, or (rp_difference) a pointer to the R_P artifact it is computed from."""
    if model is not None:
        model.save(directory)
    (directory / GAP_META).write_text(json.dumps({"reward_dir": str(reward_dir) if reward_dir else None}))


def load_gap(directory: Path, templates: Templates) -> TrainedGap | RewardDifferenceGap:
    reward_dir = json.loads((directory / GAP_META).read_text())["reward_dir"]
    if reward_dir is not None:
        return RewardDifferenceGap(load_reward_model(Path(reward_dir)), templates)
    return TrainedGap(load_reward_model(directory), templates)
