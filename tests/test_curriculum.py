"""M_PIT's curriculum through the pipeline: each round's references, the ablations that share rounds, no-SFT, the
compute-matched control and the residual gap reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST, compose_config, stage_status

from pit.run import format_summary, run


@pytest.mark.slow
def test_curriculum_rounds_read_their_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 1 improves on y_l of every train pair (y_w too when asked); round 2 on saved M_P samples of as many
    train prompts as PPO uses (iterations x batch size)."""
    from pit.pipeline import Pipeline
    from pit.stages import ppo

    seen: dict[str, list] = {}
    real = ppo.train_ppo

    def spy(pipeline, name, hp, init_from, reference, tokenizer, rollouts, *args):
        seen[name] = [init_from, reference, rollouts, pipeline.splits["train"]]
        return real(pipeline, name, hp, init_from, reference, tokenizer, rollouts, *args)

    monkeypatch.setattr(ppo, "train_ppo", spy)
    cfg = compose_config(FAST, tmp_path)
    results = run(cfg)
    templates = Pipeline(cfg).source.templates
    init, ref, rollouts, train = seen["pit_rl/1_dataset"]
    assert (init, ref) == ("sft_pit", "sft_pit")
    assert [r.reference for r in rollouts] == [e.rejected for e in train]
    assert all(r.input_text == templates.improver_input(r.prompt, r.reference) for r in rollouts)
    init, ref, rollouts, train = seen["pit_rl/2_policy"]
    assert (init, ref) == ("pit_rl/1_dataset", "sft_pit")
    key = results["stages"]["pit_rl/2_policy"]["key"]
    saved = [json.loads(line) for line in
             (tmp_path / "cache" / "pit_rl" / "2_policy" / key / "references.jsonl").read_text().splitlines()]
    assert [(r.prompt, r.reference) for r in rollouts] == [(s["prompt"], s["reference"]) for s in saved]
    assert len(saved) == 2 * 8 and {s["prompt"] for s in saved} <= {e.prompt for e in train}
    assert len({s["prompt"] for s in saved}) == 16

    run(compose_config([*FAST, "train.pit_rl.dataset_references=[rejected,chosen]"], tmp_path))
    init, ref, rollouts, train = seen["pit_rl/1_dataset"]
    assert [r.reference for r in rollouts] == [y for e in train for y in (e.rejected, e.chosen)]


