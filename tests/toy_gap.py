"""A toy `gap=` choice for tests: g(x, y, y_ref) = words(y) - words(y_ref). It trains nothing and reads no stage;
its scorer counts the rows it scores, so a test can see that the curriculum rounds used it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pit.stages.gap import GapReward


class LengthScorer:
    """The toy gap as a scorer: no network to move or train."""

    models: tuple[torch.nn.Module, ...] = ()
    scored = 0   # rows scored by every instance, for the test to read

    def reads_tokens_of(self, tokenizer: Any) -> bool:
        return False

    def trained_part(self) -> None:
        return None

    def score(self, prompts: list[str], responses: list[str], references: list[str],
              response_ids: list[list[int]] | None = None) -> torch.Tensor:
        LengthScorer.scored += len(responses)
        pairs = zip(responses, references, strict=True)
        return torch.tensor([float(len(y.split()) - len(r.split())) for y, r in pairs])


class LengthGap(GapReward):
    """`gap=length` (tests/fixtures/conf/gap/length.yaml)."""

    trains = False

    def fit(self, ctx: Any, out: Path, metrics: dict[str, float], hp: Any) -> None:
        self.save(ctx, out)
        metrics["toy_words_chosen_minus_rejected"] = float(self.load(ctx, out).score(
            [e.prompt for e in ctx.splits["val"]], [e.chosen for e in ctx.splits["val"]],
            [e.rejected for e in ctx.splits["val"]]).mean())

    def load(self, ctx: Any, directory: Path) -> LengthScorer:
        return LengthScorer()
