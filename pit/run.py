"""Hydra entry point: `python -m pit.run [overrides]` runs one job, `python -m pit.run -m ...` a sweep.

Importing this module stays light (Hydra and the config schemas only): the heavy stack (torch, Lightning,
transformers, the pipeline) loads when a job runs, so `--help` and `--cfg job` answer at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

import pit.config  # noqa: F401  (registers the schemas every config file extends)
from pit import interrupt, sweep
from pit.errors import UserError
from pit.interrupt import Interrupted

log = logging.getLogger(__name__)

SCHEMA_GROUPS = "schema/"   # pit.config's structured configs: what config files extend, not choices for a user

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
# Resumed stages restore their data position themselves (pit.checkpointing.StepStream replays the shuffled loader).
warnings.filterwarnings("ignore", ".*dataloader is not resumable.*")
# The frozen PPO reference and the scorers are in eval mode on purpose.
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the pipeline for a composed config, print the stage table, return the results dict."""
    from pit.pipeline import Pipeline  # the heavy stack, imported only when a job runs

    quiet_libraries()
    pipeline = Pipeline(cfg)
    results = pipeline.run()
    if pipeline.rank_zero:   # under DDP every rank runs the job; one table
        print(format_summary(results))
    return results


def quiet_libraries() -> None:
    """Keep each stage's console to our own lines: no Lightning device banner, tips or stop notices, no
    transformers weight-loading bars (warnings and errors still show), and not transformers' "passing in an
    `attention_mask`" notice, which its own `generate` triggers when finished rows decode padding (we always pass
    the mask)."""
    import transformers

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    modeling = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _NoPaddingNotice) for f in modeling.filters):
        modeling.addFilter(_NoPaddingNotice())


class _NoPaddingNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "attention_mask" not in record.getMessage()


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of stages: status, seconds and headline metrics."""
    data = results.get("data", {})
    lines = [f"data: {data.get('source')}  counts={data.get('counts')}  dropped={data.get('dropped')}",
             f"{'stage':<16} {'status':<8} {'seconds':>8}  metrics"]
    for name, record in results["stages"].items():
        metrics = {k: v for k, v in (record.get("metrics") or {}).items() if "@" not in k and not k.startswith("elo_")}
        shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()) if metrics else record.get("reason", "")
        lines.append(f"{name:<16} {record['status']:<8} {record.get('seconds', 0.0):>8.1f}  {shown}")
    if "eval" in results:
        lines.extend(format_evaluation(results["eval"]))
    if results.get("figures"):
        lines.append(f"figures: {results['figures_dir']}/ ({', '.join(Path(f).stem for f in results['figures'])})")
    lines.append(f"wall: {results.get('wall_seconds', 0.0):.1f} s")
    return "\n".join(lines)


def format_evaluation(report: dict[str, Any]) -> list[str]:
    """Per iteration k: Δ (win - lose) of each pair with its 95 % interval, beside it (with an oracle) each method's
    mean score gain over y_0 with its interval and share of perfect answers, mean judge scores where the judge has
    them, and how much the step edited its draft; then draft use, the controls and ELO."""
    if not report["per_iteration"]:
        return []
    first = report["per_iteration"][0]
    pairs = list(first["pairs"])
    methods = [m for m in first if m not in ("iteration", "pairs")]
    scored, oracle = "policy_mean_score" in report, "policy_perfect" in report
    columns: list[tuple[str, Any]] = [("k", lambda e: str(e["iteration"]))]
    columns += [(f"Δ {p} [95% CI]", lambda e, p=p: _delta(e["pairs"][p])) for p in pairs]
    for m in methods:
        if oracle:
            columns += [(f"gain {m} [95% CI]", lambda e, m=m: _gain(e["pairs"][f"{m}_vs_policy"])),
                        (f"perfect {m}", lambda e, m=m: f"{e['pairs'][f'{m}_vs_policy']['perfect_first']:.0%}")]
        if scored:
            columns.append((f"score {m}", lambda e, m=m: f"{e[m]['mean_score']:.3f}"))
        columns += [(f"edit {m}", lambda e, m=m: f"{e[m]['edit_distance']:.2f}"),
                    (f"unchanged {m}", lambda e, m=m: f"{e[m]['unchanged']:.0%}")]
    rows = [[cell(e) for _, cell in columns] for e in report["per_iteration"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, (h, _) in enumerate(columns)]
    y0 = f", score of y_0 {report['policy_mean_score']:.3f}" if scored else ""
    y0 += f", perfect {report['policy_perfect']:.0%}" if oracle else ""
    lines = [f"evaluation: judge {report.get('judge')}, {report['n']} {report.get('split', 'test')} prompts{y0} "
             f"(Δ = win - lose, paired bootstrap over prompts; edit = token edit distance to the draft)",
             "  ".join(h.rjust(w) for (h, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += [f"WARNING: {warning}" for warning in report.get("warnings", [])]   # a judge at chance
    for m, use in report.get("draft_use", {}).items():
        if not use["n"]:
            lines.append(f"draft use {m}: n/a (every prompt's y_0 is the same text as the other prompt's)")
            continue
        gain = f", gain {_gain(use)}" if "mean_gain" in use else ""
        lines.append(f"draft use {m} (k = 1, own y_0 vs another prompt's as the draft): output changed in "
                     f"{use['output_changed']:.0%}, copy gap {use['copy_gap']:+.2f}; Δ {_delta(use)}{gain}")
    for control, result in report.get("controls", {}).items():
        score = report.get("control_mean_score", {}).get(control)
        lines.append(f"{control} (compute-matched RLHF): Δ vs y_0 {_delta(result)}"
                     + (f", gain {_gain(result)}" if "mean_gain" in result else "")
                     + (f", score {score:.3f}" if score is not None else ""))
    if len(methods) == 1 and methods[0] == "pit":
        lines.append("baseline: n/a (baseline=none; Self-Refine needs a model that follows instructions)")
    if "elo" in report:
        ranked = sorted(report["elo"].items(), key=lambda kv: -kv[1])
        cis = report.get("elo_ci", {})
        lines.append("ELO [95% CI]: " + "  ".join(
            f"{v} {r:.0f}" + (f" [{cis[v][0]:.0f}, {cis[v][1]:.0f}]" if v in cis else "") for v, r in ranked))
    return lines


def _delta(result: dict[str, Any]) -> str:
    low, high = result.get("delta_ci", (float("nan"), float("nan")))
    return f"{result['delta']:+.3f} [{low:+.2f}, {high:+.2f}]"


def _gain(result: dict[str, Any]) -> str:
    low, high = result["gain_ci"]
    return f"{result['mean_gain']:+.3f} [{low:+.2f}, {high:+.2f}]"


def config_dir() -> str:
    """The config tree: `pit/conf` in an installed package, else the top-level `conf/` of a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return str(installed if installed.is_dir() else package.parent / "conf")


