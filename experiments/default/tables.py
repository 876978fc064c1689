"""The default's tables in README.md and experiments/README.md, each printed from a committed results file.

    python experiments/default/tables.py console experiments/default/results_default_seed0.json
        README's first table: the console table of a cold `python -m pit.run` (its results.json, committed)
    python experiments/default/tables.py collect experiments/default/results_seeds.json <run_dir> [<run_dir> ...]
        the headline numbers of `objective=pit_control` jobs, one per seed, into one small file
    python experiments/default/tables.py seeds experiments/default/results_seeds.json
        the per-seed table of that file (PIT against y_0 and the control, the mean gain, draft use)
    python experiments/default/tables.py probes experiments/default/results_probes.json [<run_dir> ...]
        issue #29's SFT-only val probes (experiments/default/probes.sh): collected from their job dirs, or printed

tests/test_docs.py checks that the docs hold exactly what these print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from pit.pipeline import STAGES
from pit.run import format_summary

FIGURES = "outputs/<date>/<time>/figures"   # the job dir of a user's run, in place of the recorded one
WIDTH = 118                                  # README's code blocks: longer stage lines are shortened


def console(results: dict[str, Any]) -> str:
    """What `python -m pit.run` printed at the end of the job that wrote `results` (results.json sorts its keys: the
    stages go back into the stage table's order), long lines shortened."""
    order = [stage.name for stage in STAGES]
    stages = dict(sorted(results["stages"].items(), key=lambda kv: (order.index(kv[0].split("/")[0]), kv[0])))
    shown = format_summary({**results, "stages": stages,
                            **({"figures_dir": FIGURES} if "figures_dir" in results else {})})
    lines = shown.splitlines()
    evaluation = next((i for i, line in enumerate(lines) if line.startswith("evaluation:")), len(lines))
    return "\n".join(line if len(line) <= WIDTH or evaluation <= i < len(lines) - 2 else line[: WIDTH - 4] + " ..."
                     for i, line in enumerate(lines))


def interval(result: dict[str, Any], value: str = "delta", bounds: str = "delta_ci") -> dict[str, Any]:
    return {"value": result[value], "ci": result[bounds]}


def collect(run_dirs: list[Path]) -> dict[str, Any]:
    """Per seed: y_0, PIT@k (score, Δ, gain, perfect), draft use, the control, from each job's results.json."""
    seeds: dict[str, Any] = {}
    for run in run_dirs:
        results = json.loads((run / "results.json").read_text())
        seed = yaml.safe_load((run / ".hydra/config.yaml").read_text())["seed"]
        report = results["eval"]
        per = report["per_iteration"]
        seeds[str(seed)] = {
            "run": run.name, "n": report["n"], "split": report.get("split", "test"),
            "y0": report["policy_mean_score"], "y0_perfect": report["policy_perfect"],
            "pit": [{"k": e["iteration"], "score": e["pit"]["mean_score"],
                     "delta": interval(e["pairs"]["pit_vs_policy"]),
                     "gain": interval(e["pairs"]["pit_vs_policy"], "mean_gain", "gain_ci"),
                     "perfect": e["pairs"]["pit_vs_policy"]["perfect_first"],
                     "edit_distance": e["pit"]["edit_distance"], "unchanged": e["pit"]["unchanged"]} for e in per],
            "draft_use": {"delta": interval(report["draft_use"]["pit"]),
                          "gain": interval(report["draft_use"]["pit"], "mean_gain", "gain_ci"),
                          "output_changed": report["draft_use"]["pit"]["output_changed"]},
            "control": {"score": report["control_mean_score"]["control"],
                        "pit_vs_control": interval(report["pairs"]["pit_vs_control"]),
                        "pit_vs_control_gain": interval(report["pairs"]["pit_vs_control"], "mean_gain", "gain_ci")},
            "critics": {name: results["stages"]["pit_rl/2_policy"]["metrics"][f"val_{name}_oracle_corr"]
                        for name in ("gap", "rp")},   # within-prompt oracle corr. on round-2 samples (val)
            "wall_seconds": results["wall_seconds"]}
    return {"seeds": seeds}


def fmt(entry: dict[str, Any], spec: str = "+.3f") -> str:
    low, high = entry["ci"]
    return f"{format(entry['value'], spec)} [{low:+.2f}, {high:+.2f}]"


def seeds_table(numbers: dict[str, Any]) -> str:
    """Markdown, one row per seed."""
    lines = ["| seed | y_0 (perfect) | PIT@1 (perfect) | Δ PIT@1 vs y_0 | mean gain @1 | Δ@2 | Δ@3 | draft use Δ | "
             "draft use gain | output changed | control | Δ PIT@1 vs control | R_PIT / R_P corr. |",
             "|---" * 13 + "|"]
    for seed, n in sorted(numbers["seeds"].items(), key=lambda kv: int(kv[0])):
        pit = n["pit"]
        use, control = n["draft_use"], n["control"]
        lines.append(f"| {seed} | {n['y0']:.3f} ({n['y0_perfect']:.0%}) | {pit[0]['score']:.3f} "
                     f"({pit[0]['perfect']:.0%}) | {fmt(pit[0]['delta'])} | {fmt(pit[0]['gain'])} | "
                     + " | ".join(fmt(p["delta"]) for p in pit[1:3]) + f" | {fmt(use['delta'])} | {fmt(use['gain'])} | "
                     f"{use['output_changed']:.0%} | {control['score']:.3f} | {fmt(control['pit_vs_control'])} | "
                     f"{n['critics']['gap']:+.3f} / {n['critics']['rp']:+.3f} |")
    return "\n".join(lines)


def probe(run: Path) -> dict[str, Any]:
    """One SFT-only probe (experiments/default/probes.sh): its overrides and M_PIT@1's numbers on its split."""
    report = json.loads((run / "results.json").read_text())["eval"]
    first, use = report["per_iteration"][0], report["draft_use"]["pit"]
    overrides = [o for o in yaml.safe_load((run / ".hydra/overrides.yaml").read_text())
                 if not o.startswith(("objective.stages", "evaluate.", "logger", "trainer.", "hydra."))]
    return {"probe": run.name, "overrides": overrides, "split": report["split"], "n": report["n"],
            "y0": report["policy_mean_score"], "pit@1": first["pit"]["mean_score"],
            "delta": interval(first["pairs"]["pit_vs_policy"]),
            "gain": interval(first["pairs"]["pit_vs_policy"], "mean_gain", "gain_ci"),
            "draft_use": interval(use), "draft_use_gain": interval(use, "mean_gain", "gain_ci"),
            "output_changed": use["output_changed"], "edit_distance": first["pit"]["edit_distance"]}


def probes_table(numbers: dict[str, Any]) -> str:
    """Markdown, one row per probe."""
    lines = ["| probe | overrides | y_0 | M_PIT@1 | Δ M_PIT@1 vs y_0 | mean gain | draft use Δ | draft use gain | "
             "output changed | edit distance |", "|---" * 10 + "|"]
    for n in numbers["probes"]:
        lines.append(f"| {n['probe']} | {' '.join(n['overrides']) or '(none)'} | {n['y0']:.3f} | {n['pit@1']:.3f} | "
                     f"{fmt(n['delta'])} | {fmt(n['gain'])} | {fmt(n['draft_use'])} | {fmt(n['draft_use_gain'])} | "
                     f"{n['output_changed']:.0%} | {n['edit_distance']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    command, path = argv[0], Path(argv[1])
    if command == "console":
        print(console(json.loads(path.read_text())))
    elif command == "collect":
        path.write_text(json.dumps(collect([Path(p) for p in argv[2:]]), indent=1) + "\n")
        print(seeds_table(json.loads(path.read_text())))
    elif command == "seeds":
        print(seeds_table(json.loads(path.read_text())))
    elif command == "probes":   # probes <out.json> <run_dir>...: collect; probes <file.json>: the table again
        if argv[2:]:
            path.write_text(json.dumps({"probes": [probe(Path(p)) for p in argv[2:]]}, indent=1) + "\n")
        print(probes_table(json.loads(path.read_text())))
    else:
        raise SystemExit(f"unknown command {command!r}: console, collect, seeds or probes")


if __name__ == "__main__":
    main(sys.argv[1:])
