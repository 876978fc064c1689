"""Evaluation math on hand-computed cases, iterative improvement, Self-Refine prompts, and the report."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import pytest

from pit.evaluate.metrics import (
    bootstrap_delta_ci,
    bootstrap_elo,
    bootstrap_mean_ci,
    derangement,
    elo_ratings,
    length_controlled,
    outcomes_from_scores,
    token_edit_distance,
    wilson_interval,
    win_rates,
    within_prompt_correlation,
)
from pit.evaluate.report import evaluation_report, judge_check
from pit.improve.baselines import SelfRefine
from pit.improve.iterate import iterate
from pit.run import format_evaluation
from pit.stages.judges import ScoreVerdicts


def test_outcomes_and_win_rates_by_hand() -> None:
    assert outcomes_from_scores([0.9, 0.5, 0.2], [0.5, 0.5, 0.25], tie_margin=0.1) == [1.0, 0.5, 0.5]
    assert outcomes_from_scores([0.9, 0.5, 0.2], [0.5, 0.5, 0.25]) == [1.0, 0.5, 0.0]
    assert win_rates([1.0, 0.5, 0.0, 1.0]) == {"win": 0.5, "tie": 0.25, "lose": 0.25, "delta": 0.25, "n": 4}
    with pytest.raises(ValueError):
        win_rates([])


def test_wilson_interval_by_hand() -> None:
    """z = 1.96, s = 1 + z²/n, centre = (p + z²/2n) / s, half = z/s · sqrt(p(1 - p)/n + z²/4n²)."""
    # 5/10: s = 1.38416, centre = 0.69208 / s = 0.5, half = 1.416021 · sqrt(0.025 + 0.009604) = 0.263410
    assert wilson_interval(0.5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 8/10: centre = 0.99208 / s = 0.71674, half = 1.41602 · sqrt(0.016 + 0.009604) = 0.22658
    assert wilson_interval(0.8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    # 0/10: centre = half = 0.19208 / s = 0.13877: [0, 0.27754] (p ± z·se would be [0, 0])
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    # 50/100: s = 1.038416, centre 0.5, half = 1.887488 · sqrt(0.0025 + 0.00009604) = 0.09617
    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_a_judge_at_chance_puts_a_warning_in_the_report() -> None:
    """8 of 10 val pairs right is within the interval of a coin (0.49 to 0.94); 160 of 200 is not."""
    weak = judge_check({"val_acc": 0.8, "val_pairs": 10})
    assert weak["judge_val"]["at_chance"] == 1 and weak["judge_val"]["n"] == 10
    assert weak["judge_val"]["ci"] == pytest.approx([0.49016, 0.94332], abs=1e-5)
    assert weak["warnings"] == ["judge val accuracy 0.80 [0.49, 0.94] on 10 val pairs is not above chance (0.5): "
                                "the Δ and ELO of this evaluation are uninformative"]
    good = judge_check({"val_acc": 0.8, "val_pairs": 200})
    assert good["judge_val"]["at_chance"] == 0 and good["judge_val"]["ci"][0] > 0.5 and good["warnings"] == []
    assert judge_check({}) == {"warnings": []}    # a judge stage that measured nothing: nothing to say


def test_the_committed_default_run_has_an_informative_judge() -> None:
    """The judge metrics of a real results.json (the oracle: 204 of 204 val pairs) give no warning."""
    results = json.loads((Path(__file__).parents[1] / "experiments/default/results_default_seed0.json").read_text())
    check = judge_check(results["stages"]["judge"]["metrics"])
    assert check["warnings"] == [] and check["judge_val"]["ci"][0] > 0.98


def test_the_console_table_says_once_that_the_judge_is_at_chance() -> None:
    line = judge_check({"val_acc": 0.5, "val_pairs": 20})["warnings"][0]
    results = json.loads((Path(__file__).parents[1] / "experiments/default/results_default_seed0.json").read_text())
    table = "\n".join(format_evaluation({**results["eval"], "warnings": [line]}))
    assert table.count(f"WARNING: {line}") == 1
    assert "WARNING" not in "\n".join(format_evaluation(results["eval"]))


def test_length_control_keeps_pairs_of_similar_length() -> None:
    # (10, 10) kept; (10, 20) differs by 2x; (3, 0) by more than 1.25x of the floor of 1 word
    assert length_controlled([1.0, 0.0, 1.0], [10, 10, 3], [10, 20, 0], max_ratio=1.25) == [1.0]
    assert length_controlled([1.0, 0.0], [4, 5], [5, 4], max_ratio=1.25) == [1.0, 0.0]


def test_elo_from_bradley_terry_by_hand() -> None:
    # A beats B in 3 of 4 games, plus the prior's pseudo-draw: P(A > B) = 3.5 / 5 = 0.7, a gap of 400·log10(7 / 3)
    games = [("A", "B", 1.0)] * 3 + [("A", "B", 0.0)]
    ratings = elo_ratings(games, ["A", "B"])
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(7 / 3), abs=0.5)
    assert (ratings["A"] + ratings["B"]) / 2 == pytest.approx(1000.0)
    # a smaller prior tends to the maximum-likelihood fit, P = 0.75: 400·log10(3)
    assert elo_ratings(games, ["A", "B"], prior_games=1e-6)["A"] - 1000 == pytest.approx(200 * math.log10(3), abs=0.5)
    # the order of the games does not matter, ties count as half a win, and reversed games are the same games
    assert elo_ratings(list(reversed(games)), ["A", "B"]) == pytest.approx(ratings)
    assert elo_ratings([("B", "A", 0.0)] * 3 + [("B", "A", 1.0)], ["A", "B"]) == pytest.approx(ratings, abs=1e-6)
    even = elo_ratings([("A", "B", 0.5)] * 4, ["A", "B"])
    assert even["A"] == pytest.approx(even["B"], abs=1e-6)
    chain = elo_ratings([("A", "B", 1.0), ("B", "C", 1.0), ("A", "C", 1.0)] * 5, ["A", "B", "C"])
    assert chain["A"] > chain["B"] > chain["C"] and all(math.isfinite(v) for v in chain.values())
    with pytest.raises(ValueError):
        elo_ratings(games, ["A", "B"], prior_games=0)


def test_elo_of_an_unbeaten_player_is_set_by_its_games() -> None:
    """A never loses: with one pseudo-draw per pair its gap is 400·log10(2n + 1) after n wins, so it grows with the
    games (n = 10: 528.9, n = 400: 1162.4), and a bootstrap whose every resample is unbeaten gives an interval of that
    size, not the -734 of a fit bounded only by a penalty."""
    for n, gap in ((10, 400 * math.log10(21)), (400, 400 * math.log10(801))):
        ratings = elo_ratings([("A", "B", 1.0)] * n, ["A", "B"])
        assert ratings["A"] - ratings["B"] == pytest.approx(gap, abs=0.5), n
    per_prompt = [[("A", "B", 1.0), ("A", "C", 1.0), ("B", "C", 0.5)]] * 8 + [[("A", "B", 1.0), ("C", "B", 1.0)]] * 2
    intervals = bootstrap_elo(per_prompt, ["A", "B", "C"], rounds=200, seed=0)
    fitted = elo_ratings([g for games in per_prompt for g in games], ["A", "B", "C"])
    for player, (low, high) in intervals.items():
        assert 500 < low <= high < 1500 and high - low < 400, (player, low, high)
    assert intervals["A"][0] > max(intervals["B"][1], intervals["C"][1])   # A's lowest beats the others' best
    assert intervals["A"][0] <= fitted["A"] <= intervals["A"][1]


def test_elo_bootstrap_resamples_prompts_not_games() -> None:
    """A wins all 10 games of 6 prompts and loses all 10 of 4. A resample of the prompts holds K ~ Binomial(10, 0.6)
    prompts won by A, so with the prior's pseudo-draw A's rating is 1000 + 200·log10((10K + 0.5) / (100.5 - 10K));
    K's 2.5 % and 97.5 % quantiles are 3 and 9 (P(K <= 2) = 0.012, P(K <= 3) = 0.055, P(K <= 8) = 0.954,
    P(K <= 9) = 0.994), so with 1000 resamples the 95 % interval is [927.2, 1187.1], and B's its mirror. Treating each
    game as its own prompt (what resampling games did) gives a much narrower one; the interval is seeded."""
    per_prompt = [[("A", "B", 1.0)] * 10] * 6 + [[("A", "B", 0.0)] * 10] * 4
    as_games = [[g] for games in per_prompt for g in games]
    grouped = bootstrap_elo(per_prompt, ["A", "B"], rounds=1000, seed=1)
    rating = lambda k: 1000 + 200 * math.log10((10 * k + 0.5) / (100.5 - 10 * k))  # noqa: E731
    assert grouped["A"] == pytest.approx((rating(3), rating(9)), abs=0.5)
    assert grouped["B"] == pytest.approx((2000 - rating(9), 2000 - rating(3)), abs=0.5)
    flat = bootstrap_elo(as_games, ["A", "B"], rounds=100, seed=1)
    assert (grouped["A"][1] - grouped["A"][0]) > 2 * (flat["A"][1] - flat["A"][0])
    assert bootstrap_elo(per_prompt, ["A", "B"], rounds=20, seed=2) == bootstrap_elo(per_prompt, ["A", "B"], 20, 2)


def test_paired_bootstrap_interval_of_delta_matches_the_normal_approximation() -> None:
    """240 wins, 40 ties, 120 losses: Δ = 0.3, the per-prompt sign (+1, 0, -1) has variance 0.9 - 0.09 = 0.81, so the
    95 % interval is about Δ ± 1.96 · 0.9 / 20 = ± 0.088 (an unpaired or mis-sized resample would miss it)."""
    outcomes = [1.0] * 240 + [0.5] * 40 + [0.0] * 120
    low, high = bootstrap_delta_ci(outcomes, rounds=4000, seed=0)
    half = 1.96 * math.sqrt(0.9 - 0.09) / math.sqrt(400)
    assert low == pytest.approx(0.3 - half, abs=0.012) and high == pytest.approx(0.3 + half, abs=0.012)
    assert bootstrap_delta_ci(outcomes, rounds=4000, seed=0) == (low, high)
    assert bootstrap_delta_ci([1.0] * 5, rounds=100) == (1.0, 1.0)


def test_within_prompt_correlation_by_hand() -> None:
    oracle = [0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 1.0, 2.0, 3.0]
    assert within_prompt_correlation([1, 2, 3, 7, 8, 9, 3, 2, 1], oracle, 3) == pytest.approx(0.0)  # +1, skip, -1
    assert within_prompt_correlation([10, 20, 30, 0, 0, 0, 0, 0, 1], oracle, 3) == pytest.approx(
        (1.0 + 0.8660254) / 2)   # the constant prompt is skipped; corr([0, 0, 1], [1, 2, 3]) = sqrt(3)/2
    assert math.isnan(within_prompt_correlation([1, 1], [2, 3], 2))
    with pytest.raises(ValueError, match="groups of 3"):
        within_prompt_correlation([1, 2], [1, 2], 3)


def test_iterate_keeps_every_iteration() -> None:
    chain = iterate(lambda prompts, ys: [y + "!" for y in ys], ["p", "q"], ["a", "b"], iterations=3)
    assert chain == [["a", "b"], ["a!", "b!"], ["a!!", "b!!"], ["a!!!", "b!!!"]]
    with pytest.raises(ValueError, match="returned 1 responses for 2 prompts"):
        iterate(lambda prompts, ys: ys[:1], ["p", "q"], ["a", "b"], iterations=1)


class FakeGenerator:
    """Records what Self-Refine asks the policy, answers with fixed text."""

    def __init__(self, tokenizer: object):
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[str], int | None]] = []

    def __call__(self, inputs: list[str], max_new_tokens: int | None = None) -> list[str]:
        self.calls.append((inputs, max_new_tokens))
        return [f"out{len(self.calls)}"] * len(inputs)


def test_self_refine_asks_for_feedback_then_a_rewrite() -> None:
    generate = FakeGenerator(tokenizer=object())
    step = SelfRefine(rubric="is it kind?", max_feedback_tokens=7).step(generate)
    assert step(["Q: hi A:"], [" hello"]) == ["out2"]
    (feedback_inputs, feedback_tokens), (refine_inputs, refine_tokens) = generate.calls
    assert feedback_inputs == ["Q: hi A: hello\n\nFeedback on the response (is it kind?):"] and feedback_tokens == 7
    assert refine_inputs == ["Q: hi A: hello\n\nFeedback:out1\n\nImproved response:"] and refine_tokens is None


def test_self_refine_uses_the_chat_template_when_there_is_one() -> None:
    class ChatTokenizer:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return f"<user>{messages[0]['content']}</user><assistant>"

    generate = FakeGenerator(ChatTokenizer())
    SelfRefine().step(generate)(["x"], ["y"])
    assert generate.calls[0][0] == ["<user>xy\n\nFeedback on the response:</user><assistant>"]


def test_evaluation_report_by_hand() -> None:
    """Judge = response length: PIT lengthens, the baseline shortens; every number follows from that."""
    verdicts = ScoreVerdicts(lambda prompts, responses: [float(len(r)) for r in responses])
    prompts = ["p1", "p2"]
    chains = {"pit": [["aa", "bb"], ["aaa", "bbb"], ["aaaa", "bb"]],
              "self_refine": [["aa", "bb"], ["a", "bb"], ["a", "b"]]}
    report = evaluation_report(prompts, chains, verdicts, length_ratio=10.0, bootstrap=50, elo_bootstrap=5, seed=0,
                               controls={"control": ["a", "bbbbb"]})
    assert report["n"] == 2 and report["iterations"] == 2
    assert report["pairs"]["pit_vs_policy"] == {"win": 1.0, "tie": 0.0, "lose": 0.0, "delta": 1.0, "n": 2,
                                                "delta_ci": [1.0, 1.0], "delta_length_controlled": 1.0,
                                                "n_length_controlled": 2}
    assert report["pairs"]["pit_vs_control"]["delta"] == 0.0          # 3 > 1, 3 < 5
    assert report["per_iteration"][1]["pairs"]["pit_vs_control"]["delta"] == 0.0   # 4 > 1, 2 < 5
    assert report["controls"]["control"]["delta"] == 0.0 and report["control_mean_score"]["control"] == 3.0
    assert report["pairs"]["self_refine_vs_policy"]["delta"] == -0.5
    assert report["pairs"]["pit_vs_self_refine"]["delta"] == 1.0
    second = report["per_iteration"][1]
    assert second["iteration"] == 2 and second["pit"]["delta_vs_policy"] == 0.5
    assert second["pit"]["mean_score"] == 3.0 and second["self_refine"]["mean_score"] == 1.0
    assert report["policy_mean_score"] == 2.0
    assert report["lengths"]["policy"] == 1.0
    assert set(report["elo"]) == {"policy", "control", "pit@1", "pit@2", "self_refine@1", "self_refine@2"}
    assert report["elo"]["pit@1"] > report["elo"]["policy"] > report["elo"]["self_refine@2"]
    assert verdicts.memo[("p1", "aa")] == 2.0     # each (prompt, response) scored once


class LengthVerdicts:
    """A pairwise judge without scores: the longer response wins."""

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        return outcomes_from_scores([len(t) for t in first], [len(t) for t in second])


def test_elo_intervals_of_the_report_are_a_bootstrap_over_its_prompts() -> None:
    """`elo_ci` holds, for every variant, the interval of `bootstrap_elo` over the games grouped by prompt (every pair
    of variants plays once per prompt), with the report's resamples and seed; when every prompt holds the same texts,
    each resample is the whole set of games again and every interval shrinks to the rating itself."""
    prompts = [f"p{i}" for i in range(6)]
    policy = ["aa", "b", "cccc", "dd", "e", "fff"]
    chains = {"pit": [policy, ["aaa", "bb", "cc", "ddd", "ee", "f"], ["aaaa", "b", "ccccc", "dd", "eeee", "ffff"]]}
    report = evaluation_report(prompts, chains, LengthVerdicts(), length_ratio=10.0, bootstrap=10, elo_bootstrap=30,
                               seed=3)
    variants = {"policy": policy, "pit@1": chains["pit"][1], "pit@2": chains["pit"][2]}
    names = list(variants)
    by_prompt = [[(a, b, LengthVerdicts().compare([p], [variants[a][i]], [variants[b][i]])[0])
                  for a, b in combinations(names, 2)] for i, p in enumerate(prompts)]
    expected = bootstrap_elo(by_prompt, names, rounds=30, seed=3)
    assert set(report["elo_ci"]) == set(names)
    for name in names:
        assert report["elo_ci"][name] == pytest.approx(list(expected[name]), abs=1e-6), name
    assert report["elo_ci"]["pit@2"][1] - report["elo_ci"]["pit@2"][0] > 10       # six prompts: a real spread

    same = evaluation_report(prompts, {"pit": [["aa"] * 6, ["aaa"] * 6, ["a"] * 6]}, LengthVerdicts(),
                             length_ratio=10.0, bootstrap=10, elo_bootstrap=30, seed=3)
    for name, rating in same["elo"].items():
        assert same["elo_ci"][name] == pytest.approx([rating, rating], abs=1e-6), name


def test_derangement_moves_every_index_and_is_seeded() -> None:
    for n in (2, 3, 10, 401):
        order = derangement(n, seed=n)
        assert sorted(order) == list(range(n)) and all(j != i for i, j in enumerate(order)), n
    assert derangement(50, 7) == derangement(50, 7) != derangement(50, 8)
    assert derangement(2, 0) == [1, 0]
    with pytest.raises(ValueError):
        derangement(1, 0)


def test_token_edit_distance_by_hand() -> None:
    assert token_edit_distance("a b c", "a b c") == 0.0
    assert token_edit_distance("a b c", "a x c") == pytest.approx(1 / 3)        # one substitution
    assert token_edit_distance("dog a b c", "a b c d") == pytest.approx(2 / 4)  # a deletion and an insertion
    assert token_edit_distance("a b", "c d e f") == 1.0                          # nothing kept
    assert token_edit_distance("", "") == 0.0 and token_edit_distance("", "a") == 1.0


def test_bootstrap_mean_interval_matches_the_normal_approximation() -> None:
    """400 gains of +0.5 or -0.5 in equal numbers plus 0.1: mean 0.1, sd 0.5, interval 0.1 ± 1.96·0.5/20 = ± 0.049."""
    values = [0.6, -0.4] * 200
    low, high = bootstrap_mean_ci(values, rounds=4000, seed=0)
    assert low == pytest.approx(0.1 - 0.049, abs=0.008) and high == pytest.approx(0.1 + 0.049, abs=0.008)
    assert bootstrap_mean_ci([0.25] * 3, rounds=10) == (0.25, 0.25)


def oracle_of_words(prompts: list[str], responses: list[str]) -> list[float]:
    """A toy oracle: the share of the prompt's words in the response (1.0 = perfect)."""
    return [sum(w in r.split() for w in p.split()) / len(p.split()) for p, r in zip(prompts, responses, strict=True)]


