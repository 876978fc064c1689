"""Our decode loop (pit/models/decode.py) against transformers' `generate`, the sampler's distribution, and the
compiled step."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import FAMILIES
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache
from transformers.generation.logits_process import TopPLogitsWarper

from pit.models.decode import (
    CUDA_GRAPH,
    STATIC_BUCKET,
    _step,
    cache_argument,
    choose,
    decode,
    static_cache,
    top_p_filter,
)
from pit.models.generate import Sampling, hf_generate, sample

VOCAB, PROMPT, NEW = 97, 9, 12
EAGER_GRAPH = (("backend", "eager"), ("fullgraph", True), ("dynamic", False))   # dynamo's graph, no codegen


def family_model(family: str) -> torch.nn.Module:
    config = AutoConfig.for_model(family, vocab_size=VOCAB, pad_token_id=0, **FAMILIES[family])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def left_padded(rows: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(3, VOCAB, (rows, PROMPT))
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 5, 1, 0][:rows]):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def mid_row_eos(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """A token greedy decoding emits 5th in row 1: as EOS, that row ends mid-way and others go on."""
    return int(hf_generate(model, ids, mask, Sampling(NEW, 0.0), eos_id=1, pad_id=0)[1, 4])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tokens_are_generates_for_every_family_cache_and_sampling(family: str) -> None:
    """Greedy and sampled (T 1.0; T 0.7 with top-p 0.9) tokens equal `generate`'s bit for bit under the same seed,
    with the dynamic and the static cache, on a left-padded batch where one row stops at EOS mid-way, and on an
    unpadded one."""
    model = family_model(family)
    padded = left_padded()
    eos = mid_row_eos(model, *padded)
    unpadded = (padded[0][[0, 4]], padded[1][[0, 4]])
    for ids, mask in (padded, unpadded):
        for temperature, top_p in ((0.0, 1.0), (1.0, 1.0), (0.7, 0.9)):
            torch.manual_seed(1)
            theirs = hf_generate(model, ids, mask, Sampling(NEW, temperature, top_p), eos, pad_id=0)
            for static in (False, True):
                torch.manual_seed(1)
                ours = decode(model, ids, mask, NEW, temperature, top_p, eos, 0, static=static)
                assert torch.equal(ours, theirs), (family, temperature, static, ids.shape)
    greedy = decode(model, *padded, NEW, 0.0, 1.0, eos, 0)
    ended = (greedy == eos).nonzero()
    assert (ended[:, 0] == 1).any() and (greedy[1, 5:] == 0).all() and (greedy[0] != 0).any()


def test_top_p_keeps_the_smallest_nucleus_as_transformers_does() -> None:
    """Hand-computed: p = .5 .3 .15 .05 and top-p 0.7 keep the two tokens whose mass reaches 0.7; top-p 0.2 keeps the
    top one; the same bits as transformers' `TopPLogitsWarper` on random scores."""
    scores = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    kept = top_p_filter(scores, 0.7).isfinite()
    assert kept.tolist() == [[False, True, False, True]]
    assert top_p_filter(scores, 0.2).isfinite().tolist() == [[False, True, False, False]]
    random = torch.randn(16, 50)
    assert torch.equal(top_p_filter(random, 0.9), TopPLogitsWarper(0.9)(None, random))


