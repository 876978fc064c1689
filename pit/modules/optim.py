"""AdamW with linear warm-up and cosine decay: the one optimizer recipe every training module shares, and the
gradient clipping that goes with it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import Optimizer


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear from 0 to 1 over warm-up, then cosine down to `min_ratio` at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_warmup_cosine(module: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                        total_steps: int, extra_groups: list[dict[str, Any]] | None = None,
                        fused: bool = False) -> dict[str, Any]:
    """Lightning `configure_optimizers` result; no weight decay on biases, norms and embeddings' 1-d params.

    `extra_groups` are further parameter groups with their own settings (PPO's value head and its learning rate);
    the schedule scales every group's learning rate alike. `fused`: torch's fused AdamW (one kernel per step;
    `AdamWTraining` then clips the gradients), else the multi-tensor (foreach) one.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}, *(extra_groups or [])]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True if fused else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class AdamWTraining:
    """Mixin of the training LightningModules: with `fused_optimizer`, gradients are clipped here, over the
    optimizer's parameters as Lightning would, because Lightning refuses to clip for an optimizer that unscales in
    its step (fused AdamW). Exact without a gradient scaler (bf16, fp32); 16-mixed, FSDP and DeepSpeed are refused
    in preflight."""

    fused_optimizer: bool = False

    def configure_gradient_clipping(self, optimizer: Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        if not self.fused_optimizer:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)  # type: ignore[misc]
        elif gradient_clip_val:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
