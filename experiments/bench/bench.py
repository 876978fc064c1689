"""`make bench`: our SFT, reward-model and PPO training and our rollout sampling against TRL 1.0, side by side.

Both sides get the same GPT-2-style model (random init from one seed), tokenizer, data (the synthetic task),
batch size, sequence lengths, precision and optimizer settings, and run in this one process. Each figure is
the median of the per-step times after warm-up steps; the ratio ours/TRL is measured in the same run.
Run with the benchmark environment (`make bench` creates `.venv-bench` with `trl==1.0.0`).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import patch

import lightning as L
import torch
from report import machine, time_default_pipeline, write
from timing import HFIterationTimes, HFStepTimes, LightningStepTimes, Phases, now, paired
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

from pit.data.encode import collate_groups, collate_sft, encode_inputs, encode_pairs, pad_rows
from pit.data.schema import PreferenceExample
from pit.data.synthetic import SyntheticSource
from pit.models.factory import TinyCausalLM, set_generation_cache
from pit.models.generate import Sampling, hf_generate, response_mask, sample
from pit.models.reward import CausalRewardSpec
from pit.modules.ppo import PPOModule, Rollout
from pit.modules.ppo_config import PPOConfig
from pit.modules.preference import RewardModule
from pit.modules.sft import SFTModule

SIZES = {"tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 256},
         "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 256}}
RESULTS = Path(__file__).resolve().parent / "results"
PEAK_BF16_TFLOPS = {"H100": 989.5, "H200": 989.5, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU (by a substring of its name), else None."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def training_flops_per_token(parameters: int, layers: int, width: int, seq_len: float) -> float:
    """Model FLOPs per trained token: 6·N for the weights plus 12·layers·width·seq for attention (PaLM, App. B)."""
    return 6 * parameters + 12 * layers * width * seq_len


class Setup:
    """Model config, tokenizer and data shared by both sides (`Setup.synthetic`: the synthetic task's)."""

    def __init__(self, spec: TinyCausalLM, tokenizer: Any, examples: list[PreferenceExample], inputs: list[str],
                 max_prompt: int, max_response: int, precision: str, device: str, peak_tflops: float | None = None,
                 generation_cache: str = "dynamic", compile_training: bool = False, fused_loss: bool = False):
        self.spec, self.tokenizer, self.examples, self.inputs = spec, tokenizer, examples, inputs
        self.max_prompt, self.max_response = max_prompt, max_response
        self.precision, self.device, self.peak_tflops = precision, device, peak_tflops
        self.generation_cache = generation_cache   # our sampler's KV cache; TRL and raw `generate` keep theirs
        self.compile_training = compile_training   # our SFT forward through torch.compile
        self.fused_loss = fused_loss               # our SFT loss through the chunked LM head (model.fused_loss)

    @classmethod
    def synthetic(cls, size: str, precision: str, device: str, **kwargs: Any) -> Setup:
        source = SyntheticSource(n_pairs=4000, seed=0)
        examples = source.load().examples
        spec = TinyCausalLM(config=SIZES[size])
        tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt, e.chosen, e.rejected)])
        return cls(spec, tokenizer, examples, [source.templates.policy_input(e.prompt) for e in examples],
                   source.max_prompt_tokens, source.max_response_tokens, precision, device, **kwargs)

    def causal_lm(self) -> Any:
        torch.manual_seed(0)
        return self.spec.model(self.tokenizer)

    def classifier(self) -> Any:
        """TRL's reward/value model: the same GPT-2 trunk with a scalar `score` head."""
        config = self.spec.hf_config(self.tokenizer)
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_config(config)

    def hf_args(self, **kwargs: Any) -> dict[str, Any]:
        """Settings every TRL config gets: same precision and device, nothing saved, logged or evaluated, and no
        gradient checkpointing (TRL 1.0 turns it on by default; ours is off, so on TRL it would cost a recompute)."""
        return {"output_dir": tempfile.mkdtemp(prefix="bench-trl-"), "report_to": [], "save_strategy": "no",
                "gradient_checkpointing": False,
                "logging_steps": 10 ** 6, "bf16": self.precision == "bf16", "use_cpu": self.device == "cpu",
                "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": True, "weight_decay": 0.0,
                "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 1.0, **kwargs}

    def trainer(self, steps: int, callback: L.Callback, **kwargs: Any) -> L.Trainer:
        return L.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator=self.device, devices=1,
                         precision="bf16-mixed" if self.precision == "bf16" else "32-true", callbacks=[callback],
                         num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


def sft_pairs(s: Setup) -> list[Any]:
    return encode_pairs(s.tokenizer, s.inputs, [e.chosen for e in s.examples], s.max_prompt, s.max_response)


def sft_tokens(s: Setup) -> float:
    """Mean tokens per SFT sequence (prompt + response): the work of one row."""
    return statistics.mean(len(p.input_ids) + len(p.response_ids) for p in sft_pairs(s))


def ours_sft(s: Setup, batch: int, steps: int, timer: LightningStepTimes | None = None
             ) -> tuple[list[float], SFTModule]:
    """Our SFT on (x, y_w) for `steps` steps: per-step times and the module."""
    pairs = sft_pairs(s)
    ours = timer or LightningStepTimes()
    module = SFTModule(s.causal_lm(), lr=1e-3, weight_decay=0.0, warmup_steps=0, total_steps=10 ** 6, prefix="sft",
                       compile=s.compile_training, fused_loss=s.fused_loss)
    loader = DataLoader(pairs, batch_size=batch, shuffle=True, drop_last=True,
                        collate_fn=partial(collate_sft, pad_id=s.tokenizer.pad_token_id))
    s.trainer(steps, ours, gradient_clip_val=1.0).fit(module, loader)
    return ours.times, module


def bench_sft(s: Setup, batch: int, steps: int, warmup: int, repeats: int = 2) -> dict[str, Any]:
    """Supervised fine-tuning on (x, y_w) with the loss on response tokens: trained tokens per second."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_dict({"prompt": s.inputs, "completion": [e.chosen for e in s.examples]})

    def theirs() -> list[float]:
        timer = HFStepTimes()
        SFTTrainer(model=s.causal_lm(), processing_class=s.tokenizer, train_dataset=data, callbacks=[timer],
                   args=SFTConfig(**s.hf_args(per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-3,
                                              max_length=s.max_prompt + s.max_response, packing=False,
                                              completion_only_loss=True))).train()
        return timer.times

    tokens = sft_tokens(s)
    result = paired("SFT", "tokens/s", batch * tokens, lambda: ours_sft(s, batch, steps)[0], theirs, warmup, repeats)
    peak = args_peak_tflops(s)
    if peak:
        config = s.spec.hf_config(s.tokenizer)
        flops = training_flops_per_token(sum(p.numel() for p in s.causal_lm().parameters()), config.n_layer,
                                         config.n_embd, tokens)
        result.update(peak_tflops=peak, mfu=result["ours"] * flops / (peak * 1e12),
                      reference_mfu=result["reference"] * flops / (peak * 1e12))
        print(f"SFT MFU: ours {result['mfu']:.1%}, reference {result['reference_mfu']:.1%} of {peak} TFLOP/s")
    return result


def args_peak_tflops(s: Setup) -> float | None:
    """The peak to compute MFU against: `--peak-tflops`, else the known peak of the GPU in use."""
    if s.peak_tflops:
        return s.peak_tflops
    return peak_tflops(torch.cuda.get_device_name()) if s.device.startswith("cuda") else None


def bench_reward(s: Setup, batch: int, steps: int, warmup: int, repeats: int = 2) -> dict[str, Any]:
    """Bradley-Terry reward model on (x, y_w, y_l) pairs, a scalar head on the same GPT-2 trunk: pairs per second."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    def ours() -> list[float]:
        torch.manual_seed(0)
        model = CausalRewardSpec(init_from=None).build(s.tokenizer, None, s.spec, s.max_response)
        items = list(zip(model.encode(s.inputs, [e.chosen for e in s.examples]),
                         model.encode(s.inputs, [e.rejected for e in s.examples]), strict=True))
        timer = LightningStepTimes()
        module = RewardModule(model, prefix="reward", lr=1e-4, weight_decay=0.0, warmup_steps=0,
                              total_steps=10 ** 6)
        loader = DataLoader(items, batch_size=batch, shuffle=True, drop_last=True,
                            collate_fn=partial(collate_groups, pad_id=model.pad_id()))
        s.trainer(steps, timer, gradient_clip_val=1.0).fit(module, loader)
        return timer.times

    data = Dataset.from_dict({"prompt": s.inputs, "chosen": [e.chosen for e in s.examples],
                              "rejected": [e.rejected for e in s.examples]})

    def theirs() -> list[float]:
        timer = HFStepTimes()
        torch.manual_seed(0)
        RewardTrainer(model=s.classifier(), processing_class=s.tokenizer, train_dataset=data, callbacks=[timer],
                      args=RewardConfig(**s.hf_args(per_device_train_batch_size=batch, max_steps=steps,
                                                    learning_rate=1e-4,
                                                    max_length=s.max_prompt + s.max_response))).train()
        return timer.times

    return paired("reward model", "pairs/s", batch, ours, theirs, warmup, repeats)


def ours_ppo(s: Setup, batch: int, iterations: int, epochs: int = 4, minibatches: int = 4,
             timer: LightningStepTimes | None = None, advantage: str = "gae", group_size: int = 4) -> list[float]:
    """Our PPO for `iterations` iterations of `batch` samples against a fresh GPT-2-trunk reward model: per-iteration
    times. `advantage="group"`: no critic, `group_size` samples per prompt (RLOO's baseline). A timer with `phases`
    gets the seconds of generation (`sample`) and scoring (reward model, forward passes without gradients)."""
    import pit.modules.ppo

    torch.manual_seed(0)
    reward = CausalRewardSpec(init_from=None).build(s.tokenizer, None, s.spec, s.max_response)
    policy = set_generation_cache(s.causal_lm(), s.generation_cache)
    rollouts = [Rollout(x, x) for x in s.inputs]
    sampling = Sampling(max_new_tokens=s.max_response, temperature=1.0, batch_size=batch)
    config = PPOConfig(lr=3e-6, ppo_epochs=epochs, minibatches=minibatches, init_beta=0.05, target_kl=None,
                       advantage=advantage, group_size=group_size)
    same_tokens = reward.reads_tokens_of(s.tokenizer)   # as in the pipeline: the sampled ids, no re-encoding
    ours = timer or LightningStepTimes()
    phases = ours.phases or Phases()
    phases.start_run()
    module = PPOModule(policy, copy.deepcopy(policy), s.tokenizer,
                       phases.timed("score", lambda items, texts, ids: reward.score(
                           [i.input_text for i in items], texts, ids if same_tokens else None)),
                       sampling, s.max_prompt, config, prefix="ppo", total_steps=10 ** 6, scorers=(reward,))
    module._forward = phases.timed("score", module._forward, without_grad_only=True)
    inputs = batch if advantage == "gae" else batch // group_size   # each sampled group_size times
    loader = DataLoader(rollouts, batch_size=inputs, shuffle=True, drop_last=True, collate_fn=list)
    with patch.multiple(pit.modules.ppo, sample=phases.timed("generate", pit.modules.ppo.sample)):
        s.trainer(iterations * epochs * minibatches, ours).fit(module, loader)
    return ours.times


def bench_ppo(s: Setup, batch: int, iterations: int, warmup: int, epochs: int = 4, minibatches: int = 4,
              repeats: int = 2) -> dict[str, Any]:
    """One PPO iteration = rollouts of `batch` prompts + reward + `epochs` x `minibatches` updates: episodes/s."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig
    from trl.experimental.ppo import PPOTrainer

    tokenizer = copy.deepcopy(s.tokenizer)
    tokenizer.padding_side = "left"
    ids = encode_inputs(s.tokenizer, s.inputs, s.max_prompt)

    import trl.experimental.ppo.ppo_trainer as trl_ppo

    our_phases, their_phases = Phases(), Phases()

    def ours() -> list[float]:
        return ours_ppo(s, batch, iterations, epochs, minibatches, timer=LightningStepTimes(phases=our_phases))

    def theirs() -> list[float]:
        timer = HFIterationTimes(phases=their_phases)
        their_phases.start_run()
        torch.manual_seed(0)
        reward_model, value_model = s.classifier(), s.classifier()
        trl_policy = s.causal_lm()
        # TRL 1.0: rollout batch = per_device_train_batch_size x gradient_accumulation_steps, split into
        # num_mini_batches, one optimizer step per minibatch when gradient_accumulation_steps = 1 (as ours)
        with patch.multiple(trl_ppo, batch_generation=their_phases.timed("generate", trl_ppo.batch_generation),
                     forward=their_phases.timed("score", trl_ppo.forward, without_grad_only=True),
                     get_reward=their_phases.timed("score", trl_ppo.get_reward)):
            PPOTrainer(args=TRLPPOConfig(**s.hf_args(per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                                                 num_mini_batches=minibatches, num_ppo_epochs=epochs,
                                                 total_episodes=batch * iterations, learning_rate=3e-6,
                                                 response_length=s.max_response, stop_token="eos",
                                                 temperature=1.0, kl_coef=0.05,
                                                 local_rollout_forward_batch_size=batch, num_sample_generations=0)),
                       processing_class=tokenizer, model=trl_policy, ref_model=copy.deepcopy(trl_policy),
                       reward_model=reward_model, value_model=value_model, callbacks=[timer],
                       train_dataset=Dataset.from_dict({"input_ids": ids})).train()
        return timer.times

    result = paired("PPO iteration (TRL: a separate value model; ours: a value head)", "episodes/s", batch, ours,
                    theirs, warmup, repeats)
    return {**result, "phases": {"ours": our_phases.medians(warmup), "reference": their_phases.medians(warmup)}}


def bench_rloo(s: Setup, batch: int, iterations: int, warmup: int, group: int = 4, epochs: int = 4,
               minibatches: int = 4, repeats: int = 2) -> dict[str, Any]:
    """No critic on either side: ours with `advantage: group` against TRL's `RLOOTrainer`. An iteration samples
    `batch` completions (`batch / group` prompts, `group` each), scores them with a GPT-2-trunk reward model, and
    makes `epochs` x `minibatches` clipped updates with a KL penalty (β 0.05) to a frozen reference: episodes/s."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    our_phases, their_phases = Phases(), Phases()
    tokenizer = copy.deepcopy(s.tokenizer)
    tokenizer.padding_side = "left"
    prompts = Dataset.from_dict({"prompt": s.inputs})

    def ours() -> list[float]:
        return ours_ppo(s, batch, iterations, epochs, minibatches, timer=LightningStepTimes(phases=our_phases),
                        advantage="group", group_size=group)

    def theirs() -> list[float]:
        timer = HFIterationTimes(steps_per_iteration=epochs * minibatches, phases=their_phases)
        their_phases.start_run()
        torch.manual_seed(0)
        # TRL 1.0: one generation of per_device_train_batch_size x steps_per_generation completions, then
        # num_iterations passes of steps_per_generation optimizer steps. It loads its reference from the policy's
        # path, so the policy goes by one.
        policy = tempfile.mkdtemp(prefix="bench-rloo-")
        s.causal_lm().save_pretrained(policy)
        trainer = RLOOTrainer(
            model=policy, reward_funcs=s.classifier(), processing_class=tokenizer,
            reward_processing_classes=tokenizer, train_dataset=prompts, callbacks=[timer],
            args=RLOOConfig(**s.hf_args(per_device_train_batch_size=batch // minibatches,
                                        steps_per_generation=minibatches, num_generations=group,
                                        num_iterations=epochs, max_steps=iterations * epochs * minibatches,
                                        learning_rate=3e-6, max_completion_length=s.max_response, temperature=1.0,
                                        top_k=0, top_p=1.0, beta=0.05, disable_dropout=True)))
        trainer._generate = their_phases.timed("generate", trainer._generate)
        trainer._calculate_rewards = their_phases.timed("score", trainer._calculate_rewards)
        trainer._get_per_token_logps_and_entropies = their_phases.timed(
            "score", trainer._get_per_token_logps_and_entropies, without_grad_only=True)
        trainer.train()
        return timer.times

    result = paired("RL iteration without a critic (RLOO)", "episodes/s", batch, ours, theirs, warmup, repeats)
    return {**result, "phases": {"ours": our_phases.medians(warmup), "reference": their_phases.medians(warmup)}}


def bench_generation(s: Setup, batch: int, calls: int, warmup: int, temperature: float = 1.0,
                     repeats: int = 2) -> dict[str, Any]:
    """Our sampler (`sample`: our decode loop) against transformers' `generate` with the same settings and the same
    KV cache (static: `generate` compiles its own decode step on GPUs), on the same batch and weights in the setup's
    precision; call i of either side draws from seed i. Both sides' new-token counts are recorded (equal on CPU,
    where the tokens are; a compiled step draws other random numbers)."""
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    model = set_generation_cache(s.causal_lm().to(s.device, dtype).eval(), s.generation_cache)   # theirs too
    ours_model = copy.deepcopy(model)
    ids, mask = pad_rows(encode_inputs(s.tokenizer, s.inputs[:batch], s.max_prompt), s.tokenizer.pad_token_id,
                         s.device, left=True)
    sampling = Sampling(max_new_tokens=s.max_response, temperature=temperature, batch_size=batch)
    eos, pad = s.tokenizer.eos_token_id, s.tokenizer.pad_token_id

    tokens: dict[str, int] = {}

    def timed(side: str, fn: Callable[..., Any], model_: Any) -> Callable[[], list[float]]:
        def run() -> list[float]:
            times, tokens[side] = [], 0
            for i in range(calls):
                torch.manual_seed(i)
                start = now()
                out = fn(model_, ids, mask, sampling, eos, pad)
                times.append(now() - start)
                tokens[side] += int((out[1] if isinstance(out, tuple) else response_mask(out, eos)).sum())
            return times
        return run

    result = paired("rollout sampling", "sequences/s", batch, timed("ours", sample, ours_model),
                    timed("reference", hf_generate, model), warmup, repeats)
    result.update(overhead=1 / result["ratio"] - 1, new_tokens=tokens)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="training steps per side (warm-up included)")
    parser.add_argument("--ppo-iterations", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workloads", default="sft,reward,ppo,rloo,generation")
    parser.add_argument("--default-pipeline", action="store_true", help="also time `python -m pit.run` cold")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--generation-cache", choices=["dynamic", "static"], default="dynamic",
                        help="our sampler's KV cache (static: preallocated, decode step compiled on GPUs)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak of the device for SFT's MFU (default: known bf16 peak of the GPU in use)")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    s = Setup.synthetic(args.size, args.precision, args.device, peak_tflops=args.peak_tflops,
                        generation_cache=args.generation_cache)
    import trl

    runs = {"sft": lambda: bench_sft(s, args.batch, args.steps, args.warmup),
            "reward": lambda: bench_reward(s, args.batch, args.steps, args.warmup),
            "ppo": lambda: bench_ppo(s, args.batch, args.ppo_iterations, args.warmup),
            "rloo": lambda: bench_rloo(s, args.batch, args.ppo_iterations, args.warmup),
            "generation": lambda: bench_generation(s, args.batch, args.steps, args.warmup)}
    results = {"machine": machine(), "size": args.size, "device": args.device, "precision": args.precision,
               "parameters": sum(p.numel() for p in s.causal_lm().parameters()),
               "reference": f"TRL {trl.__version__} (generation: transformers generate)",
               "workloads": [runs[w]() for w in args.workloads.split(",")]}
    if args.default_pipeline:
        results["default_pipeline"] = time_default_pipeline()
    write(results, args.out)


if __name__ == "__main__":
    main()
