"""The checks registered after the third protocol (experiments/README.md): the control at β 1.0 against the
third run's chosen arm, paired on the same test prompts; the tables of β 1.0 in every PPO stage (job dirs
`all_beta1`, the default since); seeds 3 and 4 of the chosen arm.

    python experiments/default/checks.py multirun/default3 multirun/default3_extra
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import mean

from summarize import (
    ORACLE,
    ablations,
    delta,
    extra_seeds,
    generations,
    headline,
    load,
    metric,
    paired,
    per_seed,
    rl_against_sft,
)

DEFAULT_ARM = "residual_beta1"   # the third run's choice: M_P and the control at β 0.2
ALL_BETA1 = {"all_beta1": "`residual`, β 1.0 in every PPO stage",
             "all_beta1_full": "`full` (Eq. 2), β 1.0 in every PPO stage"}


def control_at_beta1(runs: Path) -> list[str]:
    """The third run's PIT@1 against the control trained at β 1.0 (the `all_beta1` jobs), and that control's score."""
    found = load(runs)
    rows = ["| seed | control β 1.0 | Δ PIT@1 vs control β 1.0 | control β 0.2 | Δ PIT@1 vs control β 0.2 |",
            "|---|---|---|---|---|"]
    for seed, results in sorted(found["all_beta1"]["pit_control"].items()):
        pit = generations(runs, seed, found[DEFAULT_ARM]["pit_control"][seed])
        control = generations(runs, seed, results)
        if [r["prompt"] for r in pit] != [r["prompt"] for r in control]:
            raise SystemExit(f"seed {seed}: the two jobs judged different test prompts")
        prompts, control_texts = [r["prompt"] for r in control], [r["control"] for r in control]
        old = found[DEFAULT_ARM]["pit_control"][seed]["eval"]
        rows.append(f"| {seed} | {mean(ORACLE.scores(prompts, control_texts)):.3f} | "
                    f"{delta(paired(prompts, [r['pit'][0] for r in pit], control_texts))} | "
                    f"{old['control_mean_score']['control']:.3f} | "
                    f"{delta(old['pairs']['pit_vs_control'])} |")
    return rows


def beta1_everywhere(runs: Path) -> list[str]:
    """The tables of summarize.py for β 1.0 in every PPO stage, and the critics on round-2 samples."""
    found, seeds = load(runs), [0, 1, 2]
    critics = ["| arm | R_PIT within-prompt oracle corr. (round-2 samples) | R_P difference, same samples |",
               "|---|---|---|"]
    for arm, label in ALL_BETA1.items():
        runs_of_arm = [found[arm]["pit_control"][s] for s in seeds]
        critics.append(f"| {label} | " + " | ".join(
            per_seed([metric(r, "pit_rl/2_policy", f"val_{critic}_oracle_corr") for r in runs_of_arm], "+.3f")
            for critic in ("gap", "rp")) + " |")
    return [*headline(found, seeds, ALL_BETA1)[0], "", *ablations(found, seeds, ALL_BETA1)[0], "",
            *rl_against_sft(runs, found, seeds, ALL_BETA1)[0], "", *critics]


if __name__ == "__main__":
    print("\n".join(["Control at β 1.0:", "", *control_at_beta1(Path(sys.argv[1])), "",
                     "β 1.0 in every PPO stage:", "", *beta1_everywhere(Path(sys.argv[1])), "",
                     "Seeds 3 and 4 of the third run's arm:", "", *extra_seeds(Path(sys.argv[2]), DEFAULT_ARM)]))