def test_sampled_token_frequencies_match_the_softmax() -> None:
    """20,000 draws at T 0.7 and top-p 0.9 follow softmax(logits / 0.7) renormalized over the nucleus (chi-square,
    p > 0.001), and never pick a token outside it."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
    probs = (logits / 0.7).softmax(-1)
    nucleus = int((probs.cumsum(-1) < 0.9).sum()) + 1             # logits are sorted: the top tokens to reach 0.9
    expected = probs[:nucleus] / probs[:nucleus].sum()
    torch.manual_seed(0)
    draws = torch.cat([choose(logits.expand(2000, -1), 0.7, 0.9) for _ in range(10)])
    counts = torch.bincount(draws, minlength=len(logits)).double()
    assert nucleus == 3 and counts[nucleus:].sum() == 0
    chi2 = float(((counts[:nucleus] - len(draws) * expected) ** 2 / (len(draws) * expected)).sum())
    p_value = float(torch.special.gammaincc(torch.tensor((nucleus - 1) / 2), torch.tensor(chi2 / 2)))
    assert p_value > 1e-3, (chi2, p_value)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_static_step_is_one_graph_compiled_once(family: str) -> None:
    """`torch._dynamo.explain` finds no graph break in a decode step over a static cache (greedy or sampled); the
    compiled step gives the eager loop's tokens, and later calls of the same shape compile nothing new."""
    from torch._dynamo.utils import counters

    model = family_model(family)
    ids, mask = left_padded(3)
    kv = StaticCache(model.config, max_cache_len=PROMPT + 4)
    full = torch.cat([mask, mask.new_ones(3, 4)], dim=1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
              **{cache_argument(model): kv})
        for temperature, top_p in ((0.0, 1.0), (0.7, 0.9)):
            torch._dynamo.reset()
            explained = torch._dynamo.explain(_step)(model, ids[:, -1:], full, torch.full((3, 1), PROMPT),
                                                     {cache_argument(model): kv}, {"logits_to_keep": 1},
                                                     temperature, top_p)
            assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()
    counters.clear()
    eager = decode(model, ids, mask, NEW, 0.0, 1.0, 1, 0, static=True)
    kv = static_cache(model, 3, STATIC_BUCKET, ids.device)           # the same memory again, zeroed
    assert kv is static_cache(model, 3, STATIC_BUCKET, ids.device) and not kv.layers[0].keys.any()
    assert torch.equal(decode(model, ids, mask, NEW, 0.0, 1.0, 1, 0, static=True, compile_options=EAGER_GRAPH), eager)
    assert counters["stats"]["unique_graphs"] == 1
    counters.clear()
    decode(model, ids, mask, NEW, 0.0, 1.0, 1, 0, static=True, compile_options=EAGER_GRAPH)
    assert not counters["stats"]["unique_graphs"]


def test_checking_completion_every_n_steps_only_adds_pad(caplog: pytest.LogCaptureFixture) -> None:
    """Looking at completion every 8 steps yields the same rows, then pad; a model our loop cannot run is sampled by
    `generate`, with one warning saying why."""
    model = family_model("gpt2")
    ids, mask = left_padded()
    eos = mid_row_eos(model, ids, mask)
    every_step = decode(model, ids, mask, NEW, 0.0, 1.0, eos, 0)
    every_8 = decode(model, ids, mask, NEW, 0.0, 1.0, eos, 0, check_every=8)
    assert torch.equal(every_8[:, :every_step.shape[1]], every_step) and (every_8[:, every_step.shape[1]:] == 0).all()

    forward = model.forward
    model.forward = lambda input_ids=None, attention_mask=None, **kw: forward(
        input_ids=input_ids, attention_mask=attention_mask, **kw)   # no `position_ids` (nor cache) parameter
    with caplog.at_level(logging.WARNING, logger="pit.models.generate"):
        for _ in range(2):
            response, _ = sample(model, ids, mask, Sampling(NEW, 0.0), eos, 0)
    assert [r.getMessage() for r in caplog.records].count(
        "sampling GPT2LMHeadModel with transformers' generate, not our decode loop: its forward takes no "
        "cache or position_ids") == 1
    assert response.shape[0] == len(ids) and response.shape[1] <= NEW


def test_many_shapes_and_sliding_windows_still_decode(caplog: pytest.LogCaptureFixture) -> None:
    """Past dynamo's recompile limit (8) the compiled step runs eagerly rather than failing (our options leave out
    `fullgraph`); a sliding-window model asked for a static cache decodes with the dynamic one, saying so once, and
    its tokens are `generate`'s."""
    torch._dynamo.reset()
    model = family_model("gpt2")
    options = tuple((k, v) for k, v in CUDA_GRAPH if k != "mode") + (("backend", "eager"),)
    for rows in range(1, 11):                     # 10 batch sizes: 10 shapes of the step
        ids, mask = left_padded(min(rows, 5))
        ids, mask = ids.repeat(2, 1)[:rows], mask.repeat(2, 1)[:rows]
        assert decode(model, ids, mask, 3, 0.0, 1.0, 1, 0, static=True, compile_options=options).shape == (rows, 3)
    config = AutoConfig.for_model("mistral", vocab_size=VOCAB, pad_token_id=0, sliding_window=4,
                                  **FAMILIES["llama"])
    torch.manual_seed(0)
    mistral = AutoModelForCausalLM.from_config(config).eval()
    ids, mask = left_padded()
    with caplog.at_level(logging.WARNING, logger="pit.models.decode"):
        ours = decode(mistral, ids, mask, NEW, 0.0, 1.0, 1, 0, static=True)
    assert "not model.generation_cache=static: it has sliding-window attention" in caplog.text
    assert torch.equal(ours, hf_generate(mistral, ids, mask, Sampling(NEW, 0.0), 1, 0))