@pytest.mark.slow
def test_control_no_sft_and_combined_gaps_through_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """objective=pit_control: a compute-matched RLHF control (SFT for sft_pit's steps, PPO for M_P's and both rounds'
    iterations) judged against y_0 and PIT at every k; objective=pit_no_sft starts the rounds from M_P's SFT;
    gap=residual trains h on top of R_P's difference, gap=ensemble averages R_P's difference with a
    trained R_PIT. Every Δ carries its interval; the critics are calibrated before and after each round."""
    from pit.stages import context, ppo

    seen: dict[str, tuple] = {}
    real, real_generate = ppo.train_ppo, context.generate_texts

    def spy(pipeline, name, hp, init_from, reference, *args):
        seen[name] = (hp.iterations, init_from, reference)
        return real(pipeline, name, hp, init_from, reference, *args)

    def generate_spy(model, tokenizer, inputs, *args, **kwargs):
        texts = real_generate(model, tokenizer, inputs, *args, **kwargs)
        seen[args[-1]] = (inputs, texts)   # by label
        return texts

    monkeypatch.setattr(ppo, "train_ppo", spy)
    monkeypatch.setattr(context, "generate_texts", generate_spy)
    results = run(compose_config([*FAST, "objective=pit_control", "gap=residual", "baseline=none",
                                  "train.rlhf_policy.iterations=3"], tmp_path))
    stages = results["stages"]
    assert [s for s in stages if s.startswith("control")] == ["control_sft", "control_rl"]
    assert seen["control_rl"] == (3 + 2 * 2, "control_sft", "control_sft")   # M_P's + both rounds' iterations
    assert seen["pit_rl/1_dataset"][1:] == ("sft_pit", "sft_pit")
    report = results["eval"]
    assert set(report["pairs"]) == {"pit_vs_policy", "pit_vs_control"}
    assert set(report["controls"]) == {"control"} and "control" in report["elo"]
    for pair in report["pairs"].values():
        low, high = pair["delta_ci"]
        assert low <= pair["delta"] <= high
    critics = {"val_gap_oracle_corr", "val_trained_oracle_corr", "val_rp_oracle_corr"}
    first_round = stages["pit_rl/1_dataset"]["metrics"]
    assert critics | {f"{name}_start" for name in critics} <= set(first_round)
    assert critics <= set(stages["pit_rl/2_policy"]["metrics"])
    assert not [name for name in stages["pit_rl/2_policy"]["metrics"] if name.endswith("_start")]   # = round 1's
    # the val mirror of the test Δ: M_PIT before and after each round on M_P's greedy val samples as drafts
    drafts = ("val_draft_oracle", "val_draft_oracle_reference", "val_draft_better_than_reference")
    assert {*drafts, *(f"{name}_start" for name in drafts)} <= set(first_round)
    assert first_round["val_draft_oracle_reference_start"] == first_round["val_draft_oracle_reference"] == \
        stages["pit_rl/2_policy"]["metrics"]["val_draft_oracle_reference"] == \
        stages["rlhf_policy"]["metrics"]["val_oracle"]
    policy_texts = seen["rlhf_policy val samples"][1]
    for label in ("pit_rl/1_dataset/start/drafts", "pit_rl/1_dataset/drafts", "pit_rl/2_policy/drafts"):
        draft_inputs = seen[f"{label} val samples"][0]
        assert len(draft_inputs) == len(policy_texts)
        assert all(f"| draft {text} |" in line for line, text in zip(draft_inputs, policy_texts, strict=True))
    assert "control (compute-matched RLHF): Δ vs y_0" in format_summary(results)

    no_sft = run(compose_config([*FAST, "objective=pit_no_sft", "gap=residual", "baseline=none"],
                                tmp_path))
    assert "sft_pit" not in no_sft["stages"] and seen["pit_rl/1_dataset"][1:] == ("sft_policy", "sft_policy")
    assert no_sft["stages"]["pit_rl/1_dataset"]["key"] != stages["pit_rl/1_dataset"]["key"]
    assert set(no_sft["eval"]["pairs"]) == {"pit_vs_policy"}

    ensemble = run(compose_config([*FAST, "objective=pit_round1_only", "gap=ensemble",
                                   "baseline=none"], tmp_path))["stages"]
    assert ensemble["sft_pit"]["status"] == "reused" and ensemble["gap_reward"]["status"] == "ran"
    assert {"val_acc_wl_gt_lw", "ensemble_val_acc_wl_gt_lw"} <= set(ensemble["gap_reward"]["metrics"])
    calibrated = ensemble["pit_rl/1_dataset"]["metrics"]
    assert critics | {f"{name}_start" for name in critics} <= set(calibrated)
    # before round 1 every gap loss sees the same seeded samples of M_PIT's SFT, and ensemble's trained part is the
    # R_PIT that full trains (same loss, data and seed): each critic is measured identically across gap losses
    full = run(compose_config([*FAST, "objective=pit_round1_only", "gap=full", "baseline=none"],
                              tmp_path))["stages"]["pit_rl/1_dataset"]["metrics"]
    assert calibrated["val_rp_oracle_corr_start"] == first_round["val_rp_oracle_corr_start"] == \
        full["val_rp_oracle_corr_start"]
    assert calibrated["val_trained_oracle_corr_start"] == full["val_gap_oracle_corr_start"]
    meta = json.loads((tmp_path / "cache" / "gap_reward" / ensemble["gap_reward"]["key"] / "gap_reward.json")
                      .read_text())
    assert meta["gap"] == "ensemble" and list(meta["reads"]) == ["reward"]   # R_P by key and digest, not by path
    assert meta["reads"]["reward"]["key"] == stages["reward"]["key"] and len(meta["reads"]["reward"]["marker"]) == 64


@pytest.mark.slow
def test_curriculum_ablations_multirun_reuse_rounds(tmp_path: Path, cli) -> None:
    """`-m objective=pit,pit_round1_only,pit_round2_only,pit_no_rl`: shared prefixes of the curriculum are reused
    (the multirun in this process; test_cli runs one as a process)."""
    status, _, stderr = cli(["-m", *FAST, "objective=pit,pit_round1_only,pit_round2_only,pit_no_rl",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert status == 0, stderr[-3000:]
    jobs = [stage_status(json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text())) for i in range(4)]
    assert (jobs[0]["pit_rl/1_dataset"], jobs[0]["pit_rl/2_policy"]) == ("ran", "ran")
    assert jobs[1]["pit_rl/1_dataset"] == "reused" and "pit_rl/2_policy" not in jobs[1]
    assert jobs[2]["pit_rl/1_policy"] == "ran" and "pit_rl/1_dataset" not in jobs[2]
    assert not [stage for stage in jobs[3] if stage.startswith("pit_rl")]
    assert {job["gap_reward"] for job in jobs[1:]} == {job["rlhf_policy"] for job in jobs[1:]} == {"reused"}
