"""Bradley–Terry losses for the reward model R_P and the gap reward model R_PIT (paper Eq. 2), as pure functions.

Gap scores are named by (response, reference): `g["wl"] = R_PIT(x, y=y_w, y_ref=y_l)`, and so on for
`ww`, `ll`, `lw`. The paper's ordering is g(w,l) > g(w,w) ≈ g(l,l) > g(l,w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAP_COMPARISONS: tuple[tuple[str, str], ...] = (("wl", "ww"), ("wl", "ll"), ("wl", "lw"), ("ww", "lw"), ("ll", "lw"))
REWARD_COMPARISONS: tuple[tuple[str, str], ...] = (("w", "l"),)


def bradley_terry(higher: torch.Tensor, lower: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of `-log σ(higher - lower - margin)`: the negative log-likelihood that `higher` is preferred."""
    return -F.logsigmoid(higher - lower - margin).mean()


def comparison_loss(scores: dict[str, torch.Tensor], comparisons: tuple[tuple[str, str], ...],
                    margin: float = 0.0) -> torch.Tensor:
    """Sum of Bradley–Terry terms over `(higher, lower)` name pairs (Eq. 2 is the sum over its five pairs)."""
    return sum(bradley_terry(scores[hi], scores[lo], margin) for hi, lo in comparisons)


def comparison_accuracy(scores: dict[str, torch.Tensor], comparisons: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """Fraction of examples where each `higher` strictly beats `lower`: `acc_<higher>_gt_<lower>`."""
    return {f"acc_{hi}_gt_{lo}": (scores[hi] > scores[lo]).float().mean().item() for hi, lo in comparisons}
