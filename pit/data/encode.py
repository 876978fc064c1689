"""Token ids for (input, response) pairs, and the collator that pads them for supervised training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100   # label of positions no loss reads (input, padding): PyTorch cross-entropy's default ignore_index


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
                 max_input_tokens: int, max_response_tokens: int,
                 response_ids: list[list[int]] | None = None) -> list[EncodedPair]:
    """Encode input and response separately, so the boundary between them is exact; EOS ends each response.

    `response_ids`: the responses already as ids of this tokenizer (a policy's samples), used instead of the text.
    """
    heads = encode_inputs(tokenizer, inputs, max_input_tokens)
    tails = response_ids if response_ids is not None else (
        tokenizer(responses, add_special_tokens=False)["input_ids"] if responses else [])
    eos = tokenizer.eos_token_id
    return [EncodedPair(h, (t + [eos])[:max_response_tokens]) for h, t in zip(heads, tails, strict=True)]


def pad_rows(rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu",
             left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token rows into `[B, T]` ids and attention mask; left padding (right-aligned rows) for decoding."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def collate_sft(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` with input and padding positions ignored."""
    input_ids, mask = pad_rows([p.input_ids + p.response_ids for p in pairs], pad_id)
    labels = torch.full_like(input_ids, IGNORE)
    for row, pair in enumerate(pairs):
        n_in = len(pair.input_ids)
        labels[row, n_in:n_in + len(pair.response_ids)] = torch.tensor(pair.response_ids)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def collate_groups(items: list[tuple[list[int], ...]], pad_id: int) -> dict[str, torch.Tensor]:
    """Examples of G encoded texts each -> right-padded `[G * B, T]`, group-major (all first texts, then all second...).

    Group-major order lets a model score every text of a batch in one forward pass and split the result
    back into groups with a reshape.
    """
    input_ids, mask = pad_rows([item[g] for g in range(len(items[0])) for item in items], pad_id)
    return {"input_ids": input_ids, "attention_mask": mask}


def collate_groups_with_offsets(items: list[tuple[tuple[list[int], ...], tuple[float, ...]]],
                                pad_id: int) -> dict[str, torch.Tensor]:
    """`collate_groups` of (texts, offsets) items, plus `offsets` `[G * B]` in the same group-major order: fixed
    amounts the model's scores are shifted by (R_P's part of a residual gap reward)."""
    batch = collate_groups([texts for texts, _ in items], pad_id)
    batch["offsets"] = torch.tensor([o[g] for g in range(len(items[0][1])) for _, o in items], dtype=torch.float32)
    return batch
