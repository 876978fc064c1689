"""`python -m pit.compare` on a fabricated multirun dir: the table keyed by overrides with every Δ's interval, the
gap model's metrics and draft use, the CSV and the plots with their error bars."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.container import BarContainer

from pit.compare import collect, delta_by_run, elo_by_run, main
from pit.evaluate.figures import pyplot


def pair(delta: float) -> dict[str, Any]:
    return {"win": 0.5 + delta / 2, "tie": 0.5 - delta / 2, "lose": 0.0, "delta": delta, "n": 10,
            "delta_ci": [delta - 0.1, delta + 0.05], "delta_length_controlled": delta / 2, "n_length_controlled": 5}


def fabricate(root: Path, temperature: float, delta: float, gap: bool = True, draft_n: int = 10) -> None:
    job = root / f"{temperature}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- evaluate.sampling.temperature={temperature}\n- objective=pit\n- hydra.sweep.dir=/x\n")
    pairs = {k: {"pit_vs_policy": pair(delta * k), "self_refine_vs_policy": pair(-delta)} for k in (1, 2)}
    report = {"judge": "oracle", "n": 10, "iterations": 2, "policy_mean_score": 0.5, "pairs": pairs[1],
              "per_iteration": [{"iteration": k, "pairs": pairs[k],
                                 "pit": {"delta_vs_policy": delta * k, "mean_score": 0.6},
                                 "self_refine": {"delta_vs_policy": -delta, "mean_score": 0.4}} for k in (1, 2)],
              "draft_use": {"pit": {**pair(delta / 4), "n": draft_n, "output_changed": 0.3, "copy_gap": 0.02}},
              "elo": {"policy": 1000.0, "pit@1": 1050.0, "pit@2": 1080.0, "self_refine@1": 950.0,
                      "self_refine@2": 920.0},
              "elo_ci": {"policy": [980.0, 1010.0], "pit@1": [1030.0, 1070.0]},
              "lengths": {"policy": 5.0, "pit@1": 6.0}}
    stages = {"gap_reward": {"metrics": {"val_acc_wl_gt_lw": 0.8, "val_loss": 1.0}}} if gap else {}
    stages |= {"pit_rl/1_dataset": {"metrics": {"val_gap_oracle_corr_start": 0.1, "val_gap_oracle_corr": 0.2}},
               "pit_rl/2_policy": {"metrics": {"val_gap_oracle_corr_start": 0.9, "val_gap_oracle_corr": 0.3}}}
    (job / "results.json").write_text(json.dumps({"stages": stages, "eval": report, "wall_seconds": 12.5}))


def table(lines: list[str], title: str) -> list[list[str]]:
    """The cells of the comparison.md table under the heading that starts with `title`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return [rows[0], *rows[2:]]


def test_compare_table_csv_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "multirun"
    fabricate(sweep, 0.0, 0.2)
    fabricate(sweep, 0.7, 0.4, gap=False)     # a run without a gap model: dashes
    fabricate(sweep, 1.0, 0.1, draft_n=0)     # a collapsed policy: no prompt with a different draft
    (sweep / "unfinished" / ".hydra").mkdir(parents=True)          # a job that wrote no results.json is skipped
    assert main([str(sweep)]) == 0
    out = sweep / "compare"
    lines = (out / "comparison.md").read_text().splitlines()
    head, *deltas = table(lines, "Δ")
    assert head[:4] == ["evaluate.sampling.temperature", "delta pit_vs_policy", "delta self_refine_vs_policy",
                        "delta pit_vs_policy@2"]
    assert "objective" not in head and not any("hydra" in c for c in head)     # not swept / only placement
    assert [row[1] for row in deltas] == ["0.2 [0.1, 0.25]", "0.4 [0.3, 0.45]", "0.1 [0, 0.15]"]
    assert deltas[1][3] == "0.8 [0.7, 0.85]"                                   # Δ at k = 2 with its interval
    head, *gap = table(lines, "Gap model")
    assert head == ["evaluate.sampling.temperature", "gap val_acc_wl_gt_lw", "gap val_gap_oracle_corr_start",
                    "gap val_gap_oracle_corr"]
    assert gap[0][1:] == ["0.8", "0.1", "0.3"] and gap[1][1] == "—"    # first round's start, last round's end
    head, *draft = table(lines, "Draft use")
    assert draft[0][1:] == ["0.05 [-0.05, 0.1]", "0.3", "0.02"] and draft[2][1:] == ["n/a"] * 3
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert rows[1]["delta pit_vs_policy@2"] == "0.8" and rows[1]["delta pit_vs_policy@2 ci_lo"] == "0.7"
    assert rows[1]["elo pit@2"] == "1080" and rows[1]["elo pit@1 ci_hi"] == "1070"
    assert rows[0]["delta_lc pit_vs_policy"] == "0.1" and rows[0]["score pit@1"] == "0.6"
    for name in ("delta_by_run.png", "delta_vs_evaluate_sampling_temperature.png", "elo_vs_iteration.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "wrote" in capsys.readouterr().out


def test_delta_bars_carry_their_intervals_and_elo_is_drawn_per_run(tmp_path: Path) -> None:
    for temperature, delta in ((0.0, 0.2), (0.7, 0.4)):
        fabricate(tmp_path, temperature, delta)
    swept, rows = collect([tmp_path])
    labels = [f"t={row[swept[0]]}" for row in rows]
    fig = delta_by_run(labels, rows, ["delta pit_vs_policy"])
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = bars.errorbar.lines[2][0].get_segments()          # one vertical error bar per run
    assert [(round(s[0][1], 6), round(s[1][1], 6)) for s in segments] == [(0.1, 0.25), (0.3, 0.45)]
    assert ax.get_title() and "Δ" in ax.get_ylabel() and ax.get_xlabel()
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1   # beside the bars
    elo = elo_by_run(labels, rows)
    assert [a.get_title() for a in elo.axes] == labels                           # a panel per run, not one axis
    assert "not comparable across runs" in elo.texts[0].get_text()
    pyplot().close("all")


def test_compare_names_the_problem_when_there_is_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no Hydra job with results.json" in capsys.readouterr().err
