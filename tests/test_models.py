"""Tokenizer and model factory round trips, and the batched generator's padding and EOS handling."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import FAMILIES

from pit.data.encode import pad_rows
from pit.data.synthetic import SyntheticSource
from pit.models.factory import TinyCausalLM, load_model, load_tokenizer, save_model
from pit.models.generate import Sampling, generate_texts, response_mask, sample

SPEC = TinyCausalLM(config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})


def tiny():
    texts = [t for e in SyntheticSource(n_pairs=200).load().examples for t in (e.prompt + " ->", e.chosen)]
    tokenizer = SPEC.tokenizer(texts)
    torch.manual_seed(0)
    return tokenizer, SPEC.model(tokenizer)


def test_tokenizer_round_trip_and_special_tokens(tmp_path: Path) -> None:
    tokenizer, model = tiny()
    text = "write 8 words with cat red sun without dog -> cat red sun hat cup box"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 16                                  # whole words are single tokens after BPE training
    assert tokenizer.decode(ids).strip() == text
    odd = "héllo {wörld}"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]).strip() == odd
    assert tokenizer.eos_token_id != tokenizer.pad_token_id and tokenizer.padding_side == "left"
    assert model.config.vocab_size == len(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id

    save_model(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    tokenizer2, model2 = load_tokenizer(tmp_path), load_model(tmp_path)
    assert tokenizer2(text, add_special_tokens=False)["input_ids"] == ids
    batch = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model.eval()(batch).logits, model2.eval()(batch).logits)


def test_pad_rows() -> None:
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, device=torch.device("cpu"), left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, device=torch.device("cpu"), left=False)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batched_greedy_equals_one_at_a_time() -> None:
    tokenizer, model = tiny()
    inputs = ["write 5 words with cat ->", "write 8 words with red sun moon without dog ->", "write ->"]
    greedy = Sampling(max_new_tokens=6, temperature=0.0, batch_size=8)
    batched = generate_texts(model, tokenizer, inputs, greedy, max_input_tokens=32)
    single = [generate_texts(model, tokenizer, [x], greedy, max_input_tokens=32)[0] for x in inputs]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_response_mask_stops_after_first_eos() -> None:
    tokenizer, model = tiny()
    eos = tokenizer.eos_token_id
    with torch.no_grad():                                # make EOS the most likely next token everywhere
        model.lm_head.weight.zero_()
        model.lm_head.weight[eos] = 1.0
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.ln_f.weight.zero_()
    ids, mask = pad_rows([[10, 11], [12]], tokenizer.pad_token_id, torch.device("cpu"), left=True)
    model.train()
    response, mask_out = sample(model, ids, mask, Sampling(max_new_tokens=4, temperature=0.0), eos,
                                     tokenizer.pad_token_id)
    assert model.training                                # mode restored
    assert response.tolist() == [[eos], [eos]] and mask_out.tolist() == [[1], [1]]


def test_response_mask_hand_values() -> None:
    response = torch.tensor([[4, 5, 0, 6, 0], [0, 3, 3, 3, 3], [4, 4, 4, 4, 4]])
    assert response_mask(response, eos_id=0).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_generation_inputs_are_cut_to_fit_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input + new tokens never exceed the model's positions: the input is cut on the left, not an IndexError."""
    import pit.models.generate
    from pit.errors import ConfigError
    from pit.models.generate import Sampling, generate_texts, input_budget

    spec = TinyCausalLM(config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32})
    tokenizer = spec.tokenizer(["a b c d e f g h"] * 20)
    model = spec.model(tokenizer)
    assert input_budget(model, 100, 8) == 24 and input_budget(model, 10, 8) == 10
    text = " ".join("abcdefgh" * 5 + "hgfedcba")                   # 48 tokens; its start and its end differ
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 48 and ids[:24] != ids[-24:]
    seen, decode = [], pit.models.generate.decode

    def spy(model: torch.nn.Module, input_ids: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(input_ids.tolist())
        return decode(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(pit.models.generate, "decode", spy)
    texts = generate_texts(model, tokenizer, [text], Sampling(max_new_tokens=8, temperature=0.0), 100)
    assert seen == [[ids[-24:]]]                  # the last 24 tokens: the end holds the turn to answer
    assert len(texts) == 1
    with pytest.raises(ConfigError, match="cannot hold 40 new tokens"):
        input_budget(model, 10, 40)


def small_lm(n_pairs: int) -> tuple:
    """A 2-layer GPT-2-style model with its tokenizer, and the synthetic examples it was built on."""
    examples = SyntheticSource(n_pairs=n_pairs, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 128})
    tokenizer = spec.tokenizer([e.prompt + e.chosen for e in examples])
    torch.manual_seed(0)
    return spec.model(tokenizer), tokenizer, examples


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    from pit.models.factory import for_training

    plain, tokenizer, examples = small_lm(16)
    plain.train()
    checkpointed = for_training(copy.deepcopy(plain), gradient_checkpointing=True)
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    batch = tokenizer([e.prompt + e.chosen for e in examples], return_tensors="pt", padding=True)
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)                                   # the same dropout masks in both
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_static_generation_cache_gives_the_same_tokens() -> None:
    from pit.errors import ConfigError
    from pit.models.factory import set_generation_cache

    model, tokenizer, examples = small_lm(32)
    model.eval()
    inputs = [e.prompt for e in examples]
    greedy = Sampling(max_new_tokens=10, temperature=0.0, batch_size=16)
    dynamic = generate_texts(model, tokenizer, inputs, greedy, 40)
    static = generate_texts(set_generation_cache(model, "static"), tokenizer, inputs, greedy, 40)
    assert model.generation_config.cache_implementation == "static" and static == dynamic
    with pytest.raises(ConfigError, match="model.generation_cache='paged'"):
        TinyCausalLM(generation_cache="paged")


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2"])
def test_fused_loss_gives_the_logits_paths_loss_and_gradients(family: str) -> None:
    """`model.fused_loss`: the trunk's hidden states of labelled positions through the LM head in chunks give the
    loss and every parameter's gradient of the full-logits path, on a padded batch and on an unpadded one (no mask)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from pit.data.encode import collate_sft, encode_pairs
    from pit.modules.sft import SFTModule

    tokenizer, _ = tiny()
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  **FAMILIES[family])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()   # GPT-2's dropout off: both paths see the same net
    rows = SyntheticSource(n_pairs=6).load().examples
    padded = collate_sft(encode_pairs(tokenizer, [e.prompt for e in rows], [e.chosen for e in rows], 32, 16),
                         pad_id=tokenizer.pad_token_id)
    same = [rows[0]] * 3
    unpadded = collate_sft(encode_pairs(tokenizer, [e.prompt for e in same], [e.chosen for e in same], 32, 16),
                           pad_id=tokenizer.pad_token_id)
    assert not padded["attention_mask"].all() and unpadded["attention_mask"].all()
    for batch in (padded, unpadded):
        results = []
        for fused in (False, True):
            module = SFTModule(model, 1e-3, 0.0, 0, 10, prefix="sft", fused_loss=fused)
            model.zero_grad()
            nll, n = module._nll(batch)
            nll.backward()
            results.append((nll.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters()}))
        (today, n, grads), (fused_nll, m, fused_grads) = results
        assert m == n and torch.allclose(fused_nll, today, rtol=1e-5)
        for name, grad in grads.items():
            assert torch.allclose(fused_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_fused_loss_refuses_a_head_it_does_not_know() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from pit.errors import ConfigError
    from pit.models.factory import trunk_and_head

    opt = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "opt", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        word_embed_proj_dim=16, max_position_embeddings=32))
    with pytest.raises(ConfigError, match="model.fused_loss=true: a opt model has no plain linear LM head"):
        trunk_and_head(opt)


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_fused_adamw_with_pit_clipping_trains_as_lightnings_adamw(kind: str) -> None:
    """`model.fused_optimizer`: fused AdamW with the gradients clipped by pit (Lightning refuses to clip for it) ends
    three clipped bf16-mixed steps where the multi-tensor AdamW with Lightning's clipping does, for SFT and for a
    reward model.
    Not bit for bit: the two AdamWs round differently, and Adam divides each gradient by its own running scale, so a
    near-zero gradient's rounding moves its weight by up to a fraction of lr (1e-2): within 1e-4."""
    import lightning as L
    from torch.utils.data import DataLoader

    from pit.data.encode import collate_groups, collate_sft, encode_pairs
    from pit.models.reward import CausalRewardSpec
    from pit.modules.preference import RewardModule
    from pit.modules.sft import SFTModule

    tokenizer, model = tiny()
    rows = SyntheticSource(n_pairs=24).load().examples
    prompts = [e.prompt for e in rows]
    if kind == "sft":
        items = encode_pairs(tokenizer, prompts, [e.chosen for e in rows], 32, 16)
        collate = partial(collate_sft, pad_id=tokenizer.pad_token_id)
    else:
        torch.manual_seed(0)
        model = CausalRewardSpec(init_from=None).build(tokenizer, None, SPEC, 48)
        items = list(zip(model.encode(prompts, [e.chosen for e in rows]),
                         model.encode(prompts, [e.rejected for e in rows]), strict=True))
        collate = partial(collate_groups, pad_id=model.pad_id())
    trained = []
    for fused in (False, True):
        net = copy.deepcopy(model)
        module = (SFTModule(net, 1e-2, 0.1, 0, 3, prefix="sft", fused_optimizer=fused) if kind == "sft" else
                  RewardModule(net, prefix="reward", lr=1e-2, weight_decay=0.1, warmup_steps=0, total_steps=3,
                               fused_optimizer=fused))
        assert module.configure_optimizers()["optimizer"].defaults["fused"] is (True if fused else None)
        torch.manual_seed(1)   # the same dropout masks on both sides
        L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, accelerator="cpu", gradient_clip_val=0.05,
                  precision="bf16-mixed").fit(   # whose plugin refuses to clip for a fused optimizer itself
            module, DataLoader(items, batch_size=8, collate_fn=collate))
        trained.append(dict(net.named_parameters()))
    start = dict(model.named_parameters())
    for name, param in trained[0].items():
        assert torch.allclose(trained[1][name], param, rtol=0, atol=1e-4), name
    assert max(float((p - start[n]).abs().max()) for n, p in trained[0].items()) > 1e-2   # they did move


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_pit_clips_the_gradients_as_lightning_does(algorithm: str) -> None:
    """With a fused optimizer, `configure_gradient_clipping` leaves the optimizer's gradients exactly as Lightning's
    precision plugin clips them for an optimizer it accepts (global norm, or each value)."""
    import lightning as L
    from lightning.pytorch.plugins.precision import Precision

    from pit.modules.optim import AdamWTraining

    class Module(AdamWTraining, L.LightningModule):
        fused_optimizer = True

    torch.manual_seed(0)
    grads = [torch.randn(7, 5), torch.randn(5)]
    clipped = []
    for fused in (False, True):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer = torch.optim.AdamW(params, fused=True if fused else None)
        if fused:
            Module().configure_gradient_clipping(optimizer, 0.5, algorithm)
        else:
            Precision().clip_gradients(optimizer, 0.5, algorithm)
        clipped.append([p.grad for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*clipped, strict=True))
    assert not torch.equal(clipped[1][0], grads[0])


def test_compile_training_compiles_the_reward_models_training_forward() -> None:
    """`model.compile_training` reaches R_P, R_PIT and the judge: the training step's scores come from
    torch.compile's graph and equal the eager forward's; validation stays eager."""
    from pit.data.encode import collate_groups
    from pit.models.reward import CausalRewardSpec
    from pit.modules.preference import RewardModule

    tokenizer, _ = tiny()
    torch.manual_seed(0)
    model = CausalRewardSpec(init_from=None).build(tokenizer, None, SPEC, 48)
    rows = SyntheticSource(n_pairs=8).load().examples
    prompts = [e.prompt for e in rows]
    batch = collate_groups(list(zip(model.encode(prompts, [e.chosen for e in rows]),
                                    model.encode(prompts, [e.rejected for e in rows]), strict=True)),
                           pad_id=model.pad_id())
    module = RewardModule(model, prefix="reward", lr=1e-3, weight_decay=0.0, warmup_steps=0, total_steps=1,
                          compile=True)
    assert module._train_scores is not module._scores
    compiled, eager = module._train_scores(batch), module._scores(batch)
    for group in ("w", "l"):
        assert torch.allclose(compiled[group], eager[group], rtol=1e-4, atol=1e-5)
