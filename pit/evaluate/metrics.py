"""The evaluation math as pure functions: pairwise outcomes, win rates and Δ, length control, ELO with bootstrap CIs.

An outcome is from the first response's side: 1 = it wins, 0.5 = tie, 0 = it loses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

ELO_SCALE = 400 / math.log(10)   # a 400-point gap = 10:1 odds, as in chess
ELO_MEAN = 1000.0


def outcomes_from_scores(first: Sequence[float], second: Sequence[float], tie_margin: float = 0.0) -> list[float]:
    """Outcomes of pointwise scores: a tie when the scores differ by at most `tie_margin`."""
    return [0.5 if abs(a - b) <= tie_margin else float(a > b) for a, b in zip(first, second, strict=True)]


def win_rates(outcomes: Sequence[float]) -> dict[str, float]:
    """Win, tie and lose fractions and Δ = win - lose (the paper's headline number), over `n` comparisons."""
    n = len(outcomes)
    if n == 0:
        raise ValueError("win_rates needs at least one outcome")
    win = sum(o == 1.0 for o in outcomes) / n
    lose = sum(o == 0.0 for o in outcomes) / n
    return {"win": win, "tie": 1.0 - win - lose, "lose": lose, "delta": win - lose, "n": n}


def length_controlled(outcomes: Sequence[float], first_lengths: Sequence[int], second_lengths: Sequence[int],
                      max_ratio: float) -> list[float]:
    """The outcomes of pairs whose lengths differ by at most `max_ratio` (longer / shorter): judges favour length."""
    return [o for o, a, b in zip(outcomes, first_lengths, second_lengths, strict=True)
            if max(a, b) <= max_ratio * max(min(a, b), 1)]


def elo_ratings(games: Sequence[tuple[str, str, float]], players: Sequence[str], l2: float = 1e-4) -> dict[str, float]:
    """Bradley-Terry ratings on the ELO scale (mean 1000) from (player, opponent, outcome) games.

    The maximum-likelihood fit does not depend on the order of the games (sequential ELO does); a tiny L2
    term keeps the ratings finite for a player that never lost.
    """
    index = {p: i for i, p in enumerate(players)}
    first = torch.tensor([index[a] for a, _, _ in games])
    second = torch.tensor([index[b] for _, b, _ in games])
    outcome = torch.tensor([o for _, _, o in games], dtype=torch.float64)
    strength = torch.zeros(len(players), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([strength], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = strength[first] - strength[second]
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, outcome, reduction="sum")
        value = value + l2 * strength.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    ratings = strength.detach() - strength.detach().mean()
    return {p: ELO_MEAN + ELO_SCALE * ratings[i].item() for p, i in index.items()}


def bootstrap_elo(games_by_prompt: Sequence[Sequence[tuple[str, str, float]]], players: Sequence[str], rounds: int,
                  seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % intervals of each rating over `rounds` resamples of the prompts (with replacement), each taking all of
    its games: the games of one prompt are correlated, so resampling games alone would understate the spread."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {p: [] for p in players}
    for _ in range(rounds):
        resampled = [g for _ in games_by_prompt for g in games_by_prompt[rng.randrange(len(games_by_prompt))]]
        for player, rating in elo_ratings(resampled, players).items():
            samples[player].append(rating)
    return {p: (_quantile(v, 0.025), _quantile(v, 0.975)) for p, v in samples.items()}


def bootstrap_delta_ci(outcomes: Sequence[float], rounds: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of Δ = win − lose over `rounds` resamples of the prompts.

    Paired: each outcome already compares two methods on the same prompt, so a resample keeps the pair together.
    """
    if not outcomes:
        raise ValueError("bootstrap_delta_ci needs at least one outcome")
    signs = torch.tensor([2.0 * o - 1.0 if o in (0.0, 1.0) else 0.0 for o in outcomes], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(signs), (rounds, len(signs)), generator=generator)
    deltas = signs[index].mean(1).tolist()
    return _quantile(deltas, 0.025), _quantile(deltas, 0.975)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def within_prompt_correlation(first: Sequence[float], second: Sequence[float], group_size: int) -> float:
    """Mean over prompts of the Pearson correlation of two scorings of the same `group_size` responses per prompt.

    Rows are grouped consecutively; prompts where either scoring is constant (no ordering to agree on) are skipped;
    NaN when every prompt is. This is what a reward must get right for RL: which of a prompt's samples is better.
    """
    if len(first) != len(second) or len(first) % group_size:
        raise ValueError(f"within_prompt_correlation: {len(first)} and {len(second)} scores in groups of {group_size}")
    a = torch.tensor(first, dtype=torch.float64).view(-1, group_size)
    b = torch.tensor(second, dtype=torch.float64).view(-1, group_size)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    ok = norms > 1e-12
    return ((a * b).sum(1)[ok] / norms[ok]).mean().item() if ok.any() else float("nan")
