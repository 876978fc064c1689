"""Tables of the pre-registered default experiment from its job dirs: `<runs>/seed<s>/<arm>/<objective>/`.

    python experiments/default/summarize.py multirun/default experiments/default/results

Writes `<out>.md` (the tables) and `<out>.json` (every number they show). The default arm (the gap loss) is
chosen by the rule fixed before the runs, on validation metrics only; test numbers are reported for every arm
(experiments/README.md).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from statistics import mean
from typing import Any

from pit.data.synthetic import score
from pit.evaluate.report import compare_pair
from pit.stages.judges import ScoreVerdicts

ARMS = {"residual": "`residual`", "full": "`full` (Eq. 2)"}   # run.sh's arms (the fourth protocol): the gap loss
ABLATIONS = (("pit_no_rl", "no RL (M_PIT's SFT)"), ("pit_round1_only", "round 1 only"),
             ("pit_round2_only", "round 2 only"), ("pit_control", "both rounds (PIT)"),
             ("pit_no_sft", "both rounds, no SFT of M_PIT"))
FINAL_ROUND = {"pit_control": "pit_rl/2_policy", "pit_round1_only": "pit_rl/1_dataset",
               "pit_round2_only": "pit_rl/1_policy", "pit_no_sft": "pit_rl/2_policy"}


def load(runs: Path) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """results.json of every finished job: found[arm][objective][seed]."""
    found: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for path in sorted(runs.glob("seed*/*/*/results.json")):
        results = json.loads(path.read_text())
        if "wall_seconds" not in results:
            continue
        seed, arm, objective = int(path.parts[-4].removeprefix("seed")), path.parts[-3], path.parts[-2]
        found.setdefault(arm, {}).setdefault(objective, {})[seed] = results
    return found


def delta(pair: dict[str, Any]) -> str:
    low, high = pair["delta_ci"]
    return f"{pair['delta']:+.3f} [{low:+.2f}, {high:+.2f}]"


def per_seed(values: list[float], spec: str) -> str:
    if all(math.isnan(v) for v in values):   # a metric this variant does not have (no trained part)
        return "n/a"
    return " / ".join(format(v, spec) for v in values) + f" (mean {format(mean(values), spec)})"


def metric(results: dict[str, Any], stage: str, name: str) -> float:
    return results["stages"][stage]["metrics"].get(name, float("nan"))


def selection(found: dict, seeds: list[int]) -> tuple[str, list[str], dict[str, Any]]:
    """The rule fixed before the runs: the highest mean val score of M_PIT after its last round on M_P's own greedy
    drafts of val prompts (the val mirror of the test Δ); within 0.01 of the best, the higher mean within-prompt
    correlation of R_PIT with the oracle on round-2 samples."""
    rows, critics, numbers = [], [], {}
    for arm, label in ARMS.items():
        runs = found.get(arm, {}).get("pit_control", {})
        if not all(s in runs for s in seeds):
            raise SystemExit(f"{arm}: pit_control did not finish for every seed {seeds}")
        numbers[arm] = n = {
            "val_draft_no_rl": [metric(runs[s], "pit_rl/1_dataset", "val_draft_oracle_start") for s in seeds],
            "val_draft_round1": [metric(runs[s], "pit_rl/1_dataset", "val_draft_oracle") for s in seeds],
            "val_draft_round2": [metric(runs[s], "pit_rl/2_policy", "val_draft_oracle") for s in seeds],
            "val_draft_reference": [metric(runs[s], "pit_rl/2_policy", "val_draft_oracle_reference") for s in seeds],
            "val_oracle_round2": [metric(runs[s], "pit_rl/2_policy", "val_oracle") for s in seeds],
            "kl_round2": [metric(runs[s], "pit_rl/2_policy", "final_kl") for s in seeds]}
        for stage, suffix in (("pit_rl/2_policy", ""), ("pit_rl/1_dataset", "_start")):
            for critic in ("gap", "trained", "rp"):
                name = f"val_{critic}_oracle_corr{suffix}"
                n[name] = [metric(runs[s], stage, name) for s in seeds]
        rows.append(f"| {label} | {per_seed(n['val_draft_reference'], '.3f')} | {per_seed(n['val_draft_no_rl'], '.3f')}"
                    f" | {per_seed(n['val_draft_round1'], '.3f')} | {per_seed(n['val_draft_round2'], '.3f')} | "
                    f"{per_seed(n['val_oracle_round2'], '.3f')} | {per_seed(n['kl_round2'], '.2f')} | "
                    f"{per_seed(n['val_gap_oracle_corr'], '+.3f')} | {per_seed(n['val_rp_oracle_corr'], '+.3f')} |")
        critics.append(f"| {label} | {per_seed(n['val_gap_oracle_corr_start'], '+.3f')} | "
                       f"{per_seed(n['val_trained_oracle_corr_start'], '+.3f')} | "
                       f"{per_seed(n['val_rp_oracle_corr_start'], '+.3f')} | "
                       f"{per_seed(n['val_trained_oracle_corr'], '+.3f')} |")
    best = max(mean(n["val_draft_round2"]) for n in numbers.values())
    close = [a for a, n in numbers.items() if mean(n["val_draft_round2"]) >= best - 0.01]
    chosen = max(close, key=lambda a: mean(numbers[a]["val_gap_oracle_corr"]))
    header = ["| arm | M_P's val drafts (seeds " + "/".join(map(str, seeds)) + ") | M_PIT on them: no RL | after round"
              " 1 | after round 2 | M_PIT on val y_l after round 2 | KL after round 2 (nats) | R_PIT within-prompt "
              "oracle corr. (round-2 samples) | R_P difference, same samples |", "|---" * 9 + "|"]
    critic_header = ["", "Within-prompt oracle correlation of each critic before round 1, on M_PIT's SFT samples (the "
                     "same seeded samples for every arm), and of the trained part alone after round 2:", "",
                     "| arm | R_PIT (as PPO uses it) | its trained part alone | R_P difference | trained part, "
                     "round-2 samples |", "|---|---|---|---|---|"]
    return chosen, header + rows + critic_header + critics, numbers


def headline(found: dict, seeds: list[int], arms: dict[str, str] = ARMS) -> tuple[list[str], dict[str, Any]]:
    rows = ["| arm | seed | y_0 (M_P) | PIT@1 | Δ PIT@1 vs y_0 [95 % CI] | Δ@2 | Δ@3 | control | "
            "Δ PIT@1 vs control | Δ control vs y_0 |", "|---|---|---|---|---|---|---|---|---|---|"]
    numbers: dict[str, Any] = {}
    for arm, label in arms.items():
        for seed in seeds:
            results = found.get(arm, {}).get("pit_control", {}).get(seed)
            if results is None:
                continue
            report = results["eval"]
            per = report["per_iteration"]
            entry = {"y0": report["policy_mean_score"], "pit@1": per[0]["pit"]["mean_score"],
                     "delta@k": [e["pairs"]["pit_vs_policy"]["delta"] for e in per],
                     "delta@1_ci": report["pairs"]["pit_vs_policy"]["delta_ci"],
                     "control": report["control_mean_score"]["control"],
                     "pit_vs_control": report["pairs"]["pit_vs_control"]["delta"],
                     "pit_vs_control_ci": report["pairs"]["pit_vs_control"]["delta_ci"],
                     "control_vs_policy": report["controls"]["control"]["delta"],
                     "mp_val_oracle": metric(results, "rlhf_policy", "val_oracle"),
                     "rlhf_explained_variance":   # none with the group baseline (no critic)
                         results["stages"]["rlhf_policy"]["metrics"].get("final_explained_variance"),
                     "rlhf_kl": metric(results, "rlhf_policy", "final_kl"),
                     "wall_seconds": results["wall_seconds"]}
            numbers.setdefault(arm, {})[seed] = entry
            rows.append(f"| {label} | {seed} | {entry['y0']:.3f} | {entry['pit@1']:.3f} | "
                        f"{delta(report['pairs']['pit_vs_policy'])} | {entry['delta@k'][1]:+.3f} | "
                        f"{entry['delta@k'][2]:+.3f} | {entry['control']:.3f} | "
                        f"{delta(report['pairs']['pit_vs_control'])} | {delta(report['controls']['control'])} |")
    return rows, numbers


def ablations(found: dict, seeds: list[int], arms: dict[str, str] = ARMS) -> tuple[list[str], dict[str, Any]]:
    rows = ["| arm | M_PIT | " + " | ".join(f"seed {s}: score, Δ vs y_0 [95 % CI]" for s in seeds) + " |",
            "|---|---|" + "---|" * len(seeds)]
    numbers: dict[str, Any] = {}
    for arm, arm_label in arms.items():
        for objective, label in ABLATIONS:
            runs = found.get(arm, {}).get(objective, {})
            if not all(s in runs for s in seeds):
                continue
            cells = []
            for seed in seeds:
                report = runs[seed]["eval"]
                pit_score = report["per_iteration"][0]["pit"]["mean_score"]
                numbers.setdefault(arm, {}).setdefault(objective, {})[seed] = {
                    "score": pit_score, "delta": report["pairs"]["pit_vs_policy"]["delta"],
                    "delta_ci": report["pairs"]["pit_vs_policy"]["delta_ci"]}
                cells.append(f"{pit_score:.3f}, {delta(report['pairs']['pit_vs_policy'])}")
            rows.append(f"| {arm_label} | {label} | " + " | ".join(cells) + " |")
    return rows, numbers


def generations(runs: Path, seed: int, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluate stage's test generations of one job, from its seed's cache (run.sh's layout)."""
    path = runs / f"cache-{seed}" / "evaluate" / results["stages"]["evaluate"]["key"] / "generations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


