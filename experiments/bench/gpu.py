"""`make bench-gpu` (experiments/bench/gpu.sh): the GPU figures, ours against TRL 1.0 and HF `generate`, one run.

Workloads at the sizes of issue #20 on one GPU (bf16): SFT tokens/s and MFU at 16 x 1024, reward-model pairs/s at
16 x 512, a PPO iteration at batch 64 (prompt 64, response 128, 4 epochs x 4 minibatches) split into generate /
score / update, the same without a critic (ours `advantage: group` against TRL's RLOOTrainer), sampling 64 x 128
new tokens (our decode loop against `generate`, both in bf16), peak memory of a PPO iteration of a ~1 B Llama-style
config with full weights and with LoRA, PPO losses on a fixed batch against a float64 copy of the weights, a profile
of our SFT steps and PPO iteration after a warm-up one, the embedded default pipeline with `trainer=gpu`, and
(`hh_rlhf`, run by gpu.sh after the rest) `+experiment=hh_rlhf` at Pythia-410M's size for a few steps per stage.
Each pair of ours and the reference runs twice, interleaved (AB BA): the ratio is the median of the rounds, with
its range. Models are GPT-2-size configs with random weights over a word-level tokenizer of GPT-2's vocabulary size
(random words: no EOS before the length limit, so both sides do the same work).
`--dry-run` runs every workload through the same code at tiny sizes on CPU (a test does, so the GPU call cannot
fail on a typo). Each workload's failure is recorded and the rest go on; results are rewritten after each one,
so a run cut short still leaves its table. Writes `results/gpu-<card>.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    RESULTS,
    Setup,
    bench_generation,
    bench_ppo,
    bench_reward,
    bench_rloo,
    bench_sft,
    ours_ppo,
    ours_sft,
    peak_tflops,
    sft_tokens,
)
from hh import HH_STEPS, PYTHIA_410M, TINY_NEOX, hh_rlhf  # noqa: E402
from report import machine, time_default_pipeline, write_gpu  # noqa: E402
from timing import LightningStepTimes, median_after  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from pit.data.schema import PreferenceExample  # noqa: E402
from pit.models.factory import TinyCausalLM  # noqa: E402
from pit.models.generate import Sampling  # noqa: E402
from pit.models.lora import LoRA  # noqa: E402
from pit.modules.ppo import PPOModule, Rollout  # noqa: E402
from pit.modules.ppo_config import PPOConfig  # noqa: E402
from pit.modules.ppo_math import clipped_policy_loss  # noqa: E402

GPT2 = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "max_position_embeddings": 2048}   # TinyLlama-1.1B's shape
TINY_GPT2 = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256}
TINY_LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 256}
# The targets of issues #20 and #30, as (workload, field, comparison, bound)
TARGETS = [("SFT", "mfu", ">=", 0.40), ("reward model", "ratio", ">=", 2.0), ("PPO iteration", "ratio", ">=", 3.0),
           ("RL iteration without a critic", "ratio", ">=", 2.0),
           ("rollout sampling", "ratio", ">=", 10.0), ("PPO memory", "lora_over_full", "<", 0.5),
           ("PPO losses vs float64", "max_relative_error", "<", 2e-2)]


@dataclass(frozen=True)
class Scale:
    """Every size of one run: `gpu` is issue #20's, `dry` the same paths at CPU-test size."""

    device: str
    precision: str
    model: dict[str, int]
    vocab: int
    sft: tuple[int, int]                 # batch, tokens per sequence
    reward: tuple[int, int]              # pairs, tokens per sequence
    ppo: tuple[int, int, int]            # batch, prompt tokens, response tokens
    sampling: tuple[int, int]            # batch, new tokens
    memory_model: dict[str, int]
    memory_batch: int
    steps: int
    warmup: int
    ppo_iterations: int
    pipeline: tuple[str, ...] = field(default=())
    hh_model: dict[str, Any] = field(default_factory=dict)   # +experiment=hh_rlhf's architecture (GPT-NeoX)
    hh_vocab: int = 0
    hh_overrides: tuple[str, ...] = field(default=())


