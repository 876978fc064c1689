"""`python -m pit.compare <multirun dir>...`: one table across runs keyed by their overrides, and the paper's plots.

Reads only what each Hydra job leaves on disk (`.hydra/overrides.yaml`, `results.json`), so it works offline and
on runs copied from a cluster. Writes `comparison.md`, `comparison.csv` and PNGs: Δ per run (ablations),
Δ against any numeric swept setting (e.g. temperature), and ELO against the improvement iteration.
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


def job_row(job: Path) -> dict[str, Any]:
    """The numbers of one job: Δ of each pair at k = 1 and per iteration, mean judge scores, ELO, lengths, time."""
    results = json.loads((job / "results.json").read_text())
    report = results.get("eval", {})
    row: dict[str, Any] = {"job": str(job), "wall_seconds": results.get("wall_seconds")}
    for pair, numbers in report.get("pairs", {}).items():
        row[f"delta {pair}"] = numbers["delta"]
        row[f"delta_lc {pair}"] = numbers.get("delta_length_controlled")
    if "policy_mean_score" in report:
        row["score policy"] = report["policy_mean_score"]
    for entry in report.get("per_iteration", []):
        k = entry["iteration"]
        for name, numbers in entry.items():
            if isinstance(numbers, dict) and "delta_vs_policy" in numbers:
                row[f"delta {name}_vs_policy@{k}"] = numbers["delta_vs_policy"]
                if "mean_score" in numbers:
                    row[f"score {name}@{k}"] = numbers["mean_score"]
    row.update({f"elo {variant}": rating for variant, rating in report.get("elo", {}).items()})
    row.update({f"words {variant}": n for variant, n in report.get("lengths", {}).items()})
    return row


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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def write_tables(swept: list[str], rows: list[dict[str, Any]], out: Path) -> list[str]:
    """comparison.csv (every column) and comparison.md (overrides, Δ at k = 1, scores, time)."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with (out / "comparison.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({c: _cell(row.get(c)) for c in columns} for row in rows)
    shown = [*swept, *(c for c in columns if c.startswith(("delta ", "score ")) and "@" not in c),
             *(c for c in columns if c.startswith("score ") and "@" in c), "wall_seconds"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in shown) + " |" for row in rows]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    return lines


def plot(swept: list[str], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Δ per run (bars), Δ against each numeric swept key (lines), ELO against the iteration (lines per run)."""
    plt = pyplot()
    written: list[Path] = []
    pairs = sorted({c for row in rows for c in row if c.startswith("delta ") and "@" not in c})
    labels = [" ".join(f"{k}={row[k]}" for k in swept) or Path(row["job"]).name for row in rows]
    if pairs:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) * len(pairs) / 2), 4))
        width = 0.8 / len(pairs)
        for i, pair in enumerate(pairs):
            ax.bar([x + i * width for x in range(len(rows))], [row.get(pair) or 0.0 for row in rows], width,
                   label=pair.removeprefix("delta "))
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], labels, rotation=20, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("Δ = win − lose (iteration 1)")
        ax.legend(fontsize=8)
        written.append(save(fig, out / "delta_by_run.png"))
    for key in swept:
        try:
            values = [float(row[key]) for row in rows]
        except ValueError:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        order = sorted(range(len(rows)), key=lambda i: values[i])
        for pair in pairs:
            ax.plot([values[i] for i in order], [rows[i].get(pair) for i in order], marker="o",
                    label=pair.removeprefix("delta "))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("Δ = win − lose (iteration 1)")
        ax.legend(fontsize=8)
        written.append(save(fig, out / f"delta_vs_{key.replace('.', '_')}.png"))
    elo = [(label, row) for label, row in zip(labels, rows, strict=True) if "elo policy" in row]
    if elo:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, row in elo:
            methods = sorted({c.removeprefix("elo ").split("@")[0] for c in row if c.startswith("elo ") and "@" in c})
            for method in methods:
                ks = sorted(int(c.split("@")[1]) for c in row if c.startswith(f"elo {method}@"))
                ax.plot([0, *ks], [row["elo policy"], *(row[f"elo {method}@{k}"] for k in ks)], marker="o",
                        label=f"{method} ({label})" if len(elo) > 1 else method)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("improvement iteration k (0 = y_0 of the policy)")
        ax.set_ylabel("ELO")
        ax.legend(fontsize=7)
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
