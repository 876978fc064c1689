"""The `peft=` choice: train full weights (`none`) or LoRA adapters on frozen weights (`lora`, via `peft`).

With LoRA every trained network (SFT policies, PPO policies, reward backbones) keeps its weights frozen and
trains low-rank adapters; optimizer state shrinks to the adapters. A stage's artifact stays a plain model
(adapters merged), so every consumer loads it as before. A PPO stage also saves its adapters on their own
(`adapter/`), and its KL reference is its base with the adapters switched off: no second copy in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"


class FullWeights:
    """`peft=none`: every weight trains; `wrap` and `merged` change nothing."""

    enabled = False

    def wrap(self, model: Any, adapter_dir: Path | None = None) -> Any:
        return model

    def merged(self, model: Any) -> Any:
        return model


class LoRA:
    """`peft=lora`: low-rank adapters of rank `r` (scale `alpha / r`) on `target_modules` (null: peft's default
    for the architecture, e.g. `c_attn` for GPT-2, `q_proj`/`v_proj` for Llama, `query`/`value` for BERT)."""

    enabled = True

    def __init__(self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules: list[str] | None = None):
        self.r, self.alpha, self.dropout, self.target_modules = r, alpha, dropout, target_modules

    def wrap(self, model: Any, adapter_dir: Path | None = None) -> Any:
        """Freeze `model` and add fresh adapters, or trainable adapters saved in `adapter_dir` (a PPO round's)."""
        from peft import LoraConfig, PeftModel, get_peft_model

        if adapter_dir is not None:
            return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
        task = "CAUSAL_LM" if model.can_generate() else None
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=self.target_modules, task_type=task)
        return get_peft_model(model, config)

    def merged(self, model: Any) -> Any:
        """The plain model with the adapters folded into its weights."""
        return model.merge_and_unload()