ORACLE = ScoreVerdicts(lambda prompts, texts: [score(p, t) for p, t in zip(prompts, texts, strict=True)])


def paired(prompts: list[str], first: list[str], second: list[str]) -> dict[str, Any]:
    """Δ = win − lose of `first` over `second` under the oracle, with its 95 % paired-bootstrap interval (evaluate's
    comparison, bootstrap seed 0)."""
    return compare_pair(ORACLE, prompts, first, second, length_ratio=1.25, bootstrap=1000, seed=0)


def rounds_vs_no_rl(runs: Path, seed: int, objectives: dict[str, dict[int, Any]], what: str) -> dict[str, Any]:
    """PIT@1 after both rounds (`pit_control`) against M_PIT's SFT alone (`pit_no_rl`) on the same test drafts."""
    rl, sft = (generations(runs, seed, objectives[objective][seed]) for objective in ("pit_control", "pit_no_rl"))
    if [(r["prompt"], r["policy"]) for r in rl] != [(r["prompt"], r["policy"]) for r in sft]:
        raise SystemExit(f"{what}: pit_control and pit_no_rl improved different test drafts")
    return paired([r["prompt"] for r in rl], [r["pit"][0] for r in rl], [r["pit"][0] for r in sft])


def rl_against_sft(runs: Path, found: dict, seeds: list[int],
                   arms: dict[str, str] = ARMS) -> tuple[list[str], dict[str, Any]]:
    """Does RL add to M_PIT's SFT? PIT@1 after both rounds against no RL on the same test drafts y_0, paired over
    prompts, judged by the oracle."""
    rows = ["| arm | " + " | ".join(f"seed {s}: Δ both rounds vs no RL [95 % CI]" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds)]
    numbers: dict[str, Any] = {}
    for arm, label in arms.items():
        cells = []
        for seed in seeds:
            pair = rounds_vs_no_rl(runs, seed, found[arm], f"{arm}, seed {seed}")
            numbers.setdefault(arm, {})[seed] = {"delta": pair["delta"], "delta_ci": pair["delta_ci"]}
            cells.append(delta(pair))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows, numbers


