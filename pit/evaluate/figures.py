"""The PNGs of one job, drawn from what it recorded: per-stage training curves, Δ per iteration, draft use, ELO.

Every fitted stage keeps its logged history as `curves/metrics.csv` in its artifact (Lightning's CSVLogger), so a
job that reuses a cached stage still draws that stage's curves; offline users get them without a W&B account.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pit.tracking import Tracker

CURVES = "curves"              # the directory in a stage's artifact that holds its CSV history
MAX_PANELS = 9                 # metrics per stage figure, the first of FIRST that were logged before the rest
FIRST = ("train_loss", "val_loss", "reward_mean", "/kl", "explained_variance", "response_length", "entropy",
         "clip_fraction", "value_loss", "val_")
UNITS = (   # (part of a metric's name, its y-axis label): the first part found in the name labels the panel
    ("reward_mean", "reward ({reward})"), ("reward_std", "reward std ({reward})"),
    ("approx_kl", "KL new ‖ old policy (nats/token)"), ("/kl", "KL policy ‖ reference (nats/response)"),
    ("beta", "β (KL coefficient)"), ("entropy", "entropy (nats/token)"), ("response_length", "length (tokens)"),
    ("tokens_per_s", "tokens/s"), ("clip_fraction", "fraction of tokens clipped"),
    ("ended_with_eos", "fraction of responses"), ("explained_variance", "explained variance (1 = exact)"),
    ("policy_loss", "clipped surrogate loss"), ("value_loss", "value loss (squared error)"),
    ("_acc_", "accuracy (fraction of pairs)"), ("val_ppl", "perplexity (per token)"),
    ("margin", "score margin (better − worse)"), ("score_", "score (reward units)"), ("loss", "{loss}"),
)
CHANCE = 0.5   # dashed on accuracy panels (metrics.CHANCE; not imported: that module loads torch, `pit.compare` not)


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (no display on clusters and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Each logged metric of a CSVLogger file as (step, value) points, in the order they were logged."""
    series: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or 0)
            for name, value in row.items():
                if name in ("step", "epoch") or value in ("", None):
                    continue
                number = float(value)
                if math.isfinite(number):
                    series.setdefault(name, []).append((step, number))
    return series


