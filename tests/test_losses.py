"""Loss masking and optimizer schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pit.data.encode import EncodedPair, collate_sft, encode_pairs
from pit.modules.losses import IGNORE, linear_response_nll, response_nll
from pit.modules.optim import warmup_cosine


def test_response_nll_counts_only_labelled_positions() -> None:
    vocab = 3
    logits = torch.zeros(1, 4, vocab)                       # uniform: every token costs log 3 ...
    logits[0, 2] = torch.tensor([0.0, 0.0, math.log(4.0)])  # ... except position 2, which predicts token 2 at 4/6
    labels = torch.tensor([[IGNORE, IGNORE, 1, 2]])         # prompt of 2 tokens, response tokens 1 then 2
    nll, n = response_nll(logits, labels)
    # position 1 predicts label 1 with p=1/3; position 2 predicts label 2 with p=4/6
    assert n.item() == 2
    assert nll.item() == pytest.approx(math.log(3) + math.log(6 / 4), rel=1e-6)


def test_response_nll_ignores_prompt_and_padding_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, IGNORE], [IGNORE, 1, 2, IGNORE, IGNORE]])
    base, _ = response_nll(logits, labels)
    changed = logits.clone()
    changed[0, 0] += 100.0   # predicts a prompt token: must not matter
    changed[0, 4] += 100.0   # predicts past the end: must not matter
    changed[1, 3:] += 100.0
    assert torch.allclose(response_nll(changed, labels)[0], base)
    changed[0, 1, 3] += 1.0  # predicts the first response token: must matter
    assert not torch.allclose(response_nll(changed, labels)[0], base)


def test_collate_masks_input_and_padding() -> None:
    batch = collate_sft([EncodedPair([5, 6], [7, 1]), EncodedPair([8], [9, 10, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [8, 9, 10, 1]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 7, 1], [IGNORE, 9, 10, 1]]
    batch = collate_sft([EncodedPair([5], [1]), EncodedPair([8, 8, 8], [9, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 1, 0, 0, 0], [8, 8, 8, 9, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 1, IGNORE, IGNORE, IGNORE], [IGNORE] * 3 + [9, 1]]


class CharTokenizer:
    """One token per character; EOS = 0."""

    eos_token_id = 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_encode_pairs_truncates_input_left_and_response_right() -> None:
    pairs = encode_pairs(CharTokenizer(), ["abcdef", "ab"], ["xyz", "x"], max_input_tokens=3, max_response_tokens=3)
    assert pairs[0] == EncodedPair([ord("d"), ord("e"), ord("f")], [ord("x"), ord("y"), ord("z")])  # no room for EOS
    assert pairs[1] == EncodedPair([ord("a"), ord("b")], [ord("x"), 0])


def test_warmup_cosine() -> None:
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.1)


@pytest.mark.parametrize("chunk", [1, 5, 1024])
def test_linear_response_nll_equals_the_logits_path_with_its_gradients(chunk: int) -> None:
    """The chunked LM head + loss over labelled positions gives today's sum, count and gradients (hidden states and
    head weight), whatever the chunk; prompt and padding positions get zero gradient."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :3] = IGNORE          # a prompt
    labels[2, 5:] = IGNORE          # padding
    nll, n = response_nll(hidden @ weight.T, labels)
    grads = torch.autograd.grad(nll, (hidden, weight))
    fused, m = linear_response_nll(hidden, weight, labels, chunk=chunk)
    assert m == n == 14 and torch.allclose(fused, nll, rtol=1e-6)
    fused_grads = torch.autograd.grad(2.5 * fused, (hidden, weight))
    for mine, today in zip(fused_grads, grads, strict=True):
        assert torch.allclose(mine, 2.5 * today, rtol=1e-5, atol=1e-5)   # float32 rounding of O(1) sums
    assert fused_grads[0][0, :2].abs().sum() == 0 and fused_grads[0][:, -1].abs().sum() == 0
    with torch.no_grad():                                   # validation: the loss alone, no gradient buffers
        assert torch.allclose(linear_response_nll(hidden, weight, labels, chunk=chunk)[0], nll, rtol=1e-6)
