"""Batched sampling shared by every stage that generates: left padding, KV cache, one step per new token for the whole
batch, stop at EOS."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from pit.data.encode import encode_inputs, pad_rows
from pit.errors import ConfigError
from pit.models.decode import CUDA_GRAPH, backbone, decode, unsupported
from pit.progress import progress

log = logging.getLogger(__name__)
CHECK_EVERY = 8                  # on a GPU, decode steps between looks at whether every row has ended


@dataclass(frozen=True)
class Sampling:
    """How to sample: `temperature=0` is greedy decoding."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 64


@torch.no_grad()
def sample(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling: Sampling,
           eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Response ids `[B, T]` after left-padded inputs, and their mask: 1 up to and including the first EOS.

    Our decode loop (`pit.models.decode`) where it can run the model, with the cache `model.generation_cache` chose
    (static on a GPU: the step replayed as a CUDA graph, completion looked at every `CHECK_EVERY` steps); else
    transformers' `generate`, saying why once."""
    was_training = model.training
    model.eval()
    try:
        why = unsupported(model)
        if why is None:
            static = getattr(backbone(model).generation_config, "cache_implementation", None) == "static"
            cuda = input_ids.device.type == "cuda"
            response = decode(model, input_ids, attention_mask, sampling.max_new_tokens, sampling.temperature,
                              sampling.top_p, eos_id, pad_id, static=static, check_every=CHECK_EVERY if cuda else 1,
                              compile_options=CUDA_GRAPH if static and cuda else None)
        else:
            _say_fallback(type(model).__name__, why)
            response = hf_generate(model, input_ids, attention_mask, sampling, eos_id, pad_id)
    finally:
        model.train(was_training)
    mask = response_mask(response, eos_id)
    return response.masked_fill(mask == 0, pad_id), mask


def hf_generate(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling: Sampling,
                eos_id: int, pad_id: int) -> torch.Tensor:
    """New tokens from transformers' `generate` with the same settings (no top-k): the fallback, and the bench's
    reference."""
    greedy = sampling.temperature <= 0
    # a whole GenerationConfig: a checkpoint's own (repetition penalty, top-k, ...) would change the distribution
    config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                              temperature=None if greedy else sampling.temperature,
                              top_p=None if greedy else sampling.top_p, top_k=0, eos_token_id=eos_id,
                              pad_token_id=pad_id, use_cache=True,
                              cache_implementation=getattr(getattr(model, "generation_config", None),
                                                           "cache_implementation", None))
    return model.generate(input_ids=input_ids, attention_mask=attention_mask,
                          generation_config=config)[:, input_ids.shape[1]:]


@cache
def _say_fallback(model: str, why: str) -> None:
    log.warning("sampling %s with transformers' generate, not our decode loop: %s", model, why)


def response_mask(response: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 for each token up to and including the first EOS of its row, 0 after it (vectorized, no token loop)."""
    is_eos = (response == eos_id).long()
    return ((torch.cumsum(is_eos, dim=1) - is_eos) == 0).long()


def input_budget(model: PreTrainedModel, max_input_tokens: int, max_new_tokens: int) -> int:
    """Input tokens to keep so that input + response fit the model's context (inputs are cut on the left)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        return max_input_tokens
    if context <= max_new_tokens:
        raise ConfigError(f"the model's context ({context} tokens) cannot hold {max_new_tokens} new tokens")
    return min(max_input_tokens, context - max_new_tokens)


def purpose_seed(seed: int, *purpose: str) -> int:
    """A seed for one sampling pass, from the run's seed and what the pass is for (its stage and purpose)."""
    return int.from_bytes(hashlib.sha256("/".join((str(seed), *purpose)).encode()).digest()[:8], "big") >> 1


@contextmanager
def seeded_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from torch's generators seeded with `seed` inside, and leave them as they were outside (None: as they
    are): a pass seeded so draws the same samples whatever ran before it, and changes nothing after it."""
    if seed is None:
        yield
        return
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []   # manual_seed seeds them all
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def generate_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, inputs: list[str],
                   sampling: Sampling, max_input_tokens: int, desc: str = "sampling",
                   seed: int | None = None) -> list[str]:
    """Sample one response per input, in batches of similar length; returns the decoded responses in input order.

    `desc` names the progress bar shown on a terminal; `seed` (`purpose_seed`) makes the pass draw from its own
    generator (None: from torch's global one)."""
    encoded = encode_inputs(tokenizer, inputs, input_budget(model, max_input_tokens, sampling.max_new_tokens))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(inputs)
    device = next(model.parameters()).device
    starts = range(0, len(order), sampling.batch_size)
    with seeded_rng(seed, device):
        for start in progress(starts, desc, len(starts)):
            chunk = order[start:start + sampling.batch_size]
            ids, mask = pad_rows([encoded[i] for i in chunk], tokenizer.pad_token_id, device, left=True)
            response, _ = sample(model, ids, mask, sampling, tokenizer.eos_token_id, tokenizer.pad_token_id)
            for i, text in zip(chunk, tokenizer.batch_decode(response, skip_special_tokens=True), strict=True):
                texts[i] = text
    return texts
