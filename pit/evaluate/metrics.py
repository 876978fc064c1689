"""The evaluation math as pure functions: pairwise outcomes, win rates and Δ, length control, ELO with bootstrap CIs,
and what says whether an improver used its draft (a derangement of the drafts, token edit distance).

An outcome is from the first response's side: 1 = it wins, 0.5 = tie, 0 = it loses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import combinations

import torch

ELO_SCALE = 400 / math.log(10)   # a 400-point gap = 10:1 odds, as in chess
ELO_MEAN = 1000.0
Z95 = 1.96   # standard normal quantile of a two-sided 95 % interval
CHANCE = 0.5   # the pairwise accuracy of a guess between two responses


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


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a binomial proportion `p` measured on `n` trials; unlike p ± z·se
    it stays inside [0, 1] and is not empty at p = 0 or 1."""
    if n < 1:
        raise ValueError(f"wilson_interval needs at least one trial, got n={n}")
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def length_controlled(outcomes: Sequence[float], first_lengths: Sequence[int], second_lengths: Sequence[int],
                      max_ratio: float) -> list[float]:
    """The outcomes of pairs whose lengths differ by at most `max_ratio` (longer / shorter): judges favour length."""
    return [o for o, a, b in zip(outcomes, first_lengths, second_lengths, strict=True)
            if max(a, b) <= max_ratio * max(min(a, b), 1)]


def elo_ratings(games: Sequence[tuple[str, str, float]], players: Sequence[str],
                prior_games: float = 1.0) -> dict[str, float]:
    """Bradley-Terry ratings on the ELO scale (mean 1000) from (player, opponent, outcome) games.

    The maximum-likelihood fit does not depend on the order of the games (sequential ELO does). The prior is
    `prior_games` pseudo-games drawn (outcome 0.5) between every pair of players, the same for all: it keeps the
    rating of a player who never lost finite, at a distance set by its games (n wins and no loss against one
    opponent give 400·log10(2n/prior + 1) points), and weighs nothing beside the hundreds of real games of a pair.
    """
    if prior_games <= 0:
        raise ValueError(f"elo_ratings: prior_games={prior_games} must be > 0 (an unbeaten player diverges)")
    index = {p: i for i, p in enumerate(players)}
    pairs = list(combinations(range(len(players)), 2))
    first = torch.tensor([index[a] for a, _, _ in games] + [a for a, _ in pairs], dtype=torch.long)
    second = torch.tensor([index[b] for _, b, _ in games] + [b for _, b in pairs], dtype=torch.long)
    outcome = torch.tensor([o for _, _, o in games] + [0.5] * len(pairs), dtype=torch.float64)
    weight = torch.tensor([1.0] * len(games) + [prior_games] * len(pairs), dtype=torch.float64)
    strength = torch.zeros(len(players), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([strength], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = strength[first] - strength[second]
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, outcome, weight, reduction="sum")
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


def bootstrap_mean_ci(values: Sequence[float], rounds: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of per-prompt `values` over `rounds` resamples of the prompts."""
    if not values:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    data = torch.tensor(list(values), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(data), (rounds, len(data)), generator=generator)
    means = data[index].mean(1).tolist()
    return _quantile(means, 0.025), _quantile(means, 0.975)


def bootstrap_delta_ci(outcomes: Sequence[float], rounds: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of Δ = win − lose over `rounds` resamples of the prompts.

    Paired: each outcome already compares two methods on the same prompt, so a resample keeps the pair together.
    """
    if not outcomes:
        raise ValueError("bootstrap_delta_ci needs at least one outcome")
    return bootstrap_mean_ci([2.0 * o - 1.0 if o in (0.0, 1.0) else 0.0 for o in outcomes], rounds, seed)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) that moves every index (Sattolo's algorithm: one random n-cycle), so prompt i
    gets the draft of prompt `result[i] != i`."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = random.Random(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return order


def token_edit_distance(first: str, second: str) -> float:
    """Levenshtein distance between the whitespace tokens of two texts, over the longer one's length: 0 = the same
    tokens, 1 = nothing kept in place."""
    a, b = first.split(), second.split()
    if not a and not b:
        return 0.0
    row = list(range(len(b) + 1))
    for i, token in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (token != other))
    return row[-1] / max(len(a), len(b))


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
