"""`peft=lora`: adapters train and nothing else; PPO's reference is the base with adapters off; artifacts reload."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import CHECKPOINTED, FAST, compose_config, model_hashes
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from pit.data.encode import collate_sft, encode_pairs
from pit.data.synthetic import SyntheticSource
from pit.models.factory import TinyCausalLM, load_model
from pit.models.generate import Sampling
from pit.models.lora import ADAPTER_DIR, LoRA
from pit.modules.ppo import PPOConfig, PPOModule, Rollout
from pit.modules.sft import SFTModule
from pit.run import run


def tiny() -> tuple:
    examples = SyntheticSource(n_pairs=64, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt, e.chosen)])
    torch.manual_seed(0)
    return spec.model(tokenizer), tokenizer, examples


def fit(module: L.LightningModule, loader: DataLoader, steps: int) -> None:
    L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu").fit(module, loader)


def test_lora_sft_changes_only_the_adapters_and_merges_exactly() -> None:
    base, tokenizer, examples = tiny()
    original = copy.deepcopy(base.state_dict())
    model = LoRA(r=4, alpha=8).wrap(base)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    pairs = encode_pairs(tokenizer, [e.prompt for e in examples], [e.chosen for e in examples], 24, 8)
    loader = DataLoader(pairs, batch_size=16, collate_fn=lambda b: collate_sft(b, tokenizer.pad_token_id))
    fit(SFTModule(model, lr=1e-2, weight_decay=0.0, warmup_steps=0, total_steps=8, prefix="sft"), loader, 8)
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()
              if "lora_" not in n}
    assert all(torch.equal(frozen[k], original[k]) for k in frozen)                   # the base never moved
    batch = collate_sft(pairs[:4], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        merged_model = LoRA().merged(model)
        merged = merged_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert not torch.equal(merged_model.state_dict()["transformer.h.0.attn.c_attn.weight"],
                           original["transformer.h.0.attn.c_attn.weight"])


def test_lora_ppo_reference_is_the_base_with_adapters_off() -> None:
    base, tokenizer, examples = tiny()
    snapshot = copy.deepcopy(base)
    policy = LoRA(r=4, alpha=8).wrap(base)
    module = PPOModule(policy, None, tokenizer, lambda items, texts, ids: torch.tensor([len(t) / 10 for t in texts]),
                       Sampling(max_new_tokens=6), 24, PPOConfig(lr=1e-2, minibatches=1, ppo_epochs=1), prefix="ppo",
                       total_steps=3)
    fit(module, DataLoader([Rollout(e.prompt, e.prompt) for e in examples], batch_size=16, collate_fn=list), 3)
    assert module.reference is None and len(module.history) == 3
    ids = tokenizer([e.prompt for e in examples[:4]], return_tensors="pt", padding=True)
    policy.eval(), snapshot.eval()
    with torch.no_grad():
        with policy.disable_adapter():
            off = policy(**ids).logits
        on = policy(**ids).logits
        expected = snapshot(**ids).logits
    assert torch.allclose(off, expected, atol=1e-6) and not torch.allclose(on, expected, atol=1e-4)
    optimized = {id(p) for group in module.optimizers().optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in module.named_parameters() if "lora_" in n or n.startswith("value_head")}


@pytest.mark.slow
def test_lora_pipeline_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage trains adapters; artifacts are plain merged models; round 2 continues round 1's adapters (with its
    learning rate at 0 here, it saves exactly round 1's; fresh adapters would have lora_B = 0); the judge is the same
    whatever `peft` says."""
    real_init = PPOModule.__init__

    def round_2_does_not_move(self, *args, **kwargs) -> None:
        real_init(self, *args, **kwargs)
        if self.prefix == "pit_rl/2_policy":
            self.config = dataclasses.replace(self.config, lr=0.0)

    with monkeypatch.context() as patch:
        patch.setattr(PPOModule, "__init__", round_2_does_not_move)
        lora = run(compose_config([*FAST, "peft=lora", "peft.r=4"], tmp_path))
    assert {r["status"] for r in lora["stages"].values()} == {"ran"}
    cache = tmp_path / "cache"
    for stage in ("sft_policy", "rlhf_policy", "pit_rl/2_policy"):
        (artifact,) = (cache / stage).iterdir()
        load_model(artifact)                                             # a plain causal LM: adapters merged
    (round_1,) = (cache / "pit_rl" / "1_dataset").iterdir()
    (round_2,) = (cache / "pit_rl" / "2_policy").iterdir()
    assert json.loads((round_1 / ADAPTER_DIR / "adapter_config.json").read_text())["r"] == 4
    trained, continued = (load_file(r / ADAPTER_DIR / "adapter_model.safetensors") for r in (round_1, round_2))
    assert set(trained) == set(continued) and any("lora_B" in k for k in trained)
    assert all(trained[k].abs().max() > 0 for k in trained if "lora_B" in k)        # round 1 moved every lora_B
    assert [k for k in trained if not torch.equal(trained[k], continued[k])] == []    # round 2 = round 1's
    full = run(compose_config(FAST, tmp_path))
    assert full["stages"]["judge"]["status"] == "reused"
    assert full["stages"]["sft_policy"]["status"] == "ran"                # peft is part of a trained stage's key


@pytest.mark.slow
def test_lora_ppo_killed_mid_stage_resumes_bit_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pit import checkpointing

    overrides = [*CHECKPOINTED, "peft=lora", "peft.r=4"]
    run(compose_config(overrides, tmp_path / "uninterrupted"))
    real = checkpointing.StageCheckpoint.on_train_batch_end

    def dies(self, trainer, module, *args):
        real(self, trainer, module, *args)
        if self.directory.parent.name == "2_policy" and self.batches == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(checkpointing.StageCheckpoint, "on_train_batch_end", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run(compose_config(overrides, tmp_path / "killed"))
    monkeypatch.setattr(checkpointing.StageCheckpoint, "on_train_batch_end", real)
    resumed = run(compose_config(overrides, tmp_path / "killed"))
    assert resumed["stages"]["pit_rl/2_policy"]["status"] == "resumed"
    assert model_hashes(tmp_path / "killed" / "cache") == model_hashes(tmp_path / "uninterrupted" / "cache")
