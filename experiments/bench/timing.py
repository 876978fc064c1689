"""Timing for the benchmarks: step and RL-iteration timers (Lightning and TRL), RL phases, and paired runs of ours
against a reference, interleaved."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from transformers import TrainerCallback


def now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class Phases:
    """Seconds in each phase of every RL iteration of one side: `generate`, `score` (forward passes without gradients
    and the reward model), both from the functions `timed` wraps, and `update` (the rest of the iteration)."""

    def __init__(self) -> None:
        self.runs: list[list[dict[str, float]]] = []
        self.current: dict[str, float] = defaultdict(float)

    def start_run(self) -> None:
        self.runs.append([])
        self.current.clear()

    def timed(self, phase: str, fn: Callable[..., Any], without_grad_only: bool = False) -> Callable[..., Any]:
        """`fn`, its time added to `phase` (with `without_grad_only`, only calls made with gradients off)."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if without_grad_only and torch.is_grad_enabled():
                return fn(*args, **kwargs)
            start = now()
            out = fn(*args, **kwargs)
            self.current[phase] += now() - start
            return out
        return wrapper

    def end_iteration(self, seconds: float) -> None:
        generate, score = self.current["generate"], self.current["score"]
        self.runs[-1].append({"generate": generate, "score": score, "update": seconds - generate - score})
        self.current.clear()

    def medians(self, warmup: int) -> dict[str, float]:
        """Median seconds per phase over the iterations after each run's first `warmup`."""
        timed = [it for run in self.runs for it in run[warmup:]]
        return {k: statistics.median(it[k] for it in timed) for k in ("generate", "score", "update")} if timed else {}


class LightningStepTimes(L.Callback):
    """Wall time of each training batch of a Lightning trainer (a PPO iteration is one batch); with `profile_from`,
    a torch.profiler trace from that batch to the end of training (not setup, compilation or teardown); with
    `phases`, each batch ends an RL iteration there."""

    def __init__(self, profile_from: int | None = None, phases: Phases | None = None) -> None:
        self.times: list[float] = []
        self._start = 0.0
        self.profile_from, self.profiler, self.phases = profile_from, None, phases

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.profiler is None and self.profile_from is not None and batch_idx >= self.profile_from:
            from torch.profiler import ProfilerActivity, profile

            cuda = [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
            self.profiler = profile(activities=[ProfilerActivity.CPU, *cuda])
            self.profiler.__enter__()
        self._start = now()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(now() - self._start)
        if self.phases is not None:
            self.phases.end_iteration(self.times[-1])

    def on_train_end(self, *args: Any) -> None:
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)


class HFStepTimes(TrainerCallback):
    """Wall time of each optimizer step of a transformers/TRL trainer."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = now()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.times.append(now() - self._start)


class HFIterationTimes(TrainerCallback):
    """The time of each RL iteration of a TRL trainer, from consecutive on_step_end calls: TRL's PPO calls it once per
    iteration, RLOO once per optimizer step (`steps_per_iteration` of them)."""

    def __init__(self, steps_per_iteration: int = 1, phases: Phases | None = None) -> None:
        self.times: list[float] = []
        self.steps_per_iteration, self.phases, self._steps, self._start = steps_per_iteration, phases, 0, 0.0

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = now()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self._steps += 1
        if self._steps % self.steps_per_iteration == 0:
            end = now()
            self.times.append(end - self._start)
            self._start = end
            if self.phases is not None:
                self.phases.end_iteration(self.times[-1])


def median_after(times: list[float], warmup: int) -> float:
    timed = times[warmup:]
    if not timed:
        raise RuntimeError(f"no timed steps: {len(times)} steps with {warmup} warm-up")
    return statistics.median(timed)


def paired(name: str, unit: str, work_per_step: float, ours: Callable[[], list[float]],
           theirs: Callable[[], list[float]], warmup: int, repeats: int = 2) -> dict[str, Any]:
    """Run ours and the reference `repeats` times each, interleaved, alternating which goes first (AB BA ...), and
    compare the median step time of each run after `warmup` steps: rates are medians over runs, the ratio ours/
    reference the median of the rounds' ratios, with its range over rounds as the spread."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least one round")
    rounds = []
    for r in range(repeats):
        steps = {}
        for side, fn in ((("ours", ours), ("reference", theirs)) if r % 2 == 0 else
                         (("reference", theirs), ("ours", ours))):
            steps[side] = median_after(fn(), warmup)
        rounds.append({side: work_per_step / t for side, t in steps.items()})
    ratios = [r["ours"] / r["reference"] for r in rounds]
    result = {"workload": name, "unit": unit, "ours": statistics.median(r["ours"] for r in rounds),
              "reference": statistics.median(r["reference"] for r in rounds), "ratio": statistics.median(ratios),
              "ratio_min": min(ratios), "ratio_max": max(ratios), "rounds": rounds, "warmup_steps": warmup}
    print(f"{name}: ours {result['ours']:,.1f} {unit}, reference {result['reference']:,.1f} {unit}, ratio "
          f"{result['ratio']:.2f} (range {min(ratios):.2f}-{max(ratios):.2f} over {repeats} interleaved rounds)",
          flush=True)
    return result
