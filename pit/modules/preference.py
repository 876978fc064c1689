"""The Lightning modules of every scalar model trained on preference comparisons: R_P and the judge RM
(`RewardModule`, Bradley–Terry), R_PIT (`GapRewardModule`, Eq. 2 or one term of it).

A batch holds several named groups of texts for the same examples (R_P: chosen `w`, rejected `l`;
R_PIT: `wl`, `ww`, `ll`, `lw`), stacked group-major into one tensor so that a single forward pass
scores them all. The loss is a sum of Bradley–Terry terms over configured (higher, lower) pairs.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from pit.models.factory import disable_dropout
from pit.models.reward import RewardModel
from pit.modules.optim import AdamWTraining, adamw_warmup_cosine
from pit.modules.preference_losses import GAP_COMPARISONS, REWARD_COMPARISONS, comparison_accuracy, comparison_loss

REWARD_GROUPS = ("w", "l")
# (response, reference) of each group: "wl" scores y = y_w against y_ref = y_l.
GAP_GROUPS = ("wl", "ww", "ll", "lw")


def preference_training(hp: Any, spec: Any) -> dict[str, Any]:
    """The `PreferenceModule` training keywords of a `train.<stage>` config (R_P, R_PIT, the judge RM) and of the
    model spec's training settings (`compile_training`, `fused_optimizer`)."""
    return {"lr": hp.lr, "weight_decay": hp.weight_decay, "warmup_steps": hp.warmup_steps,
            "total_steps": hp.max_steps, "margin": hp.margin, "l2": hp.l2, "compile": spec.compile_training,
            "fused_optimizer": spec.fused_optimizer}


class PreferenceModule(AdamWTraining, L.LightningModule):
    """Trains `reward_model` so that each comparison's `higher` group outscores its `lower` group (dropout off).
    `compile`: the training forward through torch.compile (validation stays eager)."""

    def __init__(self, reward_model: RewardModel, groups: tuple[str, ...], comparisons: tuple[tuple[str, str], ...],
                 monitored: tuple[tuple[str, str], ...], lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int, prefix: str, margin: float = 0.0, l2: float = 0.0, compile: bool = False,
                 fused_optimizer: bool = False):
        super().__init__()
        self.reward_model, self.groups, self.prefix = disable_dropout(reward_model), groups, prefix
        self.fused_optimizer = fused_optimizer
        self._train_scores = torch.compile(self._scores) if compile else self._scores
        self.comparisons, self.monitored, self.margin, self.l2 = comparisons, monitored, margin, l2
        self.lr, self.weight_decay, self.warmup_steps, self.total_steps = lr, weight_decay, warmup_steps, total_steps
        self._val_scores: list[torch.Tensor] = []
        self.val_metrics: dict[str, float] = {}

    def _scores(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat = self.reward_model(batch["input_ids"], batch["attention_mask"]).float()
        if "offsets" in batch:   # fixed parts of the scores (a residual gap reward's R_P difference)
            flat = flat + batch["offsets"]
        return dict(zip(self.groups, flat.view(len(self.groups), -1), strict=True))

    def _loss(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = comparison_loss(scores, self.comparisons, self.margin)
        if self.l2:
            loss = loss + self.l2 * torch.stack(list(scores.values())).pow(2).mean()
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        scores = self._train_scores(batch)
        loss = self._loss(scores)
        n = scores[self.groups[0]].shape[0]
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True, batch_size=n)
        for name, value in comparison_accuracy(scores, self.monitored).items():
            self.log(f"{self.prefix}/train_{name}", value, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_scores = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._val_scores.append(torch.stack([self._scores(batch)[g].detach() for g in self.groups]))

    def on_validation_epoch_end(self) -> None:
        gathered = self.all_gather(torch.cat(self._val_scores, dim=1))   # [G, N], or [world, G, N] when distributed
        if gathered.dim() == 3:
            gathered = gathered.transpose(0, 1)
        scores = dict(zip(self.groups, gathered.reshape(len(self.groups), -1), strict=True))
        self.val_metrics = {"val_loss": self._loss(scores).item(), **{
            f"val_{k}": v for k, v in comparison_accuracy(scores, self.monitored).items()}}
        hi, lo = self.monitored[0]
        self.val_metrics.update(val_margin=(scores[hi] - scores[lo]).mean().item(),
                                val_score_mean=torch.stack(list(scores.values())).mean().item(),
                                val_score_std=torch.stack(list(scores.values())).std().item())
        for name, value in self.val_metrics.items():
            self.log(f"{self.prefix}/{name}", value, prog_bar=name == "val_loss")

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self.reward_model, self.lr, self.weight_decay, self.warmup_steps, self.total_steps,
                                   fused=self.fused_optimizer)


class RewardModule(PreferenceModule):
    """R_P: r(x, y) trained with -log σ(r(x, y_w) - r(x, y_l)). Each batch stacks the chosen texts, then the
    rejected ones; logs loss, accuracy, margin, reward mean/std."""

    def __init__(self, reward_model: RewardModel, **training: Any):
        super().__init__(reward_model, REWARD_GROUPS, REWARD_COMPARISONS, REWARD_COMPARISONS, **training)


class GapRewardModule(PreferenceModule):
    """R_PIT: g(x, y, y_ref) read through the improver template. The four combinations of a pair in one forward
    pass; logs the accuracy of all five orderings of Eq. 2."""

    def __init__(self, reward_model: RewardModel, comparisons: tuple[tuple[str, str], ...], **training: Any):
        """`comparisons`: the (higher, lower) groups the loss sums over (the `gap=` choice's; Eq. 2 is all five)."""
        super().__init__(reward_model, GAP_GROUPS, comparisons, GAP_COMPARISONS, **training)
