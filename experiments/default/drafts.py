"""The counterfactual drafts of issue #29: M_PIT (its SFT, and after both curriculum rounds) run greedy on the
evaluated prompts with six different drafts in the improver template, scored by the oracle. An improver that uses its
draft does worse with another prompt's draft than with its own; one that keeps a perfect draft returns it as it is.

    python experiments/default/drafts.py <out.json> <run_dir>:<cache_dir> [<run_dir>:<cache_dir> ...]

Each run dir is a `pit.run` job of the synthetic task (its `.hydra/config.yaml` and `results.json`) whose stages
live in the cache dir; M_P's greedy y_0 is generated again, as evaluate does. Writes every number to `<out.json>`
and prints the table (mean over the runs, each run in brackets). `--table <out.json>` prints it from that file.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pit.data.splits import split_examples
from pit.evaluate.metrics import derangement
from pit.improve.iterate import Generator, PITStep
from pit.models.factory import load_model, load_tokenizer
from pit.models.generate import Sampling

MODELS = {"sft_pit": "M_PIT's SFT", "pit_rl/2_policy": "M_PIT after both rounds"}
DRAFTS = ("its own y_0 (what evaluate does)", "the y_0 of another prompt", "y_0 with its words shuffled",
          "the perfect answer", "y_0 without its leading space", "empty")


def drafts_of(y0: list[str], perfect: list[str], seed: int) -> dict[str, list[str]]:
    """The six drafts of each prompt, written like y_0 (its leading space kept) unless the draft is about that."""
    rng = random.Random(seed)
    space = [" " if y.startswith(" ") else "" for y in y0]

    def shuffled(text: str) -> str:
        words = text.split()
        rng.shuffle(words)
        return " ".join(words)

    kinds = [y0, [y0[j] for j in derangement(len(y0), seed)],
             [s + shuffled(y) for s, y in zip(space, y0, strict=True)],
             [s + p for s, p in zip(space, perfect, strict=True)], [y.lstrip() for y in y0], [""] * len(y0)]
    return dict(zip(DRAFTS, kinds, strict=True))


def one_run(run_dir: Path, cache: Path) -> dict[str, Any]:
    """Every draft kind's mean oracle score, and M_PIT's on it, for each model of one run."""
    cfg = OmegaConf.load(run_dir / ".hydra/config.yaml")
    stages = json.loads((run_dir / "results.json").read_text())["stages"]
    source = instantiate(cfg.dataset)
    loaded = source.load()
    meta = {e.prompt: e.meta for e in loaded.examples}
    rows = split_examples(loaded.examples, **cfg.splits)[cfg.evaluate.get("split", "test")][: cfg.evaluate.samples]
    prompts = [e.prompt for e in rows]
    tokenizer = load_tokenizer(cache / "tokenizer" / stages["tokenizer"]["key"])
    sampling = Sampling(cfg.evaluate.sampling.max_new_tokens, 0.0, 1.0, cfg.evaluate.sampling.batch_size)
    policy_stage = "rlhf_policy" if "rlhf_policy" in stages else "sft_policy"   # M_P, as evaluate loads it
    policy = load_model(cache / policy_stage / stages[policy_stage]["key"]).eval()
    with torch.no_grad():
        y0 = Generator(policy, tokenizer, sampling, source.max_prompt_tokens, "y_0")(
            [source.templates.policy_input(p) for p in prompts])
    drafts = drafts_of(y0, [meta[p]["perfect"] for p in prompts], int(cfg.seed))
    found: dict[str, Any] = {"run": str(run_dir), "seed": int(cfg.seed), "n": len(prompts),
                             "draft_score": {k: mean(loaded.oracle(p, d) for p, d in zip(prompts, ds, strict=True))
                                             for k, ds in drafts.items()}}
    for stage, label in MODELS.items():
        model = load_model(cache / stage / stages[stage]["key"]).eval()
        step = PITStep(Generator(model, tokenizer, sampling, source.max_improver_tokens, label), source.templates)
        with torch.no_grad():
            outputs = {k: step(prompts, ds) for k, ds in drafts.items()}
        perfect = drafts["the perfect answer"]
        found[stage] = {"output_score": {k: mean(loaded.oracle(p, o) for p, o in zip(prompts, outs, strict=True))
                                         for k, outs in outputs.items()},
                        "perfect_unchanged": sum(o.strip() == d.strip() for o, d in
                                            zip(outputs["the perfect answer"], perfect, strict=True))}
    return found


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: each draft kind, its score, and each model's score on it (mean over runs, then per run)."""
    n = runs[0]["n"]
    head = "| draft given to M_PIT | the draft's own score | " + " | ".join(MODELS.values()) + " |"
    lines = [head, "|---" * (2 + len(MODELS)) + "|"]
    for kind in DRAFTS:
        cells = [f"{mean(r['draft_score'][kind] for r in runs):.3f}"]
        for stage in MODELS:
            scores = [r[stage]["output_score"][kind] for r in runs]
            cell = f"{mean(scores):.3f} (" + " / ".join(f"{s:.3f}" for s in scores) + ")"
            if kind == "the perfect answer":
                unchanged = " / ".join(str(r[stage]["perfect_unchanged"]) for r in runs)
                cell += f", returned unchanged {unchanged} of {n}"
            cells.append(cell)
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    seeds = ", ".join(str(r["seed"]) for r in runs)
    return "\n".join(lines) + f"\n\nmean over seeds {seeds} (each seed in brackets); {n} test prompts, greedy, oracle."


def main(argv: list[str]) -> None:
    if argv[0] == "--table":
        print(table(json.loads(Path(argv[1]).read_text())["runs"]))
        return
    out, pairs = Path(argv[0]), [a.split(":", 1) for a in argv[1:]]
    runs = [one_run(Path(run), Path(cache)) for run, cache in pairs]
    out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