def test_draft_use_tells_an_editor_from_a_regenerator() -> None:
    """Two improvers with the same Δ vs y_0: the editor adds the prompt's first missing word to its draft, the
    regenerator writes the prompt's words backwards whatever the draft. Only the editor's output depends on the draft:
    on its own draft (which holds the prompt's other words) it beats its output on another prompt's draft."""
    prompts = ["a b c", "d e f", "g h i", "j k l"]
    drafts = ["b c", "e f", "h i", "k l"]

    def editor(ps: list[str], ds: list[str]) -> list[str]:
        return [" ".join([*d.split(), next((w for w in p.split() if w not in d.split()), "")]).strip()
                for p, d in zip(ps, ds, strict=True)]

    def regenerator(ps: list[str], ds: list[str]) -> list[str]:
        return [" ".join(reversed(p.split())) for p in ps]

    steps = {"editor": editor, "regenerator": regenerator}
    chains = {m: iterate(step, prompts, drafts, 1) for m, step in steps.items()}
    order = derangement(len(prompts), seed=0)
    deranged = {m: (order, step(prompts, [drafts[j] for j in order])) for m, step in steps.items()}
    verdicts = ScoreVerdicts(oracle_of_words)
    report = evaluation_report(prompts, chains, verdicts, length_ratio=10.0, bootstrap=50, elo_bootstrap=5, seed=0,
                               deranged=deranged, oracle=oracle_of_words)
    # both: 2/3 -> 3/3 on every prompt
    assert report["pairs"]["editor_vs_policy"]["delta"] == report["pairs"]["regenerator_vs_policy"]["delta"] == 1.0
    assert report["pairs"]["editor_vs_policy"]["mean_gain"] == pytest.approx(1 / 3)
    assert report["pairs"]["editor_vs_policy"]["perfect_first"] == 1.0
    assert report["pairs"]["editor_vs_policy"]["perfect_second"] == 0.0 and report["policy_perfect"] == 0.0
    editor_use, regenerator_use = report["draft_use"]["editor"], report["draft_use"]["regenerator"]
    # editor: own draft + missing word = 3/3; another prompt's draft + this prompt's first word = 1/3
    assert editor_use["delta"] == 1.0 and editor_use["mean_gain"] == pytest.approx(2 / 3)
    assert editor_use["output_changed"] == 1.0 and editor_use["delta_ci"] == [1.0, 1.0]
    assert editor_use["edit_distance"] == pytest.approx(1 / 3) and editor_use["unchanged"] == 0.0
    # copy gap: "b c" -> "b c a" is one insertion in 3 (1/3); "b c" -> "e f a" replaces everything (1): 1 - 1/3
    assert editor_use["copy_gap"] == pytest.approx(2 / 3) and editor_use["n"] == 4 and editor_use["same_draft"] == 0
    assert regenerator_use["delta"] == 0.0 and regenerator_use["mean_gain"] == 0.0
    assert regenerator_use["output_changed"] == 0.0 and regenerator_use["copy_gap"] == 0.0
    first = report["per_iteration"][0]
    assert first["editor"]["perfect_drafts"] == 0 and first["editor"]["perfect_kept"] is None
    # perfect drafts: the editor returns them as they are, the regenerator rewrites them (perfect again)
    perfect = evaluation_report(prompts[:2], {m: iterate(s, prompts[:2], prompts[:2], 1) for m, s in steps.items()},
                                verdicts, 10.0, 20, 5, 0, oracle=oracle_of_words)["per_iteration"][0]
    assert perfect["editor"]["perfect_drafts"] == 2 and perfect["editor"]["perfect_kept"] == 1.0
    assert perfect["editor"]["unchanged"] == 1.0 and perfect["editor"]["edit_distance"] == 0.0
    assert perfect["regenerator"]["perfect_kept"] == 1.0 and perfect["regenerator"]["unchanged"] == 0.0