def user_error(err: Exception) -> Exception | None:
    """The error to show as one line: ours (also inside Hydra's InstantiationException) or a missing value."""
    while isinstance(err, InstantiationException) and isinstance(err.__cause__, Exception):
        err = err.__cause__
    return err if isinstance(err, UserError | MissingMandatoryValue) else None


def log_to_files(message: str) -> None:
    """Record an error in the job's log files (run.log) only: the console shows it once, through sys.exit."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def headline(results: dict[str, Any]) -> float | None:
    """What a Hydra sweeper (Optuna, Ax) optimises: Δ of PIT vs y_0 at k = 1 (else the first pair's); None without
    an evaluation."""
    pairs = results.get("eval", {}).get("pairs", {})
    chosen = pairs.get("pit_vs_policy") or next(iter(pairs.values()), None)
    return chosen["delta"] if chosen else None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """The job; its return value is the headline metric, for sweepers that optimise one. A signal ends it with
    128 + its number (the pipeline has said where it stopped), a user error with one line and 1."""
    interrupt.install()   # again: a launcher's worker process (joblib) runs jobs without `main`
    try:
        return headline(run(cfg))
    except (UserError, InstantiationException, MissingMandatoryValue) as err:
        shown = user_error(err) or err
        log_to_files(f"error: {shown}")
        sweep.record_exit("failed", str(shown))
        sys.exit(f"error: {shown}")
    except Interrupted as stop:
        sweep.record_exit("interrupted", stop.signal_name)
        sys.exit(stop.exit_code)


def main() -> None:
    """Hydra's command line, with pit's signal handling from the first moment (`pit.interrupt`) and, for a multirun,
    the points that did not finish said at the end (`pit.sweep`)."""
    interrupt.install()
    sweep.forget()
    try:
        _hydra_command_line()
    except Interrupted as stop:   # outside a job (Hydra composing the config, between sweep points)
        sweep.report_unfinished()
        sys.stderr.write(f"interrupted by {stop.signal_name} outside a job: nothing was running\n")
        sys.exit(stop.exit_code)
    except BaseException:
        sweep.report_unfinished()
        raise
    if sweep.report_unfinished():
        sys.exit(1)


def _hydra_command_line() -> None:
    """`--help` lists the config groups a user picks from, without the internal `schema/*`."""
    if not {"--help", "-h"} & set(sys.argv[1:]):
        hydra_main()
        return
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            hydra_main()
    finally:
        sys.stdout.write("".join(line for line in shown.getvalue().splitlines(keepends=True)
                                 if not line.startswith(SCHEMA_GROUPS)))


if __name__ == "__main__":
    main()
