"""An `objective=` choice (what `objective/*.yaml` instantiates): the stages of the table it runs and M_PIT's
curriculum of PPO rounds, checked when the config is instantiated (unknown stages: by `pipeline.plan_run`).
How R_PIT is made is the `gap=` choice's (`pit.stages.gap`)."""

from __future__ import annotations

from dataclasses import dataclass

from pit.errors import ConfigError

CURRICULUM_SOURCES = ("dataset", "policy")   # where a pit_rl round takes its references y_ref from


@dataclass(frozen=True)
class Objective:
    """An `objective=` choice: which stages of the table run, and M_PIT's curriculum of PPO rounds."""

    name: str
    stages: list[str]
    curriculum: list[str]

    def __post_init__(self) -> None:
        if bad := sorted(set(self.curriculum) - set(CURRICULUM_SOURCES)):
            raise ConfigError(f"objective.curriculum: unknown sources {bad}; choose from {CURRICULUM_SOURCES}")
        if "pit_rl" in self.stages and not self.curriculum:
            raise ConfigError(f"objective '{self.name}' runs pit_rl with an empty curriculum: drop pit_rl from stages")
        if ("control_sft" in self.stages) != ("control_rl" in self.stages):
            raise ConfigError(f"objective '{self.name}': the compute-matched control needs both control_sft and "
                              f"control_rl in stages")

    def check_choices(self, baseline_improves: bool, judge: str, judge_needs_oracle: bool, has_oracle: bool) -> None:
        """Refuse, before any work, what would fail only after training: nothing for `evaluate` to compare with
        y_0, or an oracle judge without an oracle."""
        if "evaluate" in self.stages and self.improver is None and not baseline_improves:
            raise ConfigError(f"evaluate has nothing to compare with y_0: objective '{self.name}' trains no improver "
                              f"(sft_pit or pit_rl) and the baseline has no improvement step (baseline=self_refine)")
        if "judge" in self.stages and judge_needs_oracle and not has_oracle:
            raise ConfigError(f"judge={judge} needs a dataset with an exact oracle (dataset=synthetic); choose "
                              f"judge=auto, reward_model, pretrained_rm or llm")

    @property
    def rounds(self) -> list[tuple[str, str]]:
        """(step name, reference source) of each curriculum round: `pit_rl/1_dataset`, `pit_rl/2_policy`."""
        if "pit_rl" not in self.stages:
            return []
        return [(f"pit_rl/{i}_{source}", source) for i, source in enumerate(self.curriculum, 1)]

    @property
    def policy(self) -> str:
        """M_P: the RLHF policy when the objective trains one, else the SFT policy."""
        return "rlhf_policy" if "rlhf_policy" in self.stages else "sft_policy"

    @property
    def improver_base(self) -> str:
        """Where M_PIT starts and its KL reference: its SFT, or the SFT policy itself (the no-SFT ablation)."""
        return "sft_pit" if "sft_pit" in self.stages else "sft_policy"

    @property
    def improver(self) -> str | None:
        """M_PIT as evaluated: the last curriculum round, else its SFT, else none (the objective trains no improver)."""
        if self.rounds:
            return self.rounds[-1][0]
        return "sft_pit" if "sft_pit" in self.stages else None
