"""Pure loss functions, unit-tested against hand-computed values."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

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


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, with (when `grads`) its gradients computed chunk
    by chunk in the forward pass: the [positions, vocabulary] logits exist one chunk at a time and are never kept."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                grads: bool) -> torch.Tensor:
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden) if grads and hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grads and weight.requires_grad else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk], targets[start:start + chunk]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            grad_logits = logits.sub_(lse[:, None]).exp_()   # softmax in place: d(lse - logit_y) = softmax - onehot
            grad_logits[torch.arange(len(y), device=y.device), y] -= 1
            if grad_hidden is not None:
                grad_hidden[start:start + chunk] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h.float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.float()
        return (None if grad_hidden is None else grad_hidden.mul_(scale.to(grad_hidden.dtype)),
                None if grad_weight is None else grad_weight.mul_(scale).to(ctx.weight_dtype), None, None, None)


def linear_response_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """`response_nll` of the logits `hidden @ weight.T` (an LM head without bias) computed from the hidden states of
    the labelled positions only, `chunk` positions at a time: the same sum and count (and gradients, to rounding),
    without the [batch, length, vocabulary] logits; under `no_grad` (validation) no gradient is computed at all.
    `hidden[b, t]` predicts token `t + 1`."""
    shifted_labels = labels[:, 1:]
    keep = shifted_labels != IGNORE
    return (_LinearCrossEntropy.apply(hidden[:, :-1][keep], weight, shifted_labels[keep], chunk,
                                      torch.is_grad_enabled()), keep.sum())
