"""What every benchmark report shares: the machine, the embedded default timed cold, and the markdown/PNG writer."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def time_default_pipeline(*overrides: str) -> dict[str, Any]:
    """`python -m pit.run` cold (fresh cache), no logger, plus `overrides`: wall time and per-stage seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PIT_CACHE_DIR=f"{tmp}/cache", WANDB_MODE="disabled")
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pit.run", "logger=none", f"hydra.run.dir={tmp}/run",
                              "trainer.enable_progress_bar=false", *overrides], env=env, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"pit.run {' '.join(overrides)} exited {run.returncode}:\n{run.stderr[-4000:]}")
        wall = time.perf_counter() - start
        results = json.loads(Path(f"{tmp}/run/results.json").read_text())
    return {"wall_seconds": wall, "stages": {k: v["seconds"] for k, v in results["stages"].items()}}


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({torch.cuda.device_count()} GPU), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def table_rows(workloads: list[dict[str, Any]]) -> list[str]:
    """Markdown rows `| workload | ours | reference | ratio |` of each compared workload (the ratio's range over
    interleaved rounds where there were several), with MFU, step time and RL phases."""
    lines = []
    for r in (r for r in workloads if "ratio" in r):
        spread = f" ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})" if len(r.get("rounds", ())) > 1 else ""
        lines.append(f"| {r['workload']} | {r['ours']:,.1f} {r['unit']} | {r['reference']:,.1f} {r['unit']} | "
                     f"{r['ratio']:.2f}{spread} |")
        if "mfu" in r:
            lines.append(f"| {r['workload']}: model FLOPs utilisation (of {r['peak_tflops']} TFLOP/s) | "
                         f"{r['mfu']:.1%} | {r['reference_mfu']:.1%} | |")
        if "ms_per_step_ours" in r:
            lines.append(f"| {r['workload']}: ms per decode step | {r['ms_per_step_ours']:.1f} | "
                         f"{r['ms_per_step_reference']:.1f} | |")
        phases = r.get("phases", {})
        if phases.get("ours") and phases.get("reference"):
            ours, theirs = phases["ours"], phases["reference"]
            lines += [f"| {r['workload']}: {k} s/iteration | {ours[k]:.3f} | {theirs[k]:.3f} | "
                      f"{theirs[k] / ours[k] if ours[k] > 0 else float('nan'):.2f} |" for k in ours]
    return lines


def write(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    tag = f"{results['size']}-{results['device']}-{results['precision']}"
    (out / f"bench-{tag}.json").write_text(json.dumps(results, indent=2))
    lines = [f"Machine: {results['machine']}; model `{results['size']}` ({results['parameters'] / 1e6:.2f} M "
             f"parameters), {results['precision']}, reference = {results['reference']}.", "",
             "| workload | ours | reference | ratio ours/reference |", "|---|---|---|---|"]
    lines += table_rows(results["workloads"])
    if "default_pipeline" in results:
        d = results["default_pipeline"]
        lines += ["", f"Embedded default (`python -m pit.run`, cold cache): {d['wall_seconds']:.0f} s; per stage: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in d["stages"].items())]
    (out / f"bench-{tag}.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["workload"] for r in results["workloads"]]
    ax.barh(names, [r["ratio"] for r in results["workloads"]])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("throughput ratio ours / reference (>1: we are faster)")
    ax.set_title(f"{results['size']}, {results['device']}, {results['precision']}")
    fig.tight_layout()
    fig.savefig(out / f"bench-{tag}.png", dpi=120)
    print("\n".join(lines))


def write_gpu(results: dict[str, Any], out: Path) -> Path:
    """`gpu-<card>.json` (everything), `.md` (tables, targets, profiles) and `.png` (ratios against the reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu-{results['card']}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    rows = results["workloads"]
    lines = [f"Machine: {results['machine']}; scale `{results['scale']}`; reference = {results['reference']}; "
             f"{results['seconds']:.0f} s in all.", "",
             "| workload | ours | reference | ratio ours/reference |", "|---|---|---|---|"]
    lines += table_rows(rows)
    for r in rows:
        if r["workload"] == "PPO memory":
            lines += ["", f"PPO iteration peak memory, Llama-style ~1 B config, batch {r['batch']}: full fine-tuning "
                      f"{r['full_gib']:.1f} GiB, LoRA {r['lora_gib']:.1f} GiB (ratio {r['lora_over_full']:.2f})."]
        if r["workload"] == "PPO losses vs float64":
            lines += ["", f"PPO on a fixed batch, ours ({results['precision']}) vs float64: log-probs relative error "
                      f"{r['logp_relative_error']:.1e}, clipped policy loss error {r['loss_relative_error']:.1e} "
                      "of mean |advantage|."]
        if r["workload"].startswith("+experiment=hh_rlhf"):
            lines += ["", f"`+experiment=hh_rlhf` (GPT-NeoX at {r['parameters'] / 1e6:.3g} M parameters, vocabulary "
                      f"{r['vocab']}, random weights), every stage a few steps: {r['wall_seconds']:.0f} s, peak "
                      f"{r['peak_gib']:.1f} GiB; projected full config {r['projected_full_seconds'] / 3600:.1f} h "
                      "(rough: each stage's training time times its full step count over this run's, so setup and "
                      "one validation are scaled up too; end-of-stage sampling is not scaled; random weights never "
                      "stop early). "
                      "Per stage (seconds, training seconds, x work of the full config): "
                      + ", ".join(f"{k} {v['seconds']:.0f}/{v['train_seconds']:.0f} (x{v['scale_up']:g})"
                                  for k, v in r["stages"].items())]
        if r["workload"] == "default pipeline":
            lines += ["", f"Embedded default (`python -m pit.run {' '.join(results['pipeline_overrides'])}`, cold): "
                      f"{r['wall_seconds']:.0f} s; per stage: "
                      + ", ".join(f"{k} {v:.0f} s" for k, v in r["stages"].items())]
    lines += ["", "| target (issues #20, #30) | measure | bound | ours | met |", "|---|---|---|---|---|"]
    for v in results["targets"]:
        value = "not measured" if v["value"] is None else f"{v['value']:.3g}"
        met = {None: "n/a", True: "yes", False: "**no**"}[v["met"]]
        lines.append(f"| {v['workload']} | {v['measure']} | {v['target']} | {value} | {met} |")
    for r in rows:
        if "table" in r:
            lines += ["", f"### {r['workload']} (top entries)", "```", r["table"].rstrip(), "```"]
    for name, error in results["errors"].items():
        lines += ["", f"### {name} failed", "```", error.rstrip()[-3000:], "```"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    ratios = [r for r in rows if "ratio" in r]
    if ratios:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(ratios) + 1.5))
        ax.barh([r["workload"] for r in ratios], [r["ratio"] for r in ratios])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("throughput ratio ours / reference (log; > 1: we are faster)")
        ax.set_title(f"{results['machine'].split(' (')[0]}, {results['precision']}")
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=120)
        plt.close(fig)
    return stem.with_suffix(".md")
