"""From improvement chains and a judge to the numbers of the paper: win rates and Δ, per iteration, ELO, lengths.

A chain is `[y_0, y_1, ..., y_K]` for one method (PIT, a Self-Refine baseline); all chains share `y_0`, the
policy's response. Variants are named `policy` (y_0) and `<method>@<k>`.
"""

from __future__ import annotations

from itertools import combinations
from statistics import mean
from typing import Any

from pit.evaluate.judges import Verdicts
from pit.evaluate.metrics import bootstrap_elo, elo_ratings, length_controlled, win_rates

POLICY = "policy"


def words(text: str) -> int:
    return len(text.split())


def compare_pair(verdicts: Verdicts, prompts: list[str], first: list[str], second: list[str],
                 length_ratio: float) -> dict[str, float]:
    """Win/tie/lose and Δ of `first` over `second`, with Δ again over the pairs of similar length."""
    outcomes = verdicts.compare(prompts, first, second)
    controlled = length_controlled(outcomes, [words(t) for t in first], [words(t) for t in second], length_ratio)
    result = win_rates(outcomes)
    result.update(delta_length_controlled=win_rates(controlled)["delta"] if controlled else float("nan"),
                  n_length_controlled=len(controlled))
    return result


def evaluation_report(prompts: list[str], chains: dict[str, list[list[str]]], verdicts: Verdicts,
                      length_ratio: float, elo_bootstrap: int, seed: int) -> dict[str, Any]:
    """`pairs` at iteration 1 (the paper's Table 1 setting), `per_iteration` for k = 1..K, ELO of every variant."""
    methods = list(chains)
    initial = next(iter(chains.values()))[0] if chains else []
    iterations = min((len(c) - 1 for c in chains.values()), default=0)
    variants = {POLICY: initial, **{f"{m}@{k}": chains[m][k] for m in methods for k in range(1, iterations + 1)}}
    scores = getattr(verdicts, "scores", None)

    def pairs_at(k: int) -> dict[str, dict[str, float]]:
        found = {f"{m}_vs_policy": compare_pair(verdicts, prompts, chains[m][k], initial, length_ratio)
                 for m in methods}
        for a, b in combinations(methods, 2):
            found[f"{a}_vs_{b}"] = compare_pair(verdicts, prompts, chains[a][k], chains[b][k], length_ratio)
        return found

    per_iteration = []
    for k in range(1, iterations + 1):
        pairs = pairs_at(k)
        entry: dict[str, Any] = {"iteration": k, "pairs": pairs}
        for m in methods:
            entry[m] = {"delta_vs_policy": pairs[f"{m}_vs_policy"]["delta"],
                        "mean_words": mean(words(t) for t in chains[m][k])}
            if scores is not None:
                entry[m]["mean_score"] = mean(scores(prompts, chains[m][k]))
        per_iteration.append(entry)

    games = [(a, b, o) for a, b in combinations(variants, 2)
             for o in verdicts.compare(prompts, variants[a], variants[b])]
    report: dict[str, Any] = {
        "n": len(prompts), "iterations": iterations,
        "pairs": per_iteration[0]["pairs"] if per_iteration else {},
        "per_iteration": per_iteration,
        "lengths": {v: mean(words(t) for t in texts) for v, texts in variants.items()} if prompts else {},
    }
    if scores is not None and prompts:
        report["policy_mean_score"] = mean(scores(prompts, initial))
    if len(variants) > 1 and games:
        report["elo"] = elo_ratings(games, list(variants))
        report["elo_ci"] = {v: list(ci) for v, ci in bootstrap_elo(games, list(variants), elo_bootstrap, seed).items()}
    return report
