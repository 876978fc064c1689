"""`python -m pit.compare` on a fabricated multirun dir: the table keyed by overrides, the CSV and the plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pit.compare import main


def fabricate(root: Path, temperature: float, delta: float) -> None:
    job = root / f"{temperature}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- evaluate.sampling.temperature={temperature}\n- objective=pit\n- hydra.sweep.dir=/x\n")
    pair = {"win": 0.5 + delta / 2, "tie": 0.5 - delta / 2, "lose": 0.0, "delta": delta, "n": 10,
            "delta_length_controlled": delta / 2, "n_length_controlled": 5}
    report = {"judge": "oracle", "n": 10, "iterations": 2, "policy_mean_score": 0.5,
              "pairs": {"pit_vs_policy": pair, "self_refine_vs_policy": {**pair, "delta": -delta}},
              "per_iteration": [{"iteration": k, "pairs": {}, "pit": {"delta_vs_policy": delta * k, "mean_score": 0.6},
                                 "self_refine": {"delta_vs_policy": -delta, "mean_score": 0.4}} for k in (1, 2)],
              "elo": {"policy": 1000.0, "pit@1": 1050.0, "pit@2": 1080.0, "self_refine@1": 950.0,
                      "self_refine@2": 920.0},
              "lengths": {"policy": 5.0, "pit@1": 6.0}}
    (job / "results.json").write_text(json.dumps({"stages": {}, "eval": report, "wall_seconds": 12.5}))


def test_compare_table_csv_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "multirun"
    for temperature, delta in ((0.0, 0.2), (0.7, 0.4), (1.0, 0.1)):
        fabricate(sweep, temperature, delta)
    (sweep / "unfinished" / ".hydra").mkdir(parents=True)          # a job that wrote no results.json is skipped
    assert main([str(sweep)]) == 0
    out = sweep / "compare"
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| evaluate.sampling.temperature | delta pit_vs_policy |")
    assert "objective" not in table[0] and "hydra" not in table[0]             # not swept / only placement
    assert [line.split(" | ")[1] for line in table[2:]] == ["0.2", "0.4", "0.1"]
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert rows[1]["delta pit_vs_policy@2"] == "0.8" and rows[1]["elo pit@2"] == "1080"
    assert rows[0]["delta_lc pit_vs_policy"] == "0.1" and rows[0]["score pit@1"] == "0.6"
    for name in ("delta_by_run.png", "delta_vs_evaluate_sampling_temperature.png", "elo_vs_iteration.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "wrote" in capsys.readouterr().out


def test_compare_names_the_problem_when_there_is_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no Hydra job with results.json" in capsys.readouterr().err
