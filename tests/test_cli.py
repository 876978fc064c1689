"""The command line as a user meets it: `--help`, one-line errors, and the package installed without the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST, ROOT

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


def test_installed_package_finds_its_configs_from_an_empty_directory(tmp_path: Path,
                                                                     subprocess_env: dict[str, str]) -> None:
    """A non-editable install (as on a cluster) ships conf/ inside the package: `--cfg job` works from anywhere."""
    source = _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("pit", "conf"):
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
