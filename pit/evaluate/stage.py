"""The `evaluate` stage: y_0 = M_P(x) on the test prompts, K improvement steps of PIT and of the baseline, judged
pairwise; its report goes to results.json (`eval`), the W&B summary and a table of example generations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.utils import instantiate

from pit.artifacts import write_json_atomic, write_jsonl
from pit.errors import ConfigError
from pit.evaluate.report import POLICY, evaluation_report
from pit.improve.iterate import Generator, PITStep, iterate

if TYPE_CHECKING:
    from pit.pipeline import Pipeline


def build_evaluation(pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
    """Generate every chain on the test split, judge it, and save `report.json` and `generations.jsonl`."""
    hp, source = pipeline.cfg.evaluate, pipeline.source
    rows = pipeline.splits["test"][: hp.samples]
    if not rows:
        raise ConfigError("evaluate runs on the test split, which is empty (raise splits.test)")
    prompts, device, tokenizer = [e.prompt for e in rows], pipeline.device(), pipeline.tokenizer()
    policy = pipeline.load_stage_model(pipeline.policy_stage).to(device)
    initial = Generator(policy, tokenizer, instantiate(pipeline.cfg.eval_sampling), source.max_prompt_tokens)
    y0 = initial([pipeline.policy_input_of(e) for e in rows])
    sampling = instantiate(hp.sampling)
    chains: dict[str, list[list[str]]] = {}
    if "sft_pit" in pipeline.keys:
        improver = pipeline.load_stage_model(pipeline.improver_stage).to(device)
        step = PITStep(Generator(improver, tokenizer, sampling, source.max_improver_tokens), source.templates)
        chains["pit"] = iterate(step, prompts, y0, hp.iterations)
    refine = pipeline.baseline.step(Generator(policy, tokenizer, sampling, source.max_improver_tokens * 2))
    if refine is not None:
        chains[pipeline.baseline.name] = iterate(refine, prompts, y0, hp.iterations)
    if not chains:
        raise ConfigError("evaluate has nothing to compare with y_0: the objective trains no improver (sft_pit) "
                          "and baseline=none")
    verdicts = pipeline.judge.verdicts(pipeline, pipeline.artifact("judge"), hp.tie_margin)
    report = evaluation_report(prompts, chains, verdicts, hp.length_ratio, hp.elo_bootstrap, pipeline.cfg.seed)
    report["judge"] = pipeline.judge.name
    write_json_atomic(out / "report.json", report)
    write_jsonl(out / "generations.jsonl", [{"prompt": p, POLICY: y, **{m: [c[k][i] for k in range(1, len(c))]
                                                                      for m, c in chains.items()}}
                                             for i, (p, y) in enumerate(zip(prompts, y0, strict=True))])
    for pair, result in report["pairs"].items():
        metrics[f"delta_{pair}"] = result["delta"]
    for entry in report["per_iteration"]:
        metrics.update({f"delta_{pair}@{entry['iteration']}": r["delta"] for pair, r in entry["pairs"].items()})
    metrics.update({f"elo_{v}": r for v, r in report.get("elo", {}).items()})


def publish_evaluation(pipeline: Pipeline) -> None:
    """The saved report into results.json (`eval`, hence the W&B summary) and a W&B table of generations."""
    directory = pipeline.artifact("evaluate")
    pipeline.results["eval"] = json.loads((directory / "report.json").read_text())
    lines = (directory / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[: pipeline.cfg.evaluate.table_rows]]
    methods = [k for k in rows[0] if k not in ("prompt", POLICY)] if rows else []
    columns = ["prompt", POLICY, *(f"{m}@{k + 1}" for m in methods for k in range(len(rows[0][m])))]
    pipeline.tracker.log_table("eval/generations", columns,
                               [[r["prompt"], r[POLICY], *(t for m in methods for t in r[m])] for r in rows])
