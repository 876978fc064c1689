"""`python -m pit.compare <multirun dir>...`: one table across runs keyed by their overrides, and the paper's plots.

Reads only what each Hydra job leaves on disk (`.hydra/overrides.yaml`, `results.json`), so it works offline and
on runs copied from a cluster. Writes `comparison.md`, `comparison.csv` and PNGs: Δ per run (ablations), Δ against
any numeric swept setting (e.g. temperature), each Δ with its 95 % interval (table and error bars), the gap model's
metrics and draft use per run, and ELO against the improvement iteration. ELO is drawn as one panel per run, never
pooled: each run fits its own ratings and results.json keeps the ratings, not the games, so runs have no common
scale (y_0's rating differs between runs that share y_0).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from pit.errors import UserError
from pit.evaluate.figures import pyplot, save

HIDDEN_OVERRIDES = ("hydra.", "paths.")
MISSING = "—"   # a number this run did not record, in comparison.md
CI = (" ci_lo", " ci_hi")
SECTIONS = (   # comparison.md: (title, column prefixes), columns in this order
    ("Δ = win − lose share of prompts, [95 % interval]; k = 1 unless @k; mean judge score; seconds",
     ("delta ", "delta_lc ", "score ", "wall_seconds")),
    ("Gap model R_PIT: val accuracy of each Eq. 2 comparison; within-prompt correlation with the oracle on the "
     "improver's samples (`_start`: before PPO)", ("gap ",)),
    ("Draft use at k = 1 (own draft vs another prompt's): Δ [95 % interval], share of outputs changed, copy gap; "
     "n/a: no prompt had a different draft", ("draft_use ",)),
)


def find_jobs(roots: list[Path]) -> list[Path]:
    """Every Hydra job dir under `roots` that finished writing results.json."""
    jobs = sorted({p.parent for root in roots for p in root.rglob("results.json")
                   if (p.parent / ".hydra" / "overrides.yaml").is_file()})
    if not jobs:
        raise UserError(f"no Hydra job with results.json and .hydra/overrides.yaml under {[str(r) for r in roots]}")
    return jobs


def read_overrides(job: Path) -> dict[str, str]:
    """`key=value` command-line overrides of a job, without those that only place files."""
    found: dict[str, str] = {}
    for item in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(HIDDEN_OVERRIDES):
            found[key] = value
    return found


def _with_ci(row: dict[str, Any], column: str, numbers: dict[str, Any], value: str = "delta") -> None:
    """`column` = numbers[value], and `<column> ci_lo` / `ci_hi` from its 95 % interval (`<value>_ci`) if recorded."""
    row[column] = numbers[value]
    if numbers.get(f"{value}_ci"):
        row[f"{column} ci_lo"], row[f"{column} ci_hi"] = numbers[f"{value}_ci"]


def gap_metrics(stages: dict[str, Any]) -> dict[str, float]:
    """R_PIT's val accuracies (`gap_reward`) and its within-prompt correlation with the oracle on the improver's
    samples, before PPO (`_start`, first round) and after it (last round); what a run did not record is absent."""
    found = {f"gap {k}": v for k, v in stages.get("gap_reward", {}).get("metrics", {}).items()
             if k.startswith("val_acc")}
    for stage in stages.values():   # in pipeline order: the first `_start` and the last final value stay
        for key, value in stage.get("metrics", {}).items():
            if "oracle_corr" in key and not (key.endswith("_start") and f"gap {key}" in found):
                found[f"gap {key}"] = value
    return found


def draft_use_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """Per method: draft use Δ (own vs another prompt's draft) with its interval, `output_changed`, `copy_gap`;
    "n/a" where no prompt had a different draft (n = 0)."""
    row: dict[str, Any] = {}
    for method, numbers in report.get("draft_use", {}).items():
        column = f"draft_use {method}"
        if not numbers.get("n"):
            row.update({column: "n/a", f"{column} output_changed": "n/a", f"{column} copy_gap": "n/a"})
            continue
        _with_ci(row, column, numbers)
        row.update({f"{column} {k}": numbers.get(k) for k in ("output_changed", "copy_gap")})
    return row


def job_row(job: Path) -> dict[str, Any]:
    """The numbers of one job: Δ of each pair at k = 1 and per iteration with their 95 % intervals, mean judge
    scores, ELO, lengths, the gap model's metrics, draft use and time."""
    results = json.loads((job / "results.json").read_text())
    report = results.get("eval", {})
    row: dict[str, Any] = {"job": str(job), "wall_seconds": results.get("wall_seconds")}
    for pair, numbers in report.get("pairs", {}).items():
        _with_ci(row, f"delta {pair}", numbers)
        row[f"delta_lc {pair}"] = numbers.get("delta_length_controlled")
    if "policy_mean_score" in report:
        row["score policy"] = report["policy_mean_score"]
    for entry in report.get("per_iteration", []):
        k = entry["iteration"]
        if k > 1:   # k = 1 is `pairs`
            for pair, numbers in entry.get("pairs", {}).items():
                _with_ci(row, f"delta {pair}@{k}", numbers)
        for name, numbers in entry.items():
            if isinstance(numbers, dict) and "mean_score" in numbers:
                row[f"score {name}@{k}"] = numbers["mean_score"]
    for variant, rating in report.get("elo", {}).items():
        _with_ci(row, f"elo {variant}", {"elo": rating, "elo_ci": report.get("elo_ci", {}).get(variant)}, "elo")
    row.update({f"words {variant}": n for variant, n in report.get("lengths", {}).items()})
    return {**row, **gap_metrics(results.get("stages", {})), **draft_use_metrics(report)}


def collect(roots: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """(swept keys, rows): one row per job with its overrides (only the keys that differ between jobs) first."""
    jobs = find_jobs(roots)
    overrides = [read_overrides(job) for job in jobs]
    keys = sorted({k for o in overrides for k in o})
    swept = [k for k in keys if len({o.get(k, "") for o in overrides}) > 1] or keys
    rows = []
    for job, found in zip(jobs, overrides, strict=True):
        numbers = job_row(job)
        rows.append({**{k: found.get(k, "") for k in swept}, **numbers})
    return swept, rows


def _cell(value: Any, missing: str = "") -> str:
    if isinstance(value, float):
        return missing if math.isnan(value) else f"{value:.4g}"
    return missing if value is None else str(value)


def _shown(row: dict[str, Any], column: str) -> str:
    """A comparison.md cell: the value, with its 95 % interval where the run recorded one."""
    value = _cell(row.get(column), MISSING)
    if f"{column}{CI[0]}" not in row:
        return value
    return f"{value} [{_cell(row[column + CI[0]])}, {_cell(row[column + CI[1]])}]"


def _section_columns(columns: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The columns of one section, by prefix, k = 1 before `@k`; interval bounds go into their value's cell."""
    picked = [c for c in columns if c.startswith(prefixes) and not c.endswith(CI)]
    return sorted(picked, key=lambda c: (next(i for i, p in enumerate(prefixes) if c.startswith(p)), "@" in c))


def write_tables(swept: list[str], rows: list[dict[str, Any]], out: Path) -> list[str]:
    """comparison.csv (every column, intervals as `ci_lo`/`ci_hi`) and comparison.md (one table per section of
    SECTIONS that some run recorded, keyed by the swept overrides); returns the lines of comparison.md."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with (out / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({c: _cell(row.get(c)) for c in columns} for row in rows)
    lines: list[str] = []
    for title, prefixes in SECTIONS:
        if not (shown := _section_columns(columns, prefixes)):
            continue
        lines += [f"## {title}", "", "| " + " | ".join([*swept, *shown]) + " |", "|" + "---|" * len([*swept, *shown])]
        lines += ["| " + " | ".join([*(_cell(row.get(k)) for k in swept), *(_shown(row, c) for c in shown)]) + " |"
                  for row in rows]
        lines.append("")
    (out / "comparison.md").write_text("\n".join(lines))
    return lines


def _number(value: Any) -> float:
    return float(value) if isinstance(value, float | int) else math.nan


def _yerr(points: list[tuple[dict[str, Any], str]]) -> list[tuple[float, ...]]:
    """matplotlib's `yerr` (lengths below, above) of each (row, column) value from its interval; NaN: no bar."""
    return list(zip(*((_number(row.get(c)) - _number(row.get(c + CI[0])), _number(row.get(c + CI[1])) -
                       _number(row.get(c))) for row, c in points), strict=True))


def delta_by_run(labels: list[str], rows: list[dict[str, Any]], pairs: list[str]) -> Any:
    """Bars of Δ at k = 1 per run and pair, with 95 % interval error bars; the legend beside the axes."""
    fig, ax = pyplot().subplots(figsize=(max(6.0, 1.2 * len(rows) * len(pairs) / 2) + 2.5, 4.5))
    width = 0.8 / len(pairs)
    for i, pair in enumerate(pairs):
        ax.bar([x + i * width for x in range(len(rows))], [_number(row.get(pair)) for row in rows], width,
               yerr=_yerr([(row, pair) for row in rows]), capsize=3, label=pair.removeprefix("delta "))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], labels, rotation=20, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("Δ per run at iteration 1, with 95 % bootstrap intervals")
    ax.set_xlabel("run (swept overrides)")
    ax.set_ylabel("Δ = win − lose (share of prompts, −1 to 1)")
    ax.legend(title="pair", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def delta_against(key: str, values: list[float], rows: list[dict[str, Any]], pairs: list[str]) -> Any:
    """Δ at k = 1 of each pair against a numeric swept setting, with 95 % interval error bars."""
    fig, ax = pyplot().subplots(figsize=(7.5, 4.5))
    order = sorted(range(len(rows)), key=lambda i: values[i])
    for pair in pairs:
        ax.errorbar([values[i] for i in order], [_number(rows[i].get(pair)) for i in order],
                    yerr=_yerr([(rows[i], pair) for i in order]), marker="o", capsize=3,
                    label=pair.removeprefix("delta "))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"Δ at iteration 1 against {key}, with 95 % bootstrap intervals")
    ax.set_xlabel(key)
    ax.set_ylabel("Δ = win − lose (share of prompts, −1 to 1)")
    ax.legend(title="pair", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def elo_by_run(labels: list[str], rows: list[dict[str, Any]]) -> Any | None:
    """One panel per run: ELO of y_0 and of each method at k = 1..K with 95 % bootstrap intervals.

    ELO is fitted within each run (Bradley–Terry on that run's variants only, mean 1000) and results.json keeps
    the ratings, not the games, so runs cannot be put on one scale here: panels, not lines on one axis."""
    runs = [(label, row) for label, row in zip(labels, rows, strict=True) if "elo policy" in row]
    if not runs:
        return None
    ncols = min(3, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows + 0.5), squeeze=False)
    for ax, (label, row) in zip(axes.flat, runs, strict=False):   # the grid may have more panels than runs
        for method in sorted({c.split()[1].split("@")[0] for c in row if c.startswith("elo ") and "@" in c}):
            ks = sorted(int(c.split("@")[1]) for c in row if c.startswith(f"elo {method}@") and not c.endswith(CI))
            columns = ["elo policy", *(f"elo {method}@{k}" for k in ks)]
            ax.errorbar([0, *ks], [row[c] for c in columns], yerr=_yerr([(row, c) for c in columns]), marker="o",
                        capsize=3, label=method)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("improvement iteration k (0 = y_0)")
        ax.set_ylabel("ELO (points, this run's fit)")
        ax.legend(fontsize=7, loc="best")
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    fig.suptitle("ELO fitted within each run (not comparable across runs), 95 % bootstrap intervals")
    return fig


def plot(swept: list[str], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Δ per run (bars), Δ against each numeric swept key (lines), ELO against the iteration (a panel per run);
    every Δ and ELO with its 95 % interval as error bars."""
    written: list[Path] = []
    pairs = sorted({c for row in rows for c in row if c.startswith("delta ") and "@" not in c and not c.endswith(CI)})
    labels = [" ".join(f"{k}={row[k]}" for k in swept) or Path(row["job"]).name for row in rows]
    if pairs:
        written.append(save(delta_by_run(labels, rows, pairs), out / "delta_by_run.png"))
        for key in swept:
            try:
                values = [float(row[key]) for row in rows]
            except ValueError:
                continue
            written.append(save(delta_against(key, values, rows, pairs), out / f"delta_vs_{key.replace('.', '_')}.png"))
    if (fig := elo_by_run(labels, rows)) is not None:
        written.append(save(fig, out / "elo_vs_iteration.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pit.compare", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="multirun (or run) directories")
    parser.add_argument("--out", type=Path, help="where to write the table and plots (default: <first dir>/compare)")
    args = parser.parse_args(argv)
    try:
        swept, rows = collect(args.dirs)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = args.out or args.dirs[0] / "compare"
    out.mkdir(parents=True, exist_ok=True)
    print("\n".join(write_tables(swept, rows, out)))
    for path in plot(swept, rows, out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
