"""gpu.py's `hh_rlhf` workload: `+experiment=hh_rlhf` at Pythia-410M's size, every stage a few steps, with the full
config's projected wall time."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PYTHIA_410M = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "rotary_pct": 0.25, "rotary_emb_base": 10000, "max_position_embeddings": 2048,
               "use_parallel_residual": True, "tie_word_embeddings": False}   # EleutherAI/pythia-410m's config.json
TINY_NEOX = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "rotary_pct": 0.25, "max_position_embeddings": 256, "tie_word_embeddings": False}
# Every stage of +experiment=hh_rlhf for a fixed few steps; the rest of its config as users run it, but the judge: a
# causal reward model trained from scratch on the judge split (the default's MiniLM comes from a package the GPU
# image lacks)
HH_STEPS = ("train.sft_policy.max_steps={sft}", "train.sft_policy.val_every={sft}", "train.sft_policy.eval_samples=16",
            "train.sft_pit.max_steps={sft}", "train.sft_pit.val_every={sft}", "train.sft_pit.eval_samples=16",
            "train.reward.max_steps={rm}", "train.reward.val_every={rm}", "train.gap_reward.max_steps={rm}",
            "train.gap_reward.val_every={rm}", "train.judge.max_steps={rm}", "train.judge.val_every={rm}",
            "train.rlhf_policy.iterations={rl}", "train.rlhf_policy.eval_samples=16", "train.pit_rl.iterations={rl}",
            "train.pit_rl.eval_samples=16", "evaluate.samples={samples}", "evaluate.iterations=1",
            "reward_model@judge.backbone=causal", "judge.backbone.init_from=null", "figures=false", "logger=none",
            "trainer.enable_progress_bar=false")


def hh_rlhf(scale: Any) -> list[dict[str, Any]]:
    """`python -m pit.run +experiment=hh_rlhf` at its size: Pythia-410M's architecture from config with random
    weights (no hub here) and a byte-level BPE tokenizer of up to Pythia's vocabulary size trained on the shipped HH
    slice, every stage for a fixed few steps (`Scale.hh_overrides`), in this process: per-stage seconds and
    training throughput, peak device memory, and the wall time the full config would take, each stage's training
    time scaled linearly to its full step count (evaluation to its full prompts x iterations; setup as measured)."""
    import gzip

    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    from pit.models.tokenizer import train_bpe_tokenizer
    from pit.resolvers import shipped_data
    from pit.run import run

    data = shipped_data("hh-rlhf/harmless-base-test.jsonl.gz")
    with gzip.open(data, "rt") as f:
        texts = [json.loads(line)["chosen"] for line in f]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_bpe_tokenizer(texts, scale.hh_vocab)
        config = AutoConfig.for_model("gpt_neox", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                      **scale.hh_model)
        model = AutoModelForCausalLM.from_config(config)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(f"{tmp}/model", safe_serialization=True)
        del model
        tokenizer.save_pretrained(f"{tmp}/model")
        conf = str(Path(__file__).resolve().parents[2] / "conf")
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            full = compose("config", overrides=["+experiment=hh_rlhf"])
            cfg = compose("config", overrides=["+experiment=hh_rlhf", f"model.name_or_path={tmp}/model",
                                               f"dataset.path={data}", *scale.hh_overrides])
        with open_dict(cfg):
            cfg.paths.output_dir, cfg.paths.cache_dir = f"{tmp}/out", f"{tmp}/cache"
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        results = run(cfg)
        wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
    stages, projected = {}, 0.0
    for name, stage in results["stages"].items():
        seconds, train = stage["seconds"], stage.get("metrics", {}).get("train_seconds", 0.0)
        scale_up, row = hh_scale_up(name, cfg, full), {"seconds": seconds, "train_seconds": train}
        projected += seconds - train + train * scale_up if train else seconds * scale_up
        stages[name] = {**row, "scale_up": scale_up}
    return [{"workload": "+experiment=hh_rlhf, few steps", "unit": "s", "wall_seconds": wall, "stages": stages,
             "peak_gib": peak, "parameters": parameters, "vocab": len(tokenizer),
             "projected_full_seconds": projected, "overrides": list(scale.hh_overrides)}]


def hh_scale_up(stage: str, cfg: Any, full: Any) -> float:
    """How many times the full config's work a stage did in the short run: training steps (PPO: iterations), or
    for evaluation prompts x improvement steps; 1 for the stages that do not scale (tokenizer)."""
    name = stage.split("/")[0]
    if name == "evaluate":
        return (full.evaluate.samples * full.evaluate.iterations) / (cfg.evaluate.samples * cfg.evaluate.iterations)
    train, train_full = cfg.train.get(name), full.train.get(name)
    if train is None:
        return 1.0
    key = "iterations" if "iterations" in train else "max_steps"
    return train_full[key] / train[key]
