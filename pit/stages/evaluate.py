"""The `judge` and `evaluate` stages: the judge's own stage body, then y_0 = M_P(x) on the test prompts, K
improvement steps of PIT and of the baseline, and each method's first step on another prompt's draft (draft use),
judged pairwise; the report goes to results.json (`eval`), the W&B summary and a table of example generations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from pit.artifacts import stage_metrics, write_json_atomic, write_jsonl
from pit.errors import ConfigError
from pit.evaluate.metrics import derangement
from pit.evaluate.report import CONTROL, POLICY, evaluation_report, judge_check
from pit.improve.iterate import Generator, PITStep, Step, iterate
from pit.stages.context import StageContext, reads
from pit.stages.judges import oracle_verdicts
from pit.tracking import Tracker


@reads(lambda c, *, hp: ("tokenizer",))
def build_judge(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """The `judge=` choice fits (a reward model on the judge split, with `hp`) or checks itself, and reports its
    val agreement."""
    ctx.judge.fit(ctx, out, metrics, hp)


@reads(lambda c, *, hp: ("tokenizer", "judge", c.roles.policy, c.roles.improver,
                         "control_rl" if c.has("control_rl") else None))
def build_evaluation(ctx: StageContext, out: Path, metrics: dict[str, float], *, hp: DictConfig) -> None:
    """Generate every chain on `evaluate.split` (test), judge it, and save `report.json` and `generations.jsonl`.

    y_0 and every improvement step use the same decoding (`evaluate.sampling`), so Δ compares methods, not
    temperatures. The compute-matched control (when the objective trains it) answers the same prompts alike. Each
    improving method also runs its first step on a seeded derangement of the drafts (another prompt's y_0), so
    `draft_use` can say whether its output depends on the draft it was given.
    """
    source, rows = ctx.source, ctx.splits[hp.split][: hp.samples]
    if len(rows) < 2:
        raise ConfigError(f"evaluate runs on the {hp.split} split, which has {len(rows)} prompts (needs 2; raise "
                          f"splits.{hp.split})")
    prompts = [e.prompt for e in rows]
    sampling = instantiate(hp.sampling)
    policy = ctx.frozen_model(ctx.roles.policy)
    inputs = [ctx.policy_input(e) for e in rows]
    y0 = ctx.generator(policy, sampling, source.max_prompt_tokens, "y_0")(inputs)
    controls: dict[str, list[str]] = {}
    if ctx.has("control_rl"):
        controls[CONTROL] = ctx.generator(ctx.frozen_model("control_rl"), sampling, source.max_prompt_tokens,
                                          CONTROL)(inputs)
    steps = improvement_steps(ctx, ctx.generator(policy, sampling, source.max_improver_tokens * 2,
                                                 f"{ctx.baseline.name} step"))
    order = derangement(len(prompts), ctx.seed)   # prompt i is also improved from the draft y_0[order[i]]
    # each method's first call (its seed does not depend on evaluate.iterations), then its chain
    deranged = {name: (order, step(prompts, [y0[j] for j in order])) for name, step in steps.items()}
    chains = {name: iterate(step, prompts, y0, hp.iterations) for name, step in steps.items()}
    verdicts = ctx.judge.verdicts(ctx, ctx.artifact("judge"), hp.tie_margin)
    oracle = oracle_verdicts(ctx.oracle).scores if ctx.oracle is not None else None
    report = evaluation_report(prompts, chains, verdicts, hp.length_ratio, hp.bootstrap, hp.elo_bootstrap,
                               ctx.seed, controls, deranged, oracle)
    report.update(judge=ctx.judge.name, split=hp.split, **judge_check(stage_metrics(ctx.artifact("judge"))))
    write_json_atomic(out / "report.json", report)
    write_jsonl(out / "generations.jsonl",
                [{"prompt": p, POLICY: y, **{c: t[i] for c, t in controls.items()},
                  **{m: [c[k][i] for k in range(1, len(c))] for m, c in chains.items()},
                  "other_draft": order[i],   # the index of the row whose y_0 the next columns improved
                  **{f"{m}@1_on_other_draft": texts[i] for m, (_, texts) in deranged.items()}}
                 for i, (p, y) in enumerate(zip(prompts, y0, strict=True))])
    for pair, result in report["pairs"].items():
        metrics[f"delta_{pair}"] = result["delta"]
    for c, result in report["controls"].items():
        metrics[f"delta_{c}_vs_policy"] = result["delta"]
    metrics.update({f"draft_use_{m}": r["delta"] for m, r in report["draft_use"].items() if r["n"]})
    for entry in report["per_iteration"]:
        metrics.update({f"delta_{pair}@{entry['iteration']}": r["delta"] for pair, r in entry["pairs"].items()})
    metrics.update({f"elo_{v}": r for v, r in report.get("elo", {}).items()})


def improvement_steps(ctx: StageContext, policy: Generator) -> dict[str, Step]:
    """The improving methods: PIT (M_PIT reading the improver template) when the objective trains it, and the
    baseline's step with the policy (Self-Refine) when there is one."""
    steps: dict[str, Step] = {}
    if ctx.roles.improver is not None:
        improver = ctx.frozen_model(ctx.roles.improver)
        steps["pit"] = PITStep(ctx.generator(improver, policy.sampling, ctx.source.max_improver_tokens, "pit step"),
                               ctx.source.templates)
    refine = ctx.baseline.step(policy)
    if refine is not None:
        steps[ctx.baseline.name] = refine
    return steps


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