def axis_labels(stage: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """The x-axis label of a stage's curves and each metric's y-axis label, with units."""
    ppo = any(name.endswith("reward_mean") for name in names)
    preference = any("_acc_" in name for name in names)
    fill = {"reward": "R_PIT gap score" if stage.startswith("pit_rl") else "R_P score",
            "loss": "Bradley–Terry loss (nats)" if preference else "cross-entropy (nats/token)"}
    ylabels = {name: next((label for part, label in UNITS if part in name), "").format(**fill) for name in names}
    return ("PPO iteration" if ppo else "training step (batches)"), ylabels


def stage_curves(stage: str, csv_file: Path, out: Path) -> Path | None:
    """One panel per metric of a stage (its training loss or reward first), with units, and a dashed chance line on
    accuracy panels; None when nothing was logged."""
    series = read_curves(csv_file)
    rank = {name: next((i for i, part in enumerate(FIRST) if part in name), len(FIRST)) for name in series}
    names = sorted(series, key=lambda n: (rank[n], n))[:MAX_PANELS]
    if not names:
        return None
    plt = pyplot()
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    xlabel, ylabels = axis_labels(stage, list(series))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*series[name], strict=True)
        ax.plot(steps, values, marker="." if len(steps) < 20 else None)
        if "_acc_" in name:
            ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(name.split("/", 1)[-1], fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabels[name], fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(stage)
    return save(fig, out / f"curves_{stage.replace('/', '_')}.png")


def delta_per_iteration(report: dict[str, Any], out: Path) -> Path | None:
    """Δ (win − lose) of each method against y_0 at k = 1..K, with its 95 % paired-bootstrap interval."""
    rows = report.get("per_iteration") or []
    pairs = sorted({p for row in rows for p in row["pairs"] if p.endswith("_vs_policy")})
    if not pairs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for pair in pairs:
        points = [(row["iteration"], row["pairs"][pair]) for row in rows if pair in row["pairs"]]
        ks = [k for k, _ in points]
        deltas = [p["delta"] for _, p in points]
        low = [p["delta"] - p["delta_ci"][0] for _, p in points]
        high = [p["delta_ci"][1] - p["delta"] for _, p in points]
        ax.errorbar(ks, deltas, yerr=[low, high], marker="o", capsize=4, label=pair.removesuffix("_vs_policy"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("improvement iteration k")
    ax.set_ylabel("Δ vs y_0 = win − lose (95 % CI)")
    ax.set_title(f"judge: {report.get('judge')}, {report.get('n')} test prompts", fontsize=9)
    ax.legend(fontsize=8)
    return save(fig, out / "delta_per_iteration.png")


def elo(report: dict[str, Any], out: Path) -> Path | None:
    """ELO of y_0 and of each method's k-th iteration, with the bootstrap interval over prompts."""
    ratings, intervals = report.get("elo") or {}, report.get("elo_ci") or {}
    if not ratings:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({name.split("@")[0] for name in ratings if "@" in name})
    for method in methods:
        steps = sorted((int(n.split("@")[1]), n) for n in ratings if n.startswith(f"{method}@"))
        ks, names = [0, *(k for k, _ in steps)], ["policy", *(n for _, n in steps)]
        values = [ratings[n] for n in names]
        bounds = [intervals.get(n, (ratings[n], ratings[n])) for n in names]
        low = [v - lo for v, (lo, _) in zip(values, bounds, strict=True)]
        high = [hi - v for v, (_, hi) in zip(values, bounds, strict=True)]
        ax.errorbar(ks, values, yerr=[low, high], marker="o", capsize=4, label=method)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("improvement iteration k (0 = y_0 of the policy)")
    ax.set_ylabel("ELO (95 % CI)")
    ax.legend(fontsize=8)
    return save(fig, out / "elo.png")


def draft_use(report: dict[str, Any], out: Path) -> Path | None:
    """Per improving method at k = 1: Δ vs y_0 beside draft use (own draft vs another prompt's), each with its 95 %
    interval, and the same two as mean score gains when there is an oracle. A Δ vs y_0 with no draft use is a
    regenerator, not an improver."""
    uses = {m: use for m, use in (report.get("draft_use") or {}).items() if use["n"]}
    if not uses:
        return None
    pairs = report.get("pairs", {})
    panels = [("delta", "delta_ci", "Δ = win − lose (95 % CI)")]
    if all("mean_gain" in u for u in uses.values()):
        panels.append(("mean_gain", "gain_ci", "mean score gain (95 % CI)"))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    methods = list(uses)
    for ax, (value, interval, label) in zip(axes.flat, panels, strict=True):
        for offset, (name, results) in enumerate((("vs y_0", [pairs[f"{m}_vs_policy"] for m in methods]),
                                                   ("draft use", [uses[m] for m in methods]))):
            xs = [i + 0.4 * offset for i in range(len(methods))]
            values = [r[value] for r in results]
            errors = [[v - r[interval][0] for v, r in zip(values, results, strict=True)],
                      [r[interval][1] - v for v, r in zip(values, results, strict=True)]]
            ax.bar(xs, values, width=0.38, yerr=errors, capsize=4, label=name)
        ax.set_xticks([i + 0.2 for i in range(len(methods))], methods)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"k = 1: improvement over y_0 and use of the draft (own vs another prompt's); judge "
                 f"{report.get('judge')}, {report.get('n')} prompts", fontsize=9)
    return save(fig, out / "draft_use.png")


def job_figures(results: dict[str, Any], curve_files: dict[str, Path], out: Path) -> list[Path]:
    """Every figure of a job into `out`: curves of each stage that logged any, Δ per iteration and ELO."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [stage_curves(stage, path, out) for stage, path in curve_files.items()]
    if "eval" in results:
        drawn += [delta_per_iteration(results["eval"], out), draft_use(results["eval"], out), elo(results["eval"], out)]
    return [path for path in drawn if path is not None]


def publish_figures(results: dict[str, Any], artifacts: Mapping[str, Path], output_dir: Path,
                    tracker: Tracker) -> None:
    """The job's PNGs into `<job>/figures/`, listed in `results` (`figures`, `figures_dir`) and logged to `tracker`."""
    curves = {name: artifacts[name] / CURVES / "metrics.csv" for name in results["stages"]}
    out = output_dir / "figures"
    drawn = job_figures(results, {n: p for n, p in curves.items() if p.is_file()}, out)
    results["figures"] = [str(p.relative_to(output_dir)) for p in drawn]
    results["figures_dir"] = str(out.resolve())
    tracker.log_images({p.stem: p for p in drawn})