def extra_seeds(runs: Path, arm: str) -> list[str]:
    """A replication on more seeds of one arm: y_0, PIT@1 against y_0 and against the control, both rounds against
    no RL on the same drafts, and the critics on round-2 samples (val), for each seed."""
    found = load(runs)[arm]
    rows = ["| seed | y_0 | PIT@1 | Δ PIT@1 vs y_0 | control | Δ PIT@1 vs control | Δ both rounds vs no RL | "
            "R_PIT corr. | R_P corr. |", "|---|---|---|---|---|---|---|---|---|"]
    for seed in sorted(found["pit_control"]):
        results = found["pit_control"][seed]
        report = results["eval"]
        rounds = rounds_vs_no_rl(runs, seed, found, f"{arm}, seed {seed}")
        pit_score = report["per_iteration"][0]["pit"]["mean_score"]
        critics = (metric(results, "pit_rl/2_policy", f"val_{c}_oracle_corr") for c in ("gap", "rp"))
        rows.append(f"| {seed} | {report['policy_mean_score']:.3f} | {pit_score:.3f} | "
                    f"{delta(report['pairs']['pit_vs_policy'])} | {report['control_mean_score']['control']:.3f} | "
                    f"{delta(report['pairs']['pit_vs_control'])} | {delta(rounds)} | "
                    + " | ".join(f"{c:+.3f}" for c in critics) + " |")
    return rows


def main(runs: Path, out: Path) -> None:
    found = load(runs)
    seeds = sorted({s for gaps in found.values() for objs in gaps.values() for s in objs})
    chosen, select_rows, select = selection(found, seeds)
    head_rows, head = headline(found, seeds)
    ablation_rows, ablation = ablations(found, seeds)
    rl_rows, rl = rl_against_sft(runs, found, seeds)
    lines = ["## Choosing the default arm (validation only)", "", *select_rows, "",
             f"Rule fixed before the runs: highest mean val score of M_PIT on M_P's drafts after the last round; "
             f"within 0.01 of it, the highest mean R_PIT correlation. Chosen: `{chosen}`.", "",
             "## PIT against y_0 and against the compute-matched control (test split, oracle, 95 % paired "
             "bootstrap intervals)", "", *head_rows, "",
             "## Curriculum and SFT ablations (paper Table 2; test split, k = 1)", "", *ablation_rows, "",
             "## Does RL add to M_PIT's SFT? (test split, k = 1, both rounds against no RL on the same y_0, oracle, "
             "95 % paired bootstrap intervals)", "", *rl_rows, ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "chosen_arm": chosen, "selection": select,
                                                    "headline": head, "ablations": ablation,
                                                    "rl_vs_no_rl": rl}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1] == "--replication":   # summarize.py --replication <runs> <arm>: more seeds of the chosen arm
        print("\n".join(extra_seeds(Path(sys.argv[2]), sys.argv[3])))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
