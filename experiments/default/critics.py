"""Val-only diagnostic of the critics on a protocol's artifacts: within-prompt oracle correlation of R_P's difference,
`residual`, `full` and their mean on M_PIT's samples before RL (its SFT) and after round 2 (the `residual` runs).

    python experiments/default/critics.py multirun/default 0 1 2

Needs each seed's `residual` and `full` pit_control runs (results.json names each stage's cache key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from pit.config import register_configs
from pit.data.splits import split_examples
from pit.evaluate.metrics import within_prompt_correlation
from pit.models.factory import load_model, load_tokenizer
from pit.models.gap import ResidualGap, RewardDifferenceGap, TrainedGap
from pit.models.generate import Sampling, generate_texts
from pit.models.reward import load_reward_model

SAMPLES = 8   # per val prompt, at temperature 1, reference y_l
CONF = Path(__file__).resolve().parents[2] / "conf"


def main(runs: Path, seeds: list[int]) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config")   # the default's dataset, templates and splits, as the protocol ran them
    source = instantiate(cfg.dataset)
    loaded, templates = source.load(), source.templates
    val = split_examples(loaded.examples, **cfg.splits)["val"]
    rows = [e for e in val for _ in range(SAMPLES)]
    prompts, references = [e.prompt for e in rows], [e.rejected for e in rows]
    for seed in seeds:
        stages = {gap: json.loads((runs / f"seed{seed}/{gap}/pit_control/results.json").read_text())["stages"]
                  for gap in ("residual", "full")}
        path = {(gap, stage): runs / f"cache-{seed}" / stage / record["key"]
                for gap, named in stages.items() for stage, record in named.items()}

        reward = load_reward_model(path["residual", "reward"])
        critics = {"R_P difference": RewardDifferenceGap(reward, templates),
                   "residual": ResidualGap(load_reward_model(path["residual", "gap_reward"]), reward, templates),
                   "full": TrainedGap(load_reward_model(path["full", "gap_reward"]), templates)}
        for label, stage in (("M_PIT's SFT", "sft_pit"), ("after round 2", "pit_rl/2_policy")):
            torch.manual_seed(1)
            model, tokenizer = load_model(path["residual", stage]), load_tokenizer(path["residual", "tokenizer"])
            texts = generate_texts(model, tokenizer,
                                   [templates.improver_input(p, r) for p, r in zip(prompts, references, strict=True)],
                                   Sampling(max_new_tokens=source.max_response_tokens, temperature=1.0, batch_size=256),
                                   source.max_improver_tokens, label)
            oracle = [loaded.oracle(p, t) for p, t in zip(prompts, texts, strict=True)]
            scores = {name: critic.score(prompts, texts, references) for name, critic in critics.items()}
            scores["mean of R_P difference and full"] = (scores["R_P difference"] + scores["full"]) / 2
            print(f"seed {seed}, {label}: " + ", ".join(
                f"{name} {within_prompt_correlation(s.tolist(), oracle, SAMPLES):+.3f}" for name, s in scores.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]])
