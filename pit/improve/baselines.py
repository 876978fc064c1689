"""The `baseline=` choices: Self-Refine (critique, then rewrite, by the policy itself), with or without a rubric.

The instructions are plain text appended after the prompt and response in the dataset's own format; when the
tokenizer has a chat template, each instruction is sent as one user turn through it instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pit.errors import ConfigError
from pit.improve.iterate import Generator, Step


@dataclass(frozen=True)
class SelfRefine:
    """`y_{k+1}`: the policy writes feedback on `y_k` (against `rubric` when given), then a response using it."""

    name: str = "self_refine"
    improves = True   # evaluate compares its steps with y_0
    rubric: str | None = None
    feedback_instruction: str = "{prompt}{response}\n\nFeedback on the response{rubric}:"
    refine_instruction: str = "{prompt}{response}\n\nFeedback:{feedback}\n\nImproved response:"
    max_feedback_tokens: int = 64

    def __post_init__(self) -> None:
        for field_name, text, needed in (("feedback_instruction", self.feedback_instruction, "{rubric}"),
                                         ("refine_instruction", self.refine_instruction, "{feedback}")):
            if needed not in text or "{response}" not in text:
                raise ConfigError(f"baseline.{field_name} must contain {{response}} and {needed}: {text!r}")

    def step(self, generate: Generator) -> Step:
        """The improvement step for `pit.improve.iterate` with this policy."""

        def refine(prompts: list[str], responses: list[str]) -> list[str]:
            rubric = f" ({self.rubric})" if self.rubric else ""
            pairs = list(zip(prompts, responses, strict=True))
            asks = [self.feedback_instruction.format(prompt=p, response=r, rubric=rubric) for p, r in pairs]
            feedback = generate(_chat(generate, asks), self.max_feedback_tokens)
            rewrites = [self.refine_instruction.format(prompt=p, response=r, feedback=f)
                        for (p, r), f in zip(pairs, feedback, strict=True)]
            return generate(_chat(generate, rewrites))

        return refine


@dataclass(frozen=True)
class NoBaseline:
    """`baseline=none`: PIT is compared with the original responses only."""

    name: str = "none"
    improves = False

    def step(self, generate: Generator) -> None:
        return None


def _chat(generate: Generator, texts: list[str]) -> list[str]:
    """Each instruction as one user turn of the tokenizer's chat template, when it has one."""
    if not getattr(generate.tokenizer, "chat_template", None):
        return texts
    return [generate.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                   add_generation_prompt=True) for t in texts]
