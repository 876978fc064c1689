"""Iterative improvement, whatever the improver: y_0 given, y_{k+1} = step(x, y_k), every iteration kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pit.data.templates import Templates
from pit.models.generate import Sampling, generate_texts, purpose_seed

Step = Callable[[list[str], list[str]], list[str]]   # (prompts, current responses) -> improved responses


def iterate(step: Step, prompts: list[str], initial: list[str], iterations: int) -> list[list[str]]:
    """`[y_0, y_1, ..., y_K]`, each a list aligned with `prompts`."""
    chain = [list(initial)]
    for _ in range(iterations):
        improved = step(prompts, chain[-1])
        if len(improved) != len(prompts):
            raise ValueError(f"an improvement step returned {len(improved)} responses for {len(prompts)} prompts")
        chain.append(improved)
    return chain


@dataclass
class Generator:
    """A causal LM with its tokenizer and sampling settings, as a function from input texts to responses. With a
    `seed`, its n-th call draws from `purpose_seed(seed, n)`, whatever else sampled in between."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    sampling: Sampling
    max_input_tokens: int
    desc: str = "sampling"   # the progress bar's label
    seed: int | None = None
    calls: int = field(default=0, init=False)

    def __call__(self, inputs: list[str], max_new_tokens: int | None = None) -> list[str]:
        sampling = self.sampling if max_new_tokens is None else Sampling(
            max_new_tokens, self.sampling.temperature, self.sampling.top_p, self.sampling.batch_size)
        seed = None if self.seed is None else purpose_seed(self.seed, str(self.calls))
        self.calls += 1
        return generate_texts(self.model, self.tokenizer, inputs, sampling, self.max_input_tokens, self.desc,
                              seed=seed)


@dataclass
class PITStep:
    """One PIT improvement: the improver reads `improver_input(x, y_k)` and writes `y_{k+1}`."""

    generate: Generator
    templates: Templates

    def __call__(self, prompts: list[str], responses: list[str]) -> list[str]:
        return self.generate([self.templates.improver_input(p, r) for p, r in zip(prompts, responses, strict=True)])
