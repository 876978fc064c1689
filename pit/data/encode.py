"""Token ids for (input, response) pairs, and the collator that pads them for supervised training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from pit.modules.losses import IGNORE


@dataclass(frozen=True)
class EncodedPair:
    """`input_ids` (left-truncated input) and `response_ids` (right-truncated response, EOS when it fits)."""

    input_ids: list[int]
    response_ids: list[int]


def encode_inputs(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Tokenize inputs in one batched call, keeping the last `max_tokens` (the end holds the turn to answer)."""
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [row[-max_tokens:] for row in ids]


def encode_pairs(tokenizer: PreTrainedTokenizerBase, inputs: list[str], responses: list[str],
                 max_input_tokens: int, max_response_tokens: int) -> list[EncodedPair]:
    """Encode input and response separately, so the boundary between them is exact; EOS ends each response."""
    heads = encode_inputs(tokenizer, inputs, max_input_tokens)
    tails = tokenizer(responses, add_special_tokens=False)["input_ids"] if responses else []
    eos = tokenizer.eos_token_id
    return [EncodedPair(h, (t + [eos])[:max_response_tokens]) for h, t in zip(heads, tails, strict=True)]


def collate_sft(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` with input and padding positions ignored."""
    length = max(len(p.input_ids) + len(p.response_ids) for p in pairs)
    input_ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    for row, pair in enumerate(pairs):
        n_in, n = len(pair.input_ids), len(pair.input_ids) + len(pair.response_ids)
        input_ids[row, :n] = torch.tensor(pair.input_ids + pair.response_ids)
        labels[row, n_in:n] = torch.tensor(pair.response_ids)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
