"""R_P: scalar reward for (x, y), trained with the Bradley–Terry loss -log σ(r(x, y_w) - r(x, y_l))."""

from __future__ import annotations

from typing import Any

from pit.models.reward import RewardModel
from pit.modules.preference import PreferenceModule
from pit.modules.preference_losses import REWARD_COMPARISONS

REWARD_GROUPS = ("w", "l")


class RewardModule(PreferenceModule):
    """Each batch stacks the chosen texts, then the rejected ones; logs loss, accuracy, margin, reward mean/std."""

    def __init__(self, reward_model: RewardModel, **training: Any):
        super().__init__(reward_model, REWARD_GROUPS, REWARD_COMPARISONS, REWARD_COMPARISONS, **training)