SCALES = {
    "gpu": Scale("cuda", "bf16", GPT2, 50257, (16, 1024), (16, 512), (64, 64, 128), (64, 128), LLAMA_1B, 64,
                 steps=12, warmup=4, ppo_iterations=4, pipeline=("trainer=gpu",), hh_model=PYTHIA_410M,
                 hh_vocab=50304, hh_overrides=("trainer=gpu", *(o.format(sft=20, rm=10, rl=2, samples=64)
                                                                for o in HH_STEPS))),
    "dry": Scale("cpu", "fp32", TINY_GPT2, 600, (2, 64), (2, 32), (4, 8, 8), (4, 8), TINY_LLAMA, 4,
                 steps=3, warmup=1, ppo_iterations=2,
                 pipeline=("trainer=cpu", "objective=sft_only", "dataset.n_pairs=200", "model.config.n_layer=1",
                           "train.sft_policy.max_steps=2", "train.sft_policy.val_every=2",
                           "train.sft_policy.eval_samples=8", "train.sft_pit.max_steps=2",
                           "train.sft_pit.val_every=2", "train.sft_pit.eval_samples=8", "train.judge.max_steps=2",
                           "train.judge.val_every=2", "evaluate.samples=8", "figures=false"),
                 hh_model=TINY_NEOX, hh_vocab=400,
                 hh_overrides=("trainer=cpu", "dataset.max_prompt_tokens=64", "dataset.max_response_tokens=12",
                               "reward_model.max_length=96", "judge.backbone.max_length=96",
                               "baseline.max_feedback_tokens=4", "eval_sampling.batch_size=8",
                               "evaluate.sampling.batch_size=8", "train.rlhf_policy.batch_size=8",
                               "train.pit_rl.batch_size=8", "splits.val=0.02", "splits.test=0.86", "splits.judge=0.04",
                               *(o.format(sft=2, rm=2, rl=1, samples=8) for o in HH_STEPS))),
}


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of `vocab` ids ("w3" ... ), so any sampled id decodes and every word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   padding_side="left")


def random_setup(scale: Scale, model: dict[str, int], rows: int, prompt: int, response: int, model_type: str = "gpt2",
                 **kwargs: Any) -> Setup:
    """A `Setup` of random word sequences: prompts of `prompt` tokens, chosen/rejected of `response - 1` (+ EOS)."""
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(f"w{rng.randrange(3, scale.vocab)}" for _ in range(n))

    examples = [PreferenceExample(text(prompt), text(response - 1), text(response - 1)) for _ in range(rows)]
    spec = TinyCausalLM(model_type, scale.vocab, model)
    device = scale.device
    peak = peak_tflops(torch.cuda.get_device_name()) if device.startswith("cuda") else None
    return Setup(spec, word_tokenizer(scale.vocab), examples, [e.prompt for e in examples], prompt, response,
                 scale.precision, device, peak_tflops=peak, **kwargs)