def test_draft_use_leaves_out_prompts_whose_other_draft_is_the_same_text() -> None:
    """A policy that gives two prompts the same y_0: those prompts' 'other' draft is their own, so they are left out
    (`same_draft`); when every draft is the same text, there is nothing to compare (n = 0, the console says n/a)."""
    prompts, order = ["a b", "c d", "e f"], [1, 2, 0]
    editor = lambda ps, ds: [f"{d} {p.split()[0]}" for p, d in zip(ps, ds, strict=True)]  # noqa: E731
    drafts = ["x", "x", "y"]                       # prompt 0's other draft is prompt 1's: the same "x"
    chains = {"editor": iterate(editor, prompts, drafts, 1)}
    report = evaluation_report(prompts, chains, ScoreVerdicts(oracle_of_words), 10.0, 20, 5, 0,
                               deranged={"editor": (order, editor(prompts, [drafts[j] for j in order]))})
    assert report["draft_use"]["editor"]["same_draft"] == 1 and report["draft_use"]["editor"]["n"] == 2
    same = evaluation_report(prompts, {"editor": iterate(editor, prompts, ["x"] * 3, 1)},
                             ScoreVerdicts(oracle_of_words), 10.0, 20, 5, 0,
                             deranged={"editor": (order, editor(prompts, ["x"] * 3))})
    assert same["draft_use"]["editor"]["n"] == 0 and same["draft_use"]["editor"]["same_draft"] == 3
    assert any("draft use editor: n/a" in line for line in format_evaluation(same))
