"""Structured-config schemas: every composed config is type-checked, and unknown keys are errors, before any work.

Each `conf/<group>/<choice>.yaml` lists `/schema/<group>@_here_: <schema>` first in its defaults, so Hydra merges it
into the dataclass below: a typo (`dataset.n_pair=...`) or a wrong type (`seed=abc`) fails naming the key.

Every fact has one home. A schema names the `_target_` when it maps to exactly one class (a schema shared by several
classes leaves it to the YAML), and holds a default only where every choice of its group shares it; all other values,
and their comments, live in the YAML (MISSING here). `train.<stage>.ppo` is `PPOConfig` (its defaults are the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pit.modules.ppo_config import PPOConfig
from pit.resolvers import RESOLVERS


@dataclass
class TemplatesConfig:
    _target_: str = "pit.data.templates.Templates"
    policy: str = MISSING
    improver: str = MISSING


@dataclass
class DatasetConfig:
    name: str = MISSING
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    max_prompt_tokens: int = MISSING
    max_response_tokens: int = MISSING


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    _target_: str = "pit.data.synthetic.SyntheticSource"
    n_pairs: int = MISSING
    seed: int = MISSING
    n_required: int = MISSING
    n_banned: int = MISSING
    min_length: int = MISSING
    max_length: int = MISSING
    ordered: bool = MISSING
    slip_prob: float = MISSING
    slips: list[str] = MISSING
    filler: str | None = MISSING
    chosen_corruptions: list[int] = MISSING
    rejected_corruptions: list[int] = MISSING


@dataclass
class HHRLHFDatasetConfig(DatasetConfig):
    _target_: str = "pit.data.hh_rlhf.HHRLHFSource"
    path: str | None = MISSING
    hub_name: str = MISSING
    subset: str | None = MISSING
    split: str = MISSING


@dataclass
class TLDRDatasetConfig(DatasetConfig):
    _target_: str = "pit.data.tldr.TLDRSource"
    path: str | None = MISSING
    hub_name: str = MISSING
    hub_config: str = MISSING
    split: str = MISSING


@dataclass
class JsonlDatasetConfig(DatasetConfig):
    _target_: str = "pit.data.jsonl.JsonlSource"
    path: str = MISSING
    prompt_field: str = MISSING
    chosen_field: str = MISSING
    rejected_field: str = MISSING


@dataclass
class ModelConfig:
    """What every `model=` choice has: how it trains (memory, speed) and how it generates (KV cache)."""

    gradient_checkpointing: bool = False   # recompute activations in backward: less memory, ~30 % more compute
    generation_cache: str = "dynamic"      # static: a preallocated KV cache (on GPUs the decode step is a CUDA graph)
    compile_training: bool = False         # SFT's, R_P's and R_PIT's training forward through torch.compile
    fused_loss: bool = False               # SFT: loss via a chunked LM head on labelled positions, no mask if unpadded
    fused_optimizer: bool = False          # fused AdamW in every training stage, gradients clipped by pit (bf16/32)


@dataclass
class TinyModelConfig(ModelConfig):
    _target_: str = "pit.models.factory.TinyCausalLM"
    model_type: str = MISSING
    vocab_size: int = MISSING
    config: dict[str, Any] = MISSING


@dataclass
class PretrainedModelConfig(ModelConfig):
    _target_: str = "pit.models.factory.PretrainedCausalLM"
    name_or_path: str = MISSING
    trust_remote_code: bool = False
    dtype: str = MISSING
    attn_implementation: str | None = MISSING
    revision: str | None = None


@dataclass
class ObjectiveConfig:
    _target_: str = "pit.objective.Objective"
    name: str = MISSING
    stages: list[str] = MISSING
    curriculum: list[str] = MISSING


@dataclass
class GapConfig:
    _target_: str = MISSING
    name: str = MISSING
    comparisons: list[list[str]] | None = MISSING


@dataclass
class CausalRewardConfig:
    _target_: str = "pit.models.reward.CausalRewardSpec"
    init_from: str | None = MISSING
    pooling: str = MISSING
    max_length: int = MISSING


@dataclass
class SequenceClassifierRewardConfig:
    _target_: str = "pit.models.reward.SequenceClassifierRewardSpec"
    name_or_path: str = MISSING
    max_length: int = MISSING
    trust_remote_code: bool = False


@dataclass
class EncoderRewardConfig(SequenceClassifierRewardConfig):
    _target_: str = "pit.models.reward.EncoderRewardSpec"
    pooling: str = MISSING


@dataclass
class NoBaselineConfig:
    _target_: str = "pit.improve.baselines.NoBaseline"
    name: str = MISSING


@dataclass
class SelfRefineConfig:
    _target_: str = "pit.improve.baselines.SelfRefine"
    name: str = MISSING
    rubric: str | None = MISSING
    feedback_instruction: str = MISSING
    refine_instruction: str = MISSING
    max_feedback_tokens: int = MISSING


@dataclass
class OracleJudgeConfig:
    _target_: str = "pit.stages.judges.OracleJudge"
    name: str = MISSING


@dataclass
class RewardModelJudgeConfig:
    _target_: str = MISSING
    name: str = MISSING
    backbone: Any = MISSING


@dataclass
class PretrainedJudgeConfig:
    _target_: str = "pit.stages.judges.PretrainedRewardJudge"
    name: str = MISSING
    backbone: SequenceClassifierRewardConfig = field(default_factory=SequenceClassifierRewardConfig)


@dataclass
class LLMJudgeConfig:
    _target_: str = "pit.stages.judges.LLMJudge"
    name: str = MISSING
    base_url: str = MISSING
    model: str = MISSING
    api_key_env: str | None = MISSING
    rubric: str | None = MISSING
    val_pairs: int = MISSING
    concurrency: int = MISSING
    max_retries: int = MISSING
    timeout_seconds: float = MISSING


@dataclass
class TrainerConfig:
    _target_: str = "lightning.Trainer"
    _partial_: bool = True
    accelerator: str = MISSING
    devices: Any = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 1   # training batches (PPO: iterations) between logged points; 1: whole curves
    enable_progress_bar: bool = True


@dataclass
class WandbLoggerConfig:
    _target_: str = "pit.tracking.WandbTracker"
    project: str = MISSING
    save_dir: str = MISSING
    group: str | None = MISSING
    name: str | None = MISSING
    entity: str | None = MISSING
    tags: list[str] = MISSING
    mode: str = MISSING
    init_timeout: float = MISSING


@dataclass
class CSVLoggerConfig:
    _target_: str = "pit.tracking.CSVTracker"
    save_dir: str = MISSING
    name: str = MISSING


@dataclass
class NoLoggerConfig:
    _target_: str = "pit.tracking.Tracker"


@dataclass
class FullWeightsConfig:
    _target_: str = "pit.models.lora.FullWeights"


@dataclass
class LoRAConfig:
    _target_: str = "pit.models.lora.LoRA"
    r: int = MISSING
    alpha: int = MISSING
    dropout: float = MISSING
    target_modules: list[str] | None = MISSING


@dataclass
class StageTrainingConfig:
    max_steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_steps: int = MISSING
    val_every: int = MISSING


@dataclass
class SFTStageConfig(StageTrainingConfig):
    eval_samples: int = MISSING
    init_from: str | None = MISSING


@dataclass
class PreferenceStageConfig(StageTrainingConfig):
    margin: float = MISSING
    l2: float = MISSING


@dataclass
class PPOStageConfig:
    iterations: int = MISSING
    batch_size: int = MISSING
    temperature: float = MISSING
    eval_samples: int = MISSING
    ppo: PPOConfig = field(default_factory=PPOConfig)


@dataclass
class PITRLStageConfig(PPOStageConfig):
    reference_temperature: float = MISSING
    dataset_references: list[str] = MISSING


@dataclass
class TrainConfig:
    sft_policy: SFTStageConfig = field(default_factory=SFTStageConfig)
    sft_pit: SFTStageConfig = field(default_factory=SFTStageConfig)
    reward: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)
    gap_reward: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)
    judge: PreferenceStageConfig = field(default_factory=PreferenceStageConfig)
    rlhf_policy: PPOStageConfig = field(default_factory=PPOStageConfig)
    pit_rl: PITRLStageConfig = field(default_factory=PITRLStageConfig)


@dataclass
class SamplingConfig:
    _target_: str = "pit.models.generate.Sampling"
    max_new_tokens: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    batch_size: int = MISSING


@dataclass
class EvaluateConfig:
    split: str = MISSING
    samples: int = MISSING
    iterations: int = MISSING
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tie_margin: float = MISSING
    length_ratio: float = MISSING
    bootstrap: int = MISSING
    elo_bootstrap: int = MISSING


@dataclass
class SplitsConfig:
    val: float = MISSING
    test: float = MISSING
    judge: float = MISSING
    salt: str = MISSING


@dataclass
class PathsConfig:
    cache_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class CacheConfig:
    code_version: str | None = MISSING


@dataclass
class CheckpointConfig:
    every: int = MISSING
    max_lost: float = MISSING
    keep_last: int = MISSING


@dataclass
class RootConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    reward_model: Any = MISSING
    objective: Any = MISSING
    gap: Any = MISSING
    baseline: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    judge: Any = MISSING
    peft: Any = MISSING
    experiment_name: str = MISSING
    seed: int = MISSING
    log_rollouts_every: int = MISSING
    table_rows: int = MISSING
    figures: bool = MISSING
    threads: int | None = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"synthetic": SyntheticDatasetConfig, "hh_rlhf": HHRLHFDatasetConfig, "tldr": TLDRDatasetConfig,
                "jsonl": JsonlDatasetConfig},
    "model": {"tiny": TinyModelConfig, "pretrained": PretrainedModelConfig},
    "objective": {"objective": ObjectiveConfig},
    "gap": {"gap": GapConfig},
    "baseline": {"none": NoBaselineConfig, "self_refine": SelfRefineConfig},
    "judge": {"oracle": OracleJudgeConfig, "reward_model": RewardModelJudgeConfig, "pretrained": PretrainedJudgeConfig,
              "llm": LLMJudgeConfig},
    "reward_model": {"causal": CausalRewardConfig, "encoder": EncoderRewardConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"wandb": WandbLoggerConfig, "csv": CSVLoggerConfig, "none": NoLoggerConfig},
    "peft": {"none": FullWeightsConfig, "lora": LoRAConfig},
}


def register_configs() -> None:
    """Store the schemas where the YAML files' defaults lists find them; register our resolvers."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=RootConfig)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_configs()
