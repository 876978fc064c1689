"""Model specs (one per `model=` config choice): each makes a tokenizer and a fresh model; artifacts reload here."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pit.errors import ConfigError
from pit.models.tokenizer import train_bpe_tokenizer

GENERATION_CACHES = ("dynamic", "static")


def checked_generation_cache(cache: str) -> str:
    if cache not in GENERATION_CACHES:
        raise ConfigError(f"model.generation_cache={cache!r}: choose one of {GENERATION_CACHES}")
    return cache


def set_generation_cache(model: PreTrainedModel, cache: str) -> PreTrainedModel:
    """How sampling keeps its KV cache: `dynamic` (grows token by token) or `static` (preallocated once; on GPUs our
    decode loop then replays its step as a CUDA graph). Both give the same tokens."""
    model.generation_config.cache_implementation = None if checked_generation_cache(cache) == "dynamic" else cache
    return model


class TinyCausalLM:
    """A small GPT-2/Llama-style model built from config, with a BPE tokenizer trained on the training split."""

    trust_remote_code = False

    def __init__(self, model_type: str = "gpt2", vocab_size: int = 512, config: dict[str, Any] | None = None,
                 gradient_checkpointing: bool = False, generation_cache: str = "dynamic",
                 compile_training: bool = False, fused_loss: bool = False, fused_optimizer: bool = False):
        self.model_type, self.vocab_size, self.config = model_type, vocab_size, dict(config or {})
        self.gradient_checkpointing, self.compile_training = gradient_checkpointing, compile_training
        self.fused_loss, self.fused_optimizer = fused_loss, fused_optimizer
        self.generation_cache = checked_generation_cache(generation_cache)

    def tokenizer(self, texts: Iterable[str]) -> PreTrainedTokenizerBase:
        return train_bpe_tokenizer(texts, self.vocab_size)

    def hf_config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """The transformers config of this architecture for `tokenizer` (vocabulary and special token ids)."""
        return AutoConfig.for_model(self.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                    **self.config)

    def model(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """A freshly initialised causal LM (with its LM head)."""
        return set_generation_cache(AutoModelForCausalLM.from_config(self.hf_config(tokenizer)), self.generation_cache)

    def backbone(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """The same architecture without the LM head, freshly initialised (for a reward model started from scratch)."""
        return AutoModel.from_config(self.hf_config(tokenizer))


# Families whose logits are exactly `lm_head(base_model(...).last_hidden_state)`: no bias, scale or soft-capping.
PLAIN_HEAD_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2")


def trunk_and_head(model: Any) -> tuple[torch.nn.Module, torch.Tensor]:
    """The transformer of a causal LM and its LM head's weight, for `model.fused_loss` (the loss computed from the
    trunk's hidden states); a ConfigError for a model whose logits are more than that product."""
    head = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if family not in PLAIN_HEAD_FAMILIES or head is None or getattr(head, "bias", None) is not None:
        raise ConfigError(f"model.fused_loss=true: a {family} model{' with adapters' if head is None else ''} has no "
                          f"plain linear LM head this loss knows (it knows {list(PLAIN_HEAD_FAMILIES)} without "
                          f"adapters); set model.fused_loss=false")
    return model.base_model, head.weight


class PretrainedCausalLM:
    """A hub name or local path (e.g. `gpt2`, `EleutherAI/pythia-410m`); remote code only when the user allows it."""

    def __init__(self, name_or_path: str, trust_remote_code: bool = False, dtype: str = "float32",
                 attn_implementation: str | None = "sdpa", revision: str | None = None,
                 gradient_checkpointing: bool = False, generation_cache: str = "dynamic",
                 compile_training: bool = False, fused_loss: bool = False, fused_optimizer: bool = False):
        self.name_or_path, self.trust_remote_code, self.revision = name_or_path, trust_remote_code, revision
        self.dtype, self.attn_implementation = dtype, attn_implementation
        self.gradient_checkpointing, self.compile_training = gradient_checkpointing, compile_training
        self.fused_loss, self.fused_optimizer = fused_loss, fused_optimizer
        self.generation_cache = checked_generation_cache(generation_cache)

    def tokenizer(self, texts: Iterable[str]) -> PreTrainedTokenizerBase:
        tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=self.trust_remote_code,
                                                  revision=self.revision)
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"model {self.name_or_path}: its tokenizer has no EOS token; responses could not end")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        return tokenizer

    def _load(self, auto_class: type, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        model = auto_class.from_pretrained(
            self.name_or_path, trust_remote_code=self.trust_remote_code, revision=self.revision,
            dtype=getattr(torch, self.dtype), attn_implementation=self.attn_implementation)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    def model(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """The pretrained causal LM."""
        return set_generation_cache(self._load(AutoModelForCausalLM, tokenizer), self.generation_cache)

    def backbone(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        """The pretrained model without its LM head (for a reward model not started from the SFT policy)."""
        return self._load(AutoModel, tokenizer)


def for_training(model: PreTrainedModel, gradient_checkpointing: bool) -> PreTrainedModel:
    """Recompute activations in the backward pass instead of storing them (`model.gradient_checkpointing`): less
    memory for the same gradients. Only in training mode; generation keeps its KV cache."""
    if gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout to p=0: PPO compares log-probs of two forward passes and a reward model's scores are
    compared with each other, so dropout noise would only blur them (TRL and DeepSpeed-Chat do the same)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Weights as safetensors plus the tokenizer, so every later stage reads the same vocabulary."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(directory, padding_side="left")


def load_model(directory: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """A model saved by `save_model`; safetensors only, never a pickle."""
    return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True, trust_remote_code=trust_remote_code)
