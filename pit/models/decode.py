"""Our decode loop for rollouts, references and evaluation: prefill once, then one step per new token over a KV cache,
with tokens chosen on the device (Gumbel-max) so no step waits for the host.

The choice per step makes transformers' ops (float32 logits, temperature, top-p, and argmax of probabilities over Exp(1)
noise, which is how `torch.multinomial` draws one sample), so with the dynamic cache and
`check_every=1` the tokens are those of `generate`, bit for bit. With `static=True` the cache is preallocated and
every step has one shape; on CUDA that step is compiled and replayed as a CUDA graph (`mode="reduce-overhead"`).
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import transformers
from transformers import DynamicCache, PreTrainedModel, StaticCache

log = logging.getLogger(__name__)

StepFn = Callable[..., torch.Tensor]
# One shape per step over a static cache, replayed as a CUDA graph. Not `fullgraph`: a shape beyond dynamo's
# recompile limit (8: batch sizes x cache lengths x sampling settings) then runs eagerly instead of failing; that
# the step is one graph is tested with `torch._dynamo.explain`
CUDA_GRAPH = (("mode", "reduce-overhead"), ("dynamic", False))
STATIC_BUCKET = 64               # static caches are a multiple of this many tokens long
_STATIC_CACHES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[Any, ...], StaticCache]] = (
    weakref.WeakKeyDictionary())


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """`scores` `[B, V]` with -inf outside each row's nucleus: the fewest top tokens whose probability reaches
    `top_p` (at least one). The ops of transformers' `TopPLogitsWarper`, so the same bits, traced without a break."""
    ascending, order = torch.sort(scores, descending=False)
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    drop[..., -1:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def choose(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Next token per row from last-position logits `[B, V]`: argmax at temperature 0, else a draw from the softmax
    at `temperature` within the `top_p` nucleus by Gumbel-max (`argmax p / E`, E ~ Exp(1)): the draw
    `torch.multinomial(p, 1)` makes, without its checks that wait for the host."""
    scores = logits.float()
    if temperature <= 0:
        return scores.argmax(dim=-1)
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    probs = scores.softmax(dim=-1)
    return probs.div_(torch.empty_like(probs).exponential_(1)).argmax(dim=-1)


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def unsupported(model: torch.nn.Module) -> str | None:
    """Why our loop cannot decode `model` (None: it can): it needs transformers 5's caches and a decoder-only model
    whose forward takes a cache and position ids."""
    if int(transformers.__version__.split(".")[0]) < 5:
        return f"transformers {transformers.__version__}: the loop needs 5.x's caches"
    base = backbone(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "it is not a decoder-only transformers model"
    params = set(inspect.signature(base.forward).parameters)
    missing = [name for name in ("cache", "position_ids") if name not in params and not (
        name == "cache" and "past_key_values" in params)]
    return f"its forward takes no {' or '.join(missing)}" if missing else None


def cache_argument(model: torch.nn.Module) -> str:
    """The forward's name for the KV cache: `cache` in newer transformers (5.25), `past_key_values` in older (5.17)."""
    return "cache" if "cache" in inspect.signature(backbone(model).forward).parameters else "past_key_values"


@torch.no_grad()
def decode(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           temperature: float, top_p: float, eos_id: int, pad_id: int, static: bool = False, check_every: int = 1,
           compile_options: tuple[tuple[str, Any], ...] | None = None) -> torch.Tensor:
    """New tokens `[B, T]` (T <= max_new_tokens) after left-padded inputs; after a row's EOS, `pad_id`.

    Stops when every row has ended, looked at every `check_every` steps (the only host sync in the loop); steps
    after the last row ended draw random numbers too, so with `check_every > 1` a seeded pass's later batches differ
    from `generate`'s. `compile_options` (`torch.compile`'s keywords, e.g. `CUDA_GRAPH`) compile the decode step
    (static cache only); None runs it eagerly. A model with sliding-window or hybrid layers decodes with the
    dynamic cache (a static sliding layer keeps a Python counter, a new graph every step)."""
    batch, prompt = input_ids.shape
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    padded = bool((attention_mask == 0).any())     # unpadded batches need no mask at all (as in `generate`)
    base = backbone(model)
    if static and (why := static_unsupported(base.config)):
        _say_dynamic(type(base).__name__, why)
        static, compile_options = False, None
    length = prompt + max_new_tokens
    if static:                   # a few cache lengths, so prompts of other lengths reuse the compiled step
        length = -(-length // STATIC_BUCKET) * STATIC_BUCKET
    kv = static_cache(base, batch, length, input_ids.device) if static else DynamicCache(config=base.config)
    mask = torch.cat([attention_mask, attention_mask.new_ones(batch, length - prompt)], dim=1)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
    name = cache_argument(base)
    chosen = choose(model(input_ids=input_ids, attention_mask=mask[:, :prompt] if padded else None,
                          position_ids=positions, use_cache=True, **{name: kv}, **extra).logits[:, -1],
                    temperature, top_p)
    step = _step if compile_options is None else compiled_step(compile_options)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    position = positions[:, -1:]
    for t in range(max_new_tokens):
        token = torch.where(unfinished, chosen, pad_id)
        out[:, t] = token
        unfinished &= token != eos_id
        if t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and not bool(unfinished.any())):
            return out[:, :t + 1]
        position = position + 1
        step_mask = (mask if static else mask[:, :prompt + t + 1]) if padded else None
        chosen = step(model, token[:, None], step_mask, position, {name: kv}, extra, temperature, top_p)
    return out


def static_unsupported(config: Any) -> str | None:
    """Why a static cache does not suit this model config (None: it does): sliding-window or non-attention layers."""
    kinds = set(getattr(config, "layer_types", None) or ())
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "it has sliding-window attention"
    if kinds - {"full_attention"}:
        return f"its layers are {sorted(kinds)}"
    return None


@cache
def _say_dynamic(model: str, why: str) -> None:
    log.warning("decoding %s with the dynamic cache, not model.generation_cache=static: %s", model, why)


def static_cache(model: PreTrainedModel, batch: int, length: int, device: torch.device) -> StaticCache:
    """A preallocated cache for `model`, kept while the model lives and reused, zeroed in place, while batch, length,
    device and dtype stay the same: a CUDA graph then replays over the same memory (as `generate` keeps its own)."""
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else next(model.parameters()).dtype)
    key = (batch, length, device, dtype)
    held = _STATIC_CACHES.get(model)
    if held is not None and held[0] == key:
        held[1].reset()
        return held[1]
    kv = StaticCache(model.config, max_cache_len=length)
    _STATIC_CACHES[model] = (key, kv)
    return kv


def _step(model: torch.nn.Module, token: torch.Tensor, mask: torch.Tensor | None, position: torch.Tensor,
          kv: dict[str, DynamicCache | StaticCache], extra: dict[str, int], temperature: float,
          top_p: float) -> torch.Tensor:
    """One decode step: feed `token` `[B, 1]`, extend the cache (`kv`: the forward's keyword for it) in place,
    choose the next token `[B]`."""
    return choose(model(input_ids=token, attention_mask=mask, position_ids=position, use_cache=True, **kv,
                        **extra).logits[:, -1], temperature, top_p)


@cache
def compiled_step(options: tuple[tuple[str, Any], ...]) -> StepFn:
    """The decode step compiled once per process and options (a new wrapper per call would compile again)."""
    log.info("decode: compiling the decode step with %s", dict(options))
    return torch.compile(_step, **dict(options))
