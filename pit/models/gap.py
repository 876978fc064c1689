"""The gap reward R_PIT(x, y, y_ref) as a scorer of texts: a trained model, R_P's difference, or both (the sum of
R_P's difference and a residual trained on top of it, or the mean of R_P's difference and an R_PIT trained alone).

Every gap scorer exposes the networks it runs as `.models`, so a trainer can move them to its device, says
whether it can read a policy's token ids directly (`reads_tokens_of`), and names its trained part when it has
others (`trained_part`). Which scorer a run uses, and how it is trained and saved, is its `gap=` choice
(`pit.stages.gap`).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from pit.data.templates import Templates
from pit.models.reward import RewardModel


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

    def trained_part(self) -> TrainedGap | None:
        """The trained model scored alone, when this scorer adds something else to it (R_P's difference)."""
        return None


class RewardDifferenceGap(TrainedGap):
    """`gap=rp_difference`: no training, `g(y, y_ref) = R_P(x, y) - R_P(x, y_ref)`."""

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        return reward_difference(self.model, self.templates, prompts, responses, references, response_ids)


class ResidualGap(TrainedGap):
    """`gap=residual`: `g = R_P(x, y) - R_P(x, y_ref) + h(x, y_ref, y)`.

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

    def trained_part(self) -> TrainedGap:
        return TrainedGap(self.model, self.templates)


class EnsembleGap(ResidualGap):
    """`gap=ensemble`: the mean of R_P's difference and an R_PIT trained with Eq. 2 on its own.

    Two critics trained differently (R_P scores each response on its own, R_PIT reads y with y_ref) err
    differently, so an error of either moves the reward half as much; the raw mean keeps their scale when their
    spreads are alike (`val_score_std` of each stage says whether they are).
    """

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        return super().score(prompts, responses, references, response_ids) / 2


def reward_difference(reward: RewardModel, templates: Templates, prompts: list[str], responses: list[str],
                      references: list[str], response_ids: list[list[int]] | None = None) -> torch.Tensor:
    """`R_P(x, y) - R_P(x, y_ref)` for each row (responses may come as the policy's ids; references are text)."""
    inputs = [templates.policy_input(p) for p in prompts]
    if response_ids is not None:
        return reward.score(inputs, responses, response_ids) - reward.score(inputs, references)
    both = reward.score(inputs + inputs, responses + references)
    return both[: len(prompts)] - both[len(prompts):]
