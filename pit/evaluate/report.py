"""From improvement chains and a judge to the numbers of the paper: win rates and Δ, per iteration, ELO, lengths.

A chain is `[y_0, y_1, ..., y_K]` for one method (PIT, a Self-Refine baseline); all chains share `y_0`, the
policy's response. Variants are named `policy` (y_0) and `<method>@<k>`. `draft_use` is the counterfactual that tells
improving from regenerating: the same first step on another prompt's draft.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from itertools import combinations
from statistics import mean
from typing import Any, Protocol

from pit.evaluate.metrics import (
    CHANCE,
    bootstrap_delta_ci,
    bootstrap_elo,
    bootstrap_mean_ci,
    elo_ratings,
    length_controlled,
    token_edit_distance,
    wilson_interval,
    win_rates,
)


class Verdicts(Protocol):
    """What the evaluation needs from a judge: pairwise outcomes (1 first wins, 0.5 tie, 0 second wins)."""

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]: ...


POLICY = "policy"
CONTROL = "control"   # the compute-matched RLHF policy (objective stages control_sft, control_rl)
PERFECT = 1.0 - 1e-9  # an oracle score this high is a perfect answer


def words(text: str) -> int:
    return len(text.split())


Scores = Callable[[list[str], list[str]], list[float]]   # (prompts, responses) -> exact scores (an oracle)


def compare_pair(verdicts: Verdicts, prompts: list[str], first: list[str], second: list[str],
                 length_ratio: float, bootstrap: int, seed: int, oracle: Scores | None = None) -> dict[str, Any]:
    """Win/tie/lose and Δ of `first` over `second` with its paired-bootstrap 95 % interval, and Δ again over the
    pairs of similar length; with an `oracle`, beside Δ (which saturates) the mean score gain with its interval and
    the share of perfect answers on each side."""
    outcomes = verdicts.compare(prompts, first, second)
    controlled = length_controlled(outcomes, [words(t) for t in first], [words(t) for t in second], length_ratio)
    result: dict[str, Any] = win_rates(outcomes)
    result.update(delta_ci=list(bootstrap_delta_ci(outcomes, bootstrap, seed)),
                  delta_length_controlled=win_rates(controlled)["delta"] if controlled else float("nan"),
                  n_length_controlled=len(controlled))
    if oracle is not None:
        a, b = oracle(prompts, first), oracle(prompts, second)
        gains = [x - y for x, y in zip(a, b, strict=True)]
        result.update(mean_gain=mean(gains), gain_ci=list(bootstrap_mean_ci(gains, bootstrap, seed)),
                      perfect_first=mean(float(x >= PERFECT) for x in a),
                      perfect_second=mean(float(y >= PERFECT) for y in b))
    return result


def edits(drafts: list[str], outputs: list[str], oracle: Scores | None, prompts: list[str]) -> dict[str, Any]:
    """How much an improvement step changed its drafts: mean normalised token edit distance, share returned
    unchanged and, with an oracle, how many perfect drafts it was given and the share of those it kept perfect
    (None when it was given none)."""
    pairs = list(zip(drafts, outputs, strict=True))
    found: dict[str, Any] = {"edit_distance": mean(token_edit_distance(d, o) for d, o in pairs),
                             "unchanged": mean(float(d.strip() == o.strip()) for d, o in pairs)}
    if oracle is not None:
        perfect = [i for i, s in enumerate(oracle(prompts, drafts)) if s >= PERFECT]
        kept = oracle([prompts[i] for i in perfect], [outputs[i] for i in perfect])
        found.update(perfect_drafts=len(perfect),
                     perfect_kept=mean(float(s >= PERFECT) for s in kept) if kept else None)
    return found


def step_summary(versus_policy: dict[str, Any], drafts: list[str], outputs: list[str], prompts: list[str],
                 scores: Scores | None, oracle: Scores | None) -> dict[str, Any]:
    """One method at one iteration: its Δ vs y_0, mean length, edits of its drafts and mean judge score."""
    entry = {"delta_vs_policy": versus_policy["delta"], "mean_words": mean(words(t) for t in outputs),
             **edits(drafts, outputs, oracle, prompts)}
    if scores is not None:
        entry["mean_score"] = mean(scores(prompts, outputs))
    return entry


def draft_use(compare: Callable[..., dict[str, Any]], prompts: list[str], drafts: list[str], own: list[str],
              other: list[str], order: list[int], oracle: Scores | None) -> dict[str, Any]:
    """The counterfactual of an improver at k = 1: on prompt i, its output from the prompt's own draft against its
    output from another prompt's draft (`drafts[order[i]]`), leaving out prompts whose two drafts are the same text.

    Two questions. Does the draft matter: `output_changed`, and `copy_gap` (how much nearer, in token edit distance,
    the own-draft output is to the own draft than the other-draft output is); both are 0 for a method that writes
    from the prompt alone, whatever its quality. Does it help: Δ (win − lose) and, with an oracle, the mean gain,
    > 0 when the prompt's own draft leads to the better answer; Δ ≈ 0 with outputs that change means the draft moves
    the answer but not its quality. One fixed derangement: the interval is conditional on it."""
    kept = [i for i, j in enumerate(order) if drafts[i].strip() != drafts[j].strip()]
    found: dict[str, Any] = {"same_draft": len(order) - len(kept),
                             **edits(drafts, own, oracle, prompts)}   # own draft -> own output, every prompt
    if not kept:   # every prompt got its own text again (a collapsed policy): nothing to compare
        return {**found, "n": 0}
    pick = lambda texts: [texts[i] for i in kept]  # noqa: E731
    found.update(compare(pick(prompts), pick(own), pick(other)),
                 output_changed=mean(float(own[i].strip() != other[i].strip()) for i in kept),
                 copy_gap=mean(token_edit_distance(drafts[i], other[i]) - token_edit_distance(drafts[i], own[i])
                               for i in kept),
                 other_edit_distance=mean(token_edit_distance(drafts[order[i]], other[i]) for i in kept))
    return found


def evaluation_report(prompts: list[str], chains: dict[str, list[list[str]]], verdicts: Verdicts,
                      length_ratio: float, bootstrap: int, elo_bootstrap: int, seed: int,
                      controls: dict[str, list[str]] | None = None,
                      deranged: dict[str, tuple[list[int], list[str]]] | None = None,
                      oracle: Scores | None = None) -> dict[str, Any]:
    """`pairs` at iteration 1 (the paper's Table 1 setting), `per_iteration` for k = 1..K, ELO of every variant.

    `controls` are other answers to the same prompts (the compute-matched RLHF policy): each is compared with y_0
    and with every method at every iteration. `deranged[m]` is (order, outputs): method m's first step run on the
    drafts y_0[order[i]] of other prompts, for `draft_use`. With an `oracle` every pair carries the mean score gain.
    """
    controls, deranged = controls or {}, deranged or {}
    methods = list(chains)
    initial = next(iter(chains.values()))[0] if chains else []
    iterations = min((len(c) - 1 for c in chains.values()), default=0)
    variants = {POLICY: initial, **controls,
                **{f"{m}@{k}": chains[m][k] for m in methods for k in range(1, iterations + 1)}}
    scores = getattr(verdicts, "scores", None)
    compare = partial(compare_pair, verdicts, length_ratio=length_ratio, bootstrap=bootstrap, seed=seed,
                      oracle=oracle)

    def pairs_at(k: int) -> dict[str, dict[str, Any]]:
        found = {f"{m}_vs_policy": compare(prompts, chains[m][k], initial) for m in methods}
        found.update({f"{m}_vs_{c}": compare(prompts, chains[m][k], texts)
                      for m in methods for c, texts in controls.items()})
        for a, b in combinations(methods, 2):
            found[f"{a}_vs_{b}"] = compare(prompts, chains[a][k], chains[b][k])
        return found

    per_iteration = [{"iteration": k, "pairs": (pairs := pairs_at(k)),
                      **{m: step_summary(pairs[f"{m}_vs_policy"], chains[m][k - 1], chains[m][k], prompts, scores,
                                         oracle) for m in methods}} for k in range(1, iterations + 1)]

    report: dict[str, Any] = {
        "n": len(prompts), "iterations": iterations,
        "pairs": per_iteration[0]["pairs"] if per_iteration else {},
        "per_iteration": per_iteration,
        "controls": {c: compare(prompts, texts, initial) for c, texts in controls.items()},
        "draft_use": {m: draft_use(compare, prompts, initial, chains[m][1], other, order, oracle)
                      for m, (order, other) in deranged.items()},
        "lengths": {v: mean(words(t) for t in texts) for v, texts in variants.items()} if prompts else {},
    }
    if scores is not None and prompts:
        report["policy_mean_score"] = mean(scores(prompts, initial))
        report["control_mean_score"] = {c: mean(scores(prompts, texts)) for c, texts in controls.items()}
    if oracle is not None and prompts:
        report["policy_perfect"] = mean(float(s >= PERFECT) for s in oracle(prompts, initial))
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


def judge_check(judge: Mapping[str, float]) -> dict[str, Any]:
    """The judge stage's val accuracy with its 95 % Wilson interval (`judge_val`), and in `warnings` a line to show
    when that interval does not lie above chance: such a judge cannot tell the methods apart, so no Δ or ELO means
    anything.

    `judge` holds the stage's metrics (`val_acc` on `val_pairs` pairs); without them there is nothing to check.
    `at_chance` is 0 or 1, a number, so that it reaches the W&B summary.
    """
    acc, n = judge.get("val_acc"), int(judge.get("val_pairs", 0))
    if acc is None or n < 1:
        return {"warnings": []}
    low, high = wilson_interval(acc, n)
    at_chance = low <= CHANCE   # its interval includes chance, or lies below it (a judge that prefers y_l)
    warnings = [f"judge val accuracy {acc:.2f} [{low:.2f}, {high:.2f}] on {n} val pairs is not above chance "
                f"({CHANCE}): the Δ and ELO of this evaluation are uninformative"] if at_chance else []
    return {"judge_val": {"acc": acc, "n": n, "ci": [low, high], "at_chance": int(at_chance)}, "warnings": warnings}
