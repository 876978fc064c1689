"""Supervised fine-tuning with the loss on response tokens only: `M_P` on (x, y_w), `M_PIT` on ((x, y_l), y_w)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel

from pit.models.factory import trunk_and_head
from pit.modules.losses import linear_response_nll, response_nll
from pit.modules.optim import AdamWTraining, adamw_warmup_cosine


class SFTModule(AdamWTraining, L.LightningModule):
    """Next-token cross-entropy averaged over response tokens; logs `<prefix>/train_loss`, `val_loss`, `val_ppl`."""

    def __init__(self, model: PreTrainedModel, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int, prefix: str, compile: bool = False, fused_loss: bool = False,
                 fused_optimizer: bool = False):
        super().__init__()
        self.model, self.prefix, self.fused_optimizer = model, prefix, fused_optimizer
        self.lr, self.weight_decay, self.warmup_steps, self.total_steps = lr, weight_decay, warmup_steps, total_steps
        self._val_sums = torch.zeros(2)
        self.val_metrics: dict[str, float] = {}
        # `fused_loss`: logits only at labelled positions, a chunk at a time (the full [batch, length, vocabulary]
        # logits of a 50k vocabulary dominate SFT's memory); the same loss and gradients to rounding
        if fused_loss:
            trunk_and_head(model)   # a head it does not know is refused before training starts
        self.fused_loss = fused_loss
        # `compile`: the training forward + loss through torch.compile (validation stays eager: no second graph)
        self._train_nll = torch.compile(self._nll) if compile else self._nll

    def _nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused_loss:   # and no mask on an unpadded batch: SDPA's causal (flash) path
            trunk, head = trunk_and_head(self.model)   # each call: a strategy may have replaced the parameters
            mask = None if bool(batch["attention_mask"].all()) else batch["attention_mask"]
            hidden = trunk(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
            return linear_response_nll(hidden, head, batch["labels"])
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return response_nll(logits, batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        nll, n_tokens = self._train_nll(batch)
        loss = nll / n_tokens.clamp(min=1)
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        nll, n_tokens = self._nll(batch)
        self._val_sums += torch.stack([nll.detach().float(), n_tokens.float()])

    def on_validation_epoch_end(self) -> None:
        nll, n_tokens = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum").tolist()
        loss = nll / max(n_tokens, 1.0)
        self.val_metrics = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
        for name, value in self.val_metrics.items():
            self.log(f"{self.prefix}/{name}", value, prog_bar=name == "val_loss")

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self.model, self.lr, self.weight_decay, self.warmup_steps, self.total_steps,
                                   fused=self.fused_optimizer)
