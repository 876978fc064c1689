"""From improvement chains and a judge to the numbers of the paper: win rates and Δ, per iteration, ELO, lengths.

A chain is `[y_0, y_1, ..., y_K]` for one method (PIT, a Self-Refine baseline); all chains share `y_0`, the
policy's response. Variants are named `policy` (y_0) and `<method>@<k>`.
"""

from __future__ import annotations

from functools import partial
from itertools import combinations
from statistics import mean
from typing import Any

from pit.evaluate.metrics import bootstrap_delta_ci, bootstrap_elo, elo_ratings, length_controlled, win_rates
from pit.stages.context import Verdicts

POLICY = "policy"
CONTROL = "control"   # the compute-matched RLHF policy (objective stages control_sft, control_rl)


def words(text: str) -> int:
    return len(text.split())


def compare_pair(verdicts: Verdicts, prompts: list[str], first: list[str], second: list[str],
                 length_ratio: float, bootstrap: int, seed: int) -> dict[str, Any]:
    """Win/tie/lose and Δ of `first` over `second` with its paired-bootstrap 95 % interval, and Δ again over the
    pairs of similar length."""
    outcomes = verdicts.compare(prompts, first, second)
    controlled = length_controlled(outcomes, [words(t) for t in first], [words(t) for t in second], length_ratio)
    result: dict[str, Any] = win_rates(outcomes)
    result.update(delta_ci=list(bootstrap_delta_ci(outcomes, bootstrap, seed)),
                  delta_length_controlled=win_rates(controlled)["delta"] if controlled else float("nan"),
                  n_length_controlled=len(controlled))
    return result


def evaluation_report(prompts: list[str], chains: dict[str, list[list[str]]], verdicts: Verdicts,
                      length_ratio: float, bootstrap: int, elo_bootstrap: int, seed: int,
                      controls: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """`pairs` at iteration 1 (the paper's Table 1 setting), `per_iteration` for k = 1..K, ELO of every variant.

    `controls` are other answers to the same prompts (the compute-matched RLHF policy): each is compared with y_0
    and with every method at every iteration.
    """
    controls = controls or {}
    methods = list(chains)
    initial = next(iter(chains.values()))[0] if chains else []
    iterations = min((len(c) - 1 for c in chains.values()), default=0)
    variants = {POLICY: initial, **controls,
                **{f"{m}@{k}": chains[m][k] for m in methods for k in range(1, iterations + 1)}}
    scores = getattr(verdicts, "scores", None)
    compare = partial(compare_pair, verdicts, prompts, length_ratio=length_ratio, bootstrap=bootstrap, seed=seed)

    def pairs_at(k: int) -> dict[str, dict[str, Any]]:
        found = {f"{m}_vs_policy": compare(chains[m][k], initial) for m in methods}
        found.update({f"{m}_vs_{c}": compare(chains[m][k], texts) for m in methods for c, texts in controls.items()})
        for a, b in combinations(methods, 2):
            found[f"{a}_vs_{b}"] = compare(chains[a][k], chains[b][k])
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

    report: dict[str, Any] = {
        "n": len(prompts), "iterations": iterations,
        "pairs": per_iteration[0]["pairs"] if per_iteration else {},
        "per_iteration": per_iteration,
        "controls": {c: compare(texts, initial) for c, texts in controls.items()},
        "lengths": {v: mean(words(t) for t in texts) for v, texts in variants.items()} if prompts else {},
    }
    if scores is not None and prompts:
        report["policy_mean_score"] = mean(scores(prompts, initial))
        report["control_mean_score"] = {c: mean(scores(prompts, texts)) for c, texts in controls.items()}
    report.update(elo_report(verdicts, prompts, variants, elo_bootstrap, seed))
    return report


def elo_report(verdicts: Verdicts, prompts: list[str], variants: dict[str, list[str]], resamples: int,
               seed: int) -> dict[str, Any]:
    """ELO of every variant from the games of all pairs, and 95 % intervals from a bootstrap over prompts (all
    games of a prompt resampled together, since they are correlated)."""
    names = list(variants)
    by_prompt: list[list[tuple[str, str, float]]] = [[] for _ in prompts]
    for a, b in combinations(names, 2):
        for i, outcome in enumerate(verdicts.compare(prompts, variants[a], variants[b])):
            by_prompt[i].append((a, b, outcome))
    games = [g for games in by_prompt for g in games]
    if len(names) < 2 or not games:
        return {}
    return {"elo": elo_ratings(games, names),
            "elo_ci": {v: list(ci) for v, ci in bootstrap_elo(by_prompt, names, resamples, seed).items()}}
