"""The command line as a user meets it: `--help`, one-line errors, secrets refused, the offline W&B run dir, a
multirun sweep, and the package installed without the source tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST, ROOT, read_records, stage_status, summary_and_config

from pit.modules.preference_losses import GAP_COMPARISONS

HEAVY = ("torch", "lightning", "transformers", "pit.pipeline")


def test_help_lists_the_user_groups_without_loading_the_heavy_stack(tmp_path: Path,
                                                                    subprocess_env: dict[str, str]) -> None:
    """`--help` names every group of conf/ and no internal `schema/*` one, and imports no torch or Lightning."""
    probe = ("import runpy, sys\nsys.argv = ['pit.run', '--help']\n"
             "try:\n    runpy.run_module('pit.run', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=subprocess_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    groups = {line.split(":")[0] for line in lines if line and not line[0].isspace() and ": " in line}
    assert {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()} <= groups
    assert not [line for line in lines if "schema/" in line]
    assert lines[-1] == "heavy: []"


@pytest.mark.slow
def test_error_inside_a_constructor_is_one_line_printed_once(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """A UserError raised in a `_target_` constructor reaches the user unwrapped from Hydra's InstantiationException."""
    fast = [o for o in FAST if not o.startswith("dataset.")]
    done = subprocess.run([sys.executable, "-m", "pit.run", *fast, "dataset.n_required=9",
                           f"hydra.run.dir={tmp_path / 'job'}"], cwd=ROOT, env=subprocess_env, capture_output=True,
                          text=True, timeout=120)
    message = "error: synthetic: need 0 < n_required <= min_length <= max_length"
    assert done.returncode == 1, done.stderr[-2000:]
    assert [line for line in (done.stdout + done.stderr).splitlines() if "n_required" in line] == [message]
    assert done.stderr.rstrip().endswith(message) and "Error in call to target" not in done.stderr
    assert message in (tmp_path / "job" / "run.log").read_text()


