"""AdamW with linear warm-up and cosine decay: the one optimizer recipe every training module shares."""

from __future__ import annotations

import math
from typing import Any

import torch


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear from 0 to 1 over warm-up, then cosine down to `min_ratio` at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_warmup_cosine(module: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                        total_steps: int, extra_groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Lightning `configure_optimizers` result; no weight decay on biases, norms and embeddings' 1-d params.

    `extra_groups` are further parameter groups with their own settings (PPO's value head and its learning rate);
    the schedule scales every group's learning rate alike.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}, *(extra_groups or [])]
    # not fused=True: Lightning's mixed-precision plugin refuses gradient clipping with a fused optimizer (seen on
    # an H100); the default multi-tensor (foreach) AdamW on CUDA
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
