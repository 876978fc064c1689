"""The pretrained-model path minus the download: `model.name_or_path` names a local dir holding a tiny random
GPT-NeoX (Pythia's family), Llama or Qwen2 saved with `save_pretrained`, and `+experiment=hh_rlhf` /
`+experiment=tldr` run the whole pipeline on it. The families differ in what has broken such code before:
rotary embeddings and position ids under left padding, tied or untied LM heads, grouped-query attention."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import FAMILIES, FAST_TRAIN, compose_config, rejudged, stage_status
from hydra.utils import instantiate
from transformers import AutoConfig, AutoModelForCausalLM

from pit.models.reward import load_reward_model
from pit.models.tokenizer import train_bpe_tokenizer
from pit.run import run


def save_tiny(family: str, texts: list[str], directory: Path, initializer_range: float = 0.02) -> Path:
    """A random `family` model and a BPE tokenizer trained on `texts`, saved as a hub checkpoint would be."""
    tokenizer = train_bpe_tokenizer(texts, 400)
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  initializer_range=initializer_range, **FAMILIES[family])
    AutoModelForCausalLM.from_config(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def hh_texts(hh_slice: Path, n: int = 400) -> list[str]:
    with gzip.open(hh_slice, "rt") as f:
        return [json.loads(line)["chosen"] for _, line in zip(range(n), f, strict=False)]


def tldr_file(hh_slice: Path, path: Path, n: int = 160) -> Path:
    """TL;DR comparisons in the openai/summarize_from_feedback layout, their text taken from the HH slice."""
    with gzip.open(hh_slice, "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    with path.open("w") as out:
        for i, row in enumerate(rows):
            post = row["chosen"].split("Assistant:")[0].replace("Human:", "").strip()[:300]
            summaries = [{"text": " " + row["chosen"].split("Assistant:")[-1].strip()[:80], "policy": "ref"},
                         {"text": " " + row["rejected"].split("Assistant:")[-1].strip()[:80], "policy": "sup"}]
            out.write(json.dumps({"info": {"id": f"p{i}", "post": post, "title": f"t{i}", "subreddit": "s"},
                                  "summaries": summaries, "choice": 0, "split": "train"}) + "\n")
    return path


RUNS = [("gpt_neox", "hh_rlhf"), ("llama", "hh_rlhf"), ("qwen2", "tldr")]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "experiment"), RUNS, ids=[f"{f}-{e}" for f, e in RUNS])
def test_local_family_checkpoint_runs_the_experiment(family: str, experiment: str, tmp_path: Path,
                                                     hh_slice: Path) -> None:
    model_dir = save_tiny(family, hh_texts(hh_slice), tmp_path / family)
    data = hh_slice if experiment == "hh_rlhf" else tldr_file(hh_slice, tmp_path / "tldr.jsonl")
    overrides = [f"+experiment={experiment}", f"model.name_or_path={model_dir}", "trainer=cpu",
                 f"dataset.path={data}", "reward_model=causal", "reward_model.max_length=96",
                 "reward_model@judge.backbone=causal", "judge.backbone.init_from=null",
                 "judge.backbone.max_length=96",
                 "dataset.max_prompt_tokens=64", "dataset.max_response_tokens=12", "evaluate.samples=8",
                 "evaluate.iterations=1", "baseline.max_feedback_tokens=4", "eval_sampling.batch_size=8",
                 "evaluate.sampling.batch_size=8", *(o for o in FAST_TRAIN if not o.startswith("model."))]
    if experiment == "hh_rlhf":   # every pair of the slice is parsed; few are scored (R_P's offsets cover all train)
        overrides += ["splits.val=0.02", "splits.test=0.86", "splits.judge=0.04"]
    cfg = compose_config(overrides, tmp_path)
    results = run(cfg)
    assert set(stage_status(results).values()) == {"ran"}
    assert results["eval"]["n"] == 8
    stages, policy_input = results["stages"], instantiate(cfg.dataset).templates.policy_input
    judge = load_reward_model(tmp_path / "cache" / "judge" / stages["judge"]["key"])   # the verdicts again, from disk
    pair = results["eval"]["pairs"]["pit_vs_policy"]
    assert {k: pair[k] for k in ("win", "tie", "lose", "delta", "n")} == rejudged(
        tmp_path / "cache" / "evaluate" / stages["evaluate"]["key"] / "generations.jsonl",
        lambda prompts, texts: judge.score([policy_input(p) for p in prompts], texts).tolist())
    assert AutoConfig.from_pretrained(tmp_path / "cache" / "sft_policy" /
                                      results["stages"]["sft_policy"]["key"]).model_type == family


@pytest.mark.parametrize("family", list(FAMILIES))
def test_left_padding_changes_nothing(family: str, tmp_path: Path, hh_slice: Path) -> None:
    """A prompt's greedy response and its PPO log-probs are the same alone and left-padded in a batch with a longer
    prompt: the mask hides the pads and position ids follow it. Rotary embeddings see only relative positions, so a
    shifted position id shows in GPT-2's learned absolute ones (tested: ids 0..T-1 for every row fail there); large
    random weights make attention sharp enough for either to show."""
    import torch

    from pit.data.encode import encode_inputs, pad_rows
    from pit.models.factory import PretrainedCausalLM
    from pit.models.generate import Sampling, sample
    from pit.modules.ppo import PPOModule
    from pit.modules.ppo_config import PPOConfig

    spec = PretrainedCausalLM(str(save_tiny(family, hh_texts(hh_slice), tmp_path / family, initializer_range=0.5)))
    tokenizer = spec.tokenizer([])
    model = spec.model(tokenizer).eval()
    rows = encode_inputs(tokenizer, ["Human: how do I bake bread?", "Human: what is the capital of France, and why "
                                     "is it that city rather than another one?"], 64)
    assert len(rows[0]) < len(rows[1])
    greedy = Sampling(max_new_tokens=6, temperature=0.0)
    module = PPOModule(model, None, tokenizer, lambda *a: torch.zeros(1), greedy, 64, PPOConfig(), "ppo", 1)
    outputs = []
    for batch in ([rows[0]], rows):
        ids, mask = pad_rows(batch, tokenizer.pad_token_id, "cpu", left=True)
        response, response_mask = sample(model, ids, mask, greedy, tokenizer.eos_token_id, tokenizer.pad_token_id)
        full, full_mask = torch.cat([ids, response], 1), torch.cat([mask, response_mask], 1)
        with torch.no_grad():
            logp = module._forward(model, full, full_mask, ids.shape[1], with_values=False)[0]
        outputs.append((response[0], logp[0], response_mask[0].bool()))
    (alone, logp_alone, m_alone), (padded, logp_padded, m_padded) = outputs
    assert torch.equal(alone[m_alone], padded[m_padded])
    torch.testing.assert_close(logp_alone[m_alone], logp_padded[m_padded], atol=1e-4, rtol=1e-4)
