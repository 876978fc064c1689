"""R_PIT: scalar gap for (x, y, y_ref) read through the improver template, trained with Eq. 2 (or one term of it)."""

from __future__ import annotations

from typing import Any

from pit.models.reward import RewardModel
from pit.modules.preference import PreferenceModule
from pit.modules.preference_losses import GAP_COMPARISONS, GAP_LOSSES

# (response, reference) of each group: "wl" scores y = y_w against y_ref = y_l.
GAP_GROUPS = ("wl", "ww", "ll", "lw")


class GapRewardModule(PreferenceModule):
    """The four combinations of a pair in one forward pass; logs the accuracy of all five orderings of Eq. 2."""

    def __init__(self, reward_model: RewardModel, gap_loss: str, **training: Any):
        """`gap_loss`: a key of `GAP_LOSSES` (`objective.gap_loss` is validated once, by `pit.pipeline.Objective`)."""
        super().__init__(reward_model, GAP_GROUPS, GAP_LOSSES[gap_loss], GAP_COMPARISONS, **training)
