"""The `judge` and `evaluate` stages: the judge's own stage body, then y_0 = M_P(x) on the test prompts, K
improvement steps of PIT and of the baseline, judged pairwise; the report goes to results.json (`eval`), the W&B
summary and a table of example generations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from pit.artifacts import write_json_atomic, write_jsonl
from pit.errors import ConfigError
from pit.evaluate.report import CONTROL, POLICY, evaluation_report
from pit.improve.iterate import Generator, PITStep, iterate
from pit.stages.context import StageContext
from pit.tracking import Tracker


def build_judge(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """The `judge=` choice fits (a reward model on the judge split, with `hp`) or checks itself, and reports its
    val agreement."""
    ctx.judge.build(ctx, out, metrics, hp)


def build_evaluation(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """Generate every chain on the test split, judge it, and save `report.json` and `generations.jsonl`.

    y_0 and every improvement step use the same decoding (`evaluate.sampling`), so Δ compares methods, not
    temperatures. The compute-matched control (when the objective trains it) answers the same prompts alike.
    """
    source = ctx.source
    rows = ctx.splits["test"][: hp.samples]
    if not rows:
        raise ConfigError("evaluate runs on the test split, which is empty (raise splits.test)")
    prompts, device, tokenizer = [e.prompt for e in rows], ctx.device, ctx.tokenizer()
    sampling = instantiate(hp.sampling)
    policy = ctx.load_stage_model(ctx.graph.policy).to(device)
    inputs = [ctx.policy_input(e) for e in rows]
    y0 = Generator(policy, tokenizer, sampling, source.max_prompt_tokens, "y_0")(inputs)
    controls: dict[str, list[str]] = {}
    if ctx.has("control_rl"):
        control = ctx.load_stage_model("control_rl").to(device)
        controls[CONTROL] = Generator(control, tokenizer, sampling, source.max_prompt_tokens, CONTROL)(inputs)
    chains: dict[str, list[list[str]]] = {}
    if ctx.graph.improver is not None:
        improver = ctx.load_stage_model(ctx.graph.improver).to(device)
        step = PITStep(Generator(improver, tokenizer, sampling, source.max_improver_tokens, "pit step"),
                       source.templates)
        chains["pit"] = iterate(step, prompts, y0, hp.iterations)
    refine = ctx.baseline.step(Generator(policy, tokenizer, sampling, source.max_improver_tokens * 2,
                                         f"{ctx.baseline.name} step"))
    if refine is not None:
        chains[ctx.baseline.name] = iterate(refine, prompts, y0, hp.iterations)
    if not chains:
        raise ConfigError("evaluate has nothing to compare with y_0: the objective trains no improver (sft_pit or "
                          "pit_rl) and baseline=none")
    verdicts = ctx.judge.verdicts(ctx, ctx.artifact("judge"), hp.tie_margin)
    report = evaluation_report(prompts, chains, verdicts, hp.length_ratio, hp.bootstrap, hp.elo_bootstrap,
                               ctx.seed, controls)
    report["judge"] = ctx.judge.name
    write_json_atomic(out / "report.json", report)
    write_jsonl(out / "generations.jsonl", [{"prompt": p, POLICY: y, **{c: t[i] for c, t in controls.items()},
                                             **{m: [c[k][i] for k in range(1, len(c))] for m, c in chains.items()}}
                                            for i, (p, y) in enumerate(zip(prompts, y0, strict=True))])
    for pair, result in report["pairs"].items():
        metrics[f"delta_{pair}"] = result["delta"]
    for c, result in report["controls"].items():
        metrics[f"delta_{c}_vs_policy"] = result["delta"]
    for entry in report["per_iteration"]:
        metrics.update({f"delta_{pair}@{entry['iteration']}": r["delta"] for pair, r in entry["pairs"].items()})
    metrics.update({f"elo_{v}": r for v, r in report.get("elo", {}).items()})


def publish_evaluation(directory: Path, table_rows: int, tracker: Tracker) -> dict[str, Any]:
    """The saved report (for results.json's `eval`, hence the W&B summary); its first generations as a W&B table."""
    lines = (directory / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[:table_rows]]
    singles = [k for k in rows[0] if isinstance(rows[0][k], str) and k != "prompt"] if rows else []
    methods = [k for k in rows[0] if isinstance(rows[0][k], list)] if rows else []
    columns = ["prompt", *singles, *(f"{m}@{k + 1}" for m in methods for k in range(len(rows[0][m])))]
    tracker.log_table("eval/generations", columns,
                      [[r["prompt"], *(r[s] for s in singles), *(t for m in methods for t in r[m])] for r in rows])
    return json.loads((directory / "report.json").read_text())