@pytest.mark.slow
def test_installed_package_finds_its_configs_from_an_empty_directory(tmp_path: Path,
                                                                     subprocess_env: dict[str, str]) -> None:
    """A non-editable install (as on a cluster) ships conf/ and the HH slice inside the package: `--cfg job` works
    from anywhere, and `+experiment=hh_rlhf_smoke` reads the installed slice."""
    source = _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("pit", "conf", "data"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(site), str(source)], env=subprocess_env,
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "pit" / "conf" / "config.yaml").is_file() and (site / "pit" / "conf" / "dataset").is_dir()
    empty = _mkdir(tmp_path / "empty")
    env = dict(subprocess_env, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import pit.run as r; print(r.__file__); print(r.config_dir())"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == [str(site / "pit" / "run.py"), str(site / "pit" / "conf")], where.stderr
    done = subprocess.run([sys.executable, "-m", "pit.run", "--cfg", "job", "dataset=hh_rlhf"], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "_target_: pit.data.hh_rlhf.HHRLHFSource" in done.stdout and "experiment_name: default" in done.stdout
    smoke = subprocess.run([sys.executable, "-m", "pit.run", "--cfg", "job", "--resolve", "+experiment=hh_rlhf_smoke"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=60)
    shipped = site / "pit" / "data_files" / "hh-rlhf" / "harmless-base-test.jsonl.gz"   # the slice, with its licence
    assert shipped.is_file() and (shipped.parent / "LICENSE").is_file()
    assert f"path: {shipped}" in smoke.stdout, smoke.stderr[-2000:]
    assert not list(empty.iterdir())


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_job_returns_its_headline_for_sweepers() -> None:
    from pit.run import headline

    pairs = {"self_refine_vs_policy": {"delta": 0.1}, "pit_vs_policy": {"delta": 0.4}}
    assert headline({"eval": {"pairs": pairs}}) == 0.4
    assert headline({"eval": {"pairs": {"self_refine_vs_policy": {"delta": 0.1}}}}) == 0.1
    assert headline({"stages": {}}) is None


@pytest.mark.slow
def test_cli_with_wandb_offline_run_dir(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """`python -m pit.run` as a user runs it: a complete offline W&B run dir, config without secrets, a summary."""
    overrides = [o for o in FAST if o not in ("logger=none", "trainer.enable_progress_bar=false")] + [
        "objective=sft_only", f"hydra.run.dir={tmp_path / 'job'}", "logger.project=pit-test"]
    done = subprocess.run([sys.executable, "-m", "pit.run", *overrides], cwd=ROOT, env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sft_pit" in done.stdout and "wall:" in done.stdout
    console = done.stdout + done.stderr
    for noise in ("TPU available", "litlogger", "Loading weights", "Writing model shards", "`Trainer.fit` stopped",
                  "Epoch 0/-2", "strongly recommend passing in an `attention_mask`"):
        assert noise not in console, noise
    job = tmp_path / "job"
    assert (job / "results.json").is_file() and (job / ".hydra" / "config.yaml").is_file()
    runs = list((job / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (run_file,) = runs[0].glob("run-*.wandb")
    kinds = {r.WhichOneof("record_type") for r in read_records(run_file)}
    assert {"run", "config", "history", "summary", "exit"} <= kinds      # complete: wandb sync can upload it
    summary, config = summary_and_config(run_file)
    assert float(summary["stages/sft_pit/metrics/val_loss"]) > 0 and float(summary["wall_seconds"]) > 0
    assert "sft_policy/train_loss" in summary and "data/train" in summary
    assert json.loads(config["experiment_name"]) == "default" and "sft_policy" in config["train"]
    assert list((runs[0] / "files" / "media" / "table" / "sft_pit").glob("samples_*.table.json"))
    assert float(summary["eval/pairs/pit_vs_policy/n"]) > 0 and "eval/elo/pit@1" in summary     # the evaluation
    assert "evaluate/delta_pit_vs_policy" in summary and "evaluate/delta_pit_vs_self_refine@3" in summary
    assert list((runs[0] / "files" / "media" / "table" / "eval").glob("generations_*.table.json"))


@pytest.mark.slow
def test_secret_in_config_is_refused_before_any_logging(tmp_path: Path, cli) -> None:
    overrides = [o for o in FAST if o != "logger=none"] + [f"hydra.run.dir={tmp_path / 'job'}",
                                                           "+judge.api_key=sk-do-not-log"]
    status, stdout, stderr = cli(overrides)
    assert status != 0 and "judge.api_key" in stderr and "environment variable" in stderr
    assert "sk-do-not-log" not in stdout + stderr
    assert not (tmp_path / "job" / "wandb").exists() and not (tmp_path / "job" / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["dataset=jsonl"], "Missing mandatory value: dataset.path"),
    (["dataset=jsonl", "dataset.path=/nonexistent/pairs.jsonl"], "dataset.path=/nonexistent/pairs.jsonl: no such file"),
    (["dataset.n_required=9"], "synthetic: need 0 < n_required <= min_length <= max_length"),
    (["objective=rlhf", "baseline=none"], "evaluate has nothing to compare with y_0"),
    (["objective.curriculum=[dataset,humans]"], "objective.curriculum: unknown sources ['humans']"),
    (["judge=llm", "judge.api_key_env=PIT_UNSET_KEY"], "reads its API key from $PIT_UNSET_KEY, which is not set"),
    (["train.sft_policy.batch_size=100000"],
     "stage sft_policy: 3010 training examples do not fill one batch of 100000"),
])
def test_bad_input_is_one_clear_line(overrides: list[str], message: str, tmp_path: Path, cli) -> None:
    """Each exits 1 with its line (in this process; test_error_inside_a_constructor_... runs one as a process)."""
    fast = [o for o in FAST if not o.startswith("dataset.")]
    status, _, stderr = cli([*fast, *overrides, f"hydra.run.dir={tmp_path}"])
    assert status == 1 and message in stderr, stderr[-2000:]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_gap_loss_multirun_reuses_upstream(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """`-m gap=full,rp_difference`: one job and one W&B run per point, upstream reused."""
    overrides = [o for o in FAST if o != "logger=none"] + [
        "gap=full,rp_difference", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run([sys.executable, "-m", "pit.run", "-m", *overrides], cwd=ROOT, env=subprocess_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(2)]
    assert [stage_status(j)["gap_reward"] for j in jobs] == ["ran", "ran"]
    assert [stage_status(j)["reward"] for j in jobs] == ["ran", "reused"]
    assert [stage_status(j)["sft_policy"] for j in jobs] == ["ran", "reused"]
    assert len({j["stages"]["gap_reward"]["key"] for j in jobs}) == 2
    rp = jobs[1]["stages"]["gap_reward"]["metrics"]
    # R_P differences order every Eq. 2 comparison exactly as R_P orders (y_w, y_l): one accuracy for all five
    assert len({rp[f"val_acc_{a}_gt_{b}"] for a, b in GAP_COMPARISONS}) == 1
    assert rp["val_acc_wl_gt_lw"] == pytest.approx(jobs[1]["stages"]["reward"]["metrics"]["val_acc_w_gt_l"], abs=0.02)
    for i in range(2):
        assert len(list((tmp_path / "sweep" / str(i) / "wandb").glob("offline-run-*"))) == 1