def sft(scale: Scale) -> list[dict[str, Any]]:
    """SFT at batch x length against TRL's `SFTTrainer`: ours eager, then with `compile_training`, `fused_loss` and
    both (the same TRL figure: it is not rerun)."""
    batch, length = scale.sft
    s = random_setup(scale, scale.model, batch * scale.steps, length // 2, length // 2)
    eager = bench_sft(s, batch, scale.steps, scale.warmup)
    rows = [eager]
    for compile_training, fused_loss in ((True, False), (False, True), (True, True)):
        s.compile_training, s.fused_loss = compile_training, fused_loss
        name = " + ".join(n for n, on in (("compile_training", compile_training), ("fused_loss", fused_loss)) if on)
        times, _ = ours_sft(s, batch, scale.steps)
        rate = batch * sft_tokens(s) / median_after(times, scale.warmup)
        single = {k: v for k, v in eager.items() if k not in ("rounds", "ratio_min", "ratio_max")}   # one run
        row = {**single, "workload": f"SFT ({name})", "ours": rate, "ratio": rate / eager["reference"]}
        if "mfu" in eager:
            row["mfu"] = eager["mfu"] * rate / eager["ours"]
        print(f"SFT ({name}): ours {rate:,.1f} tokens/s, ratio {row['ratio']:.2f}", flush=True)
        rows.append(row)
    return rows


def reward(scale: Scale) -> list[dict[str, Any]]:
    batch, length = scale.reward
    s = random_setup(scale, scale.model, batch * scale.steps, length // 2, length // 2)
    return [bench_reward(s, batch, scale.steps, scale.warmup)]


def ppo(scale: Scale) -> list[dict[str, Any]]:
    batch, prompt, response = scale.ppo
    s = random_setup(scale, scale.model, batch * scale.ppo_iterations, prompt, response, generation_cache="static")
    return [bench_ppo(s, batch, scale.ppo_iterations, warmup=1)]


def rloo(scale: Scale) -> list[dict[str, Any]]:
    batch, prompt, response = scale.ppo
    s = random_setup(scale, scale.model, batch * scale.ppo_iterations, prompt, response, generation_cache="static")
    return [bench_rloo(s, batch, scale.ppo_iterations, warmup=1)]


def sampling(scale: Scale) -> list[dict[str, Any]]:
    """Our decode loop against transformers' `generate` with the same KV cache on both sides (static: our step a CUDA
    graph, `generate`'s compiled by transformers), sampling at temperature 1 as rollouts do, in the scale's
    precision: new tokens per second."""
    batch, new = scale.sampling
    out = []
    for cache in ("dynamic", "static"):
        s = random_setup(scale, scale.model, batch, 64 if scale.device != "cpu" else 8, new, generation_cache=cache)
        result = bench_generation(s, batch, max(scale.steps - 4, 3), scale.warmup - 1)
        step_ms = {f"ms_per_step_{k}": 1e3 * batch / result[k] / new for k in ("ours", "reference")}
        result.update(workload="rollout sampling" + (" (static cache)" if cache == "static" else ""),
                      unit="new tokens/s", ours=result["ours"] * new, reference=result["reference"] * new, **step_ms)
        out.append(result)
    return out


def _ppo_module(s: Setup, policy: Any, reference: Any, batch: int) -> PPOModule:
    sampling_ = Sampling(max_new_tokens=s.max_response, temperature=1.0, batch_size=batch)
    config = PPOConfig(lr=1e-6, ppo_epochs=1, minibatches=4, init_beta=0.05, target_kl=None)
    return PPOModule(policy, reference, s.tokenizer, lambda items, texts, ids: torch.zeros(len(texts)), sampling_,
                     s.max_prompt, config, prefix="ppo", total_steps=10 ** 6)


def memory(scale: Scale) -> list[dict[str, Any]]:
    """Peak device memory of one PPO iteration of the Llama-style config: full weights (+ a reference copy) vs LoRA
    (frozen weights, the reference is the base with adapters off). CPU: the same path, no figure."""
    batch, prompt, response = scale.memory_batch, scale.ppo[1], scale.ppo[2]
    s = random_setup(scale, scale.memory_model, batch, prompt, response, model_type="llama")
    peaks = {}
    for name in ("full", "lora"):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with torch.device(scale.device):
            policy = s.causal_lm()
        module = (_ppo_module(s, policy, copy.deepcopy(policy), batch) if name == "full"
                  else _ppo_module(s, LoRA(r=16, alpha=32).wrap(policy), None, batch))
        loader = torch.utils.data.DataLoader([Rollout(x, x) for x in s.inputs], batch_size=batch, collate_fn=list)
        s.trainer(module.config.minibatches, LightningStepTimes()).fit(module, loader)
        peaks[name] = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
        del module, policy
    parameters = sum(p.numel() for p in s.causal_lm().parameters()) if scale.device == "cpu" else None
    return [{"workload": "PPO memory", "unit": "GiB", "full_gib": peaks["full"], "lora_gib": peaks["lora"],
             "lora_over_full": peaks["lora"] / peaks["full"], "batch": batch, "parameters": parameters}]


def losses(scale: Scale) -> list[dict[str, Any]]:
    """Our bf16 log-probs and clipped policy loss on a fixed batch against a straightforward float64 computation."""
    batch, prompt, response = scale.ppo
    s = random_setup(scale, scale.model, batch, prompt, response)
    torch.manual_seed(0)
    policy = s.causal_lm().to(scale.device)
    module = _ppo_module(s, policy, None, batch).to(scale.device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, scale.vocab, (batch, prompt + response), generator=g).to(scale.device)
    mask = torch.ones_like(ids)
    resp_mask = torch.ones(batch, response, device=scale.device)
    advantages = torch.randn(batch, response, generator=g).to(scale.device)
    with torch.no_grad():   # the reference: a float64 copy of the weights (float64 matmuls never use TF32)
        logits64 = copy.deepcopy(policy).double()(input_ids=ids).logits[:, prompt - 1:-1]
        ref_logp = torch.log_softmax(logits64, -1).gather(-1, ids[:, prompt:, None]).squeeze(-1)
        old_logp = ref_logp + 0.1 * torch.randn(ref_logp.shape, generator=g, dtype=torch.float64).to(scale.device)
        ratio = torch.exp(ref_logp - old_logp)
        ref_loss = -torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages).mean()
        dtype = torch.bfloat16 if scale.precision == "bf16" else torch.float32
        with torch.autocast(scale.device.split(":")[0], dtype=dtype, enabled=scale.precision == "bf16"):
            logp, _, _ = module._forward(policy, ids, mask, prompt, with_values=False)
        ours = clipped_policy_loss(logp.float(), old_logp.float(), advantages, resp_mask, 0.2).loss.double()
    logp_error = ((logp.double() - ref_logp).norm() / ref_logp.norm()).item()
    # relative to the loss's scale, mean |advantage|: the loss itself averages to about 0 with random advantages
    loss_error = abs(ours.item() - ref_loss.item()) / advantages.abs().mean().item()
    return [{"workload": "PPO losses vs float64", "unit": "relative error", "logp_relative_error": logp_error,
             "loss_relative_error": loss_error, "max_relative_error": max(logp_error, loss_error)}]


def profile(scale: Scale) -> list[dict[str, Any]]:
    """torch.profiler over our SFT steps and a PPO iteration after a warm-up one: top entries by device (else CPU)
    time. Setup, the warm-up step and teardown (the model's moves to and from the device) stay out."""
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    batch, length = scale.sft
    sft_timer, ppo_timer = LightningStepTimes(profile_from=1), LightningStepTimes(profile_from=1)
    ours_sft(random_setup(scale, scale.model, batch * 3, length // 2, length // 2), batch, 3, timer=sft_timer)
    ours_ppo(random_setup(scale, scale.model, 2 * scale.ppo[0], *scale.ppo[1:], generation_cache="static"),
             scale.ppo[0], 2, timer=ppo_timer)
    return [{"workload": f"profile: {name}", "steps_profiled": len(timer.times) - 1,
             "table": timer.profiler.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=60)}
            for name, timer in (("SFT steps", sft_timer), ("PPO iteration", ppo_timer))]


def pipeline(scale: Scale) -> list[dict[str, Any]]:
    """The embedded default, cold, with this scale's trainer: wall time and per stage."""
    return [{"workload": "default pipeline", **time_default_pipeline(*scale.pipeline)}]


WORKLOADS: dict[str, Callable[[Scale], list[dict[str, Any]]]] = {
    "sampling": sampling, "sft": sft, "reward": reward, "ppo": ppo, "rloo": rloo, "losses": losses, "memory": memory,
    "profile": profile, "pipeline": pipeline, "hh_rlhf": hh_rlhf}

ROWS = {"sampling": "rollout sampling", "sft": "SFT", "reward": "reward model", "ppo": "PPO iteration",
        "rloo": "RL iteration without a critic",
        "losses": "PPO losses", "memory": "PPO memory", "profile": "profile:", "pipeline": "default pipeline",
        "hh_rlhf": "+experiment=hh_rlhf"}


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of issues #20 and #30 against the best row of its workload: met, missed, or not measured."""
    out = []
    for workload, key, op, bound in TARGETS:
        values = [r[key] for r in rows if r.get("workload", "").startswith(workload) and key in r
                  and r[key] == r[key]]   # NaN: not measured (peak memory on a CPU)
        value = (max(values) if op == ">=" else min(values)) if values else None
        met = None if value is None else (value >= bound if op == ">=" else value < bound)
        out.append({"workload": workload, "measure": key, "target": f"{op} {bound:g}", "value": value, "met": met})
    return out


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs on one card (a run cut short, then the rest): a later run's rows replace an
    earlier run's rows of the same workload, and a workload measured in any run drops its earlier failure."""
    if len({r["machine"] for r in runs}) != 1:
        raise SystemExit(f"runs from different machines cannot be merged: {sorted({r['machine'] for r in runs})}")
    merged = {**runs[0], "workloads": [], "errors": {}, "seconds": sum(r["seconds"] for r in runs)}
    for run in runs:
        names = {r["workload"] for r in run["workloads"]}
        merged["workloads"] = [r for r in merged["workloads"] if r["workload"] not in names] + run["workloads"]
        merged["errors"].update(run["errors"])
    measured = {w for w, prefix in ROWS.items() if any(r["workload"].startswith(prefix) for r in merged["workloads"])}
    merged["errors"] = {k: v for k, v in merged["errors"].items() if k not in measured}
    merged["targets"] = verdicts(merged["workloads"])
    return merged


def card_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name().replace("NVIDIA ", "").split()[0].lower()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU through the same code paths")
    parser.add_argument("--workloads", default=",".join(w for w in WORKLOADS if w != "hh_rlhf"),
                        help=f"comma-separated, of {list(WORKLOADS)} (default: all but hh_rlhf, which gpu.sh runs "
                             "after the rest with its own deadline)")
    parser.add_argument("--deadline", type=float, default=470.0,
                        help="seconds after which the remaining workloads are skipped (recorded as such)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="only combine these runs' results (on one card; later runs win) into one report")
    args = parser.parse_args(argv)
    if args.merge:
        path = write_gpu(merge([json.loads(f.read_text()) for f in args.merge]), args.out)
        print(path.read_text())
        return path
    scale = SCALES["dry" if args.dry_run else "gpu"]
    if scale.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a CPU machine")
    torch.set_float32_matmul_precision("high")
    try:
        import trl
        reference = f"TRL {trl.__version__} (sampling: transformers generate)"
    except ImportError:
        reference = "TRL not installed"
    start = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "card": card_name(), "scale": "dry" if args.dry_run else "gpu",
                               "precision": scale.precision, "reference": reference,
                               "pipeline_overrides": list(scale.pipeline), "workloads": [], "errors": {}}
    path = None
    for name in args.workloads.split(","):
        elapsed = time.perf_counter() - start
        if elapsed > args.deadline:
            results["errors"][name] = f"skipped: {elapsed:.0f} s elapsed, past --deadline {args.deadline:.0f} s"
        else:
            print(f"== {name} (at {elapsed:.0f} s)", flush=True)
            try:
                results["workloads"] += WORKLOADS[name](scale)
            except Exception:   # one workload's failure is recorded; the others still run
                results["errors"][name] = traceback.format_exc()
                print(results["errors"][name], file=sys.stderr, flush=True)
        results["seconds"] = time.perf_counter() - start
        results["targets"] = verdicts(results["workloads"])
        path = write_gpu(results, args.out)
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
