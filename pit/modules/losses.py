"""Pure loss functions, unit-tested against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pit.data.encode import IGNORE


def response_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood over labelled positions, and how many there were.

    `logits[b, t]` predicts token `t + 1`; positions labelled IGNORE (prompt, padding) contribute nothing.
    Returning the sum and the count lets callers average over tokens across batches exactly.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    nll = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE, reduction="sum")
    return nll, (shifted_labels != IGNORE).sum()
