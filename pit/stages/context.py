"""What a stage body may use (`StageContext`), and the contracts of what `Pipeline` instantiates from the config.

A body is `body(ctx, out, metrics, **args)`: it reads the splits, templates, finished artifacts and settings
through `ctx`, trains through `ctx.fitter`, writes its artifact into `out` and its numbers into `metrics`.
It never sees the pipeline, so the stage graph (`pit.pipeline`) and the bodies (`pit.stages`) import one way.

Every body declares the finished stages it opens (`@reads`). The plan checks each declaration against what the
task's key hashes (its upstream tasks and theirs) before any work, and the body's context opens nothing else: what
a stage reads is what its key depends on, so a reused artifact is never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, Any, Protocol

import lightning as L
import torch

from pit.data.schema import Oracle, PreferenceExample, PreferenceSource
from pit.errors import ConfigError
from pit.evaluate.report import Verdicts
from pit.improve.iterate import Generator
from pit.models.factory import for_training, load_model, load_tokenizer, set_generation_cache
from pit.models.generate import Sampling, generate_texts, purpose_seed
from pit.models.reward import load_reward_model
from pit.tracking import Tracker
from pit.training import StageFitter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pit.improve.iterate import Step
    from pit.models.gap import TrainedGap
    from pit.models.reward import RewardModel


class Judge(Protocol):
    """A `judge=` choice: its `judge` stage body (fit with `train.judge` or check it, report val agreement) and its
    verdicts."""

    name: str
    needs_oracle: bool   # only for a dataset with an exact oracle (dataset=synthetic)

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None: ...

    def verdicts(self, ctx: StageContext, directory: Path, tie_margin: float) -> Verdicts: ...


class GapChoice(Protocol):
    """A `gap=` choice (`pit.stages.gap`): what R_PIT's stage reads, whether it trains, how it is fit and saved, and
    how a later stage loads it as a scorer."""

    name: str
    reads: tuple[str, ...]
    trains: bool

    def check(self, hp: Any) -> None: ...

    def fit(self, ctx: StageContext, out: Path, metrics: dict[str, float], hp: Any) -> None: ...

    def load(self, ctx: StageContext, directory: Path) -> TrainedGap: ...


class ModelSpec(Protocol):
    """A `model=` choice: the tokenizer, causal LM and backbone every policy and causal reward model is built from."""

    gradient_checkpointing: bool
    generation_cache: str
    compile_training: bool
    fused_loss: bool
    fused_optimizer: bool
    trust_remote_code: bool

    def tokenizer(self, texts: Iterable[str]) -> PreTrainedTokenizerBase: ...

    def model(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel: ...

    def backbone(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel: ...


class RewardSpec(Protocol):
    """A `reward_model=` choice: an untrained scalar model (R_P, R_PIT, the judge RM), maybe from a stage's weights."""

    init_from: str | None
    needs_policy_tokenizer: bool

    def build(self, tokenizer: PreTrainedTokenizerBase | None, init_dir: Path | None, model_spec: ModelSpec,
              max_response_tokens: int) -> RewardModel: ...


class Adapters(Protocol):
    """A `peft=` choice: what trains (full weights or adapters) and how a trained network is saved (merged)."""

    enabled: bool

    def wrap(self, model: Any, adapter_dir: Path | None = None) -> Any: ...

    def merged(self, model: Any) -> Any: ...


class Baseline(Protocol):
    """A `baseline=` choice: one prompting improvement step built on the policy's generator, or None."""

    name: str
    improves: bool   # whether it has an improvement step (evaluate needs PIT or one)

    def step(self, generate: Generator) -> Step | None: ...


@dataclass(frozen=True)
class Roles:
    """Which stage plays which role, fixed by the objective before anything runs."""

    planned: frozenset[str]      # every task of this run, curriculum rounds by their own names
    policy: str                  # M_P: rlhf_policy when the objective trains it, else sft_policy
    improver_base: str           # where M_PIT starts and its KL reference: sft_pit, or sft_policy (no-SFT ablation)
    improver: str | None         # M_PIT as evaluated: the last curriculum round, sft_pit, or none


@dataclass(frozen=True)
class Choices:
    """What a body's read declaration may depend on besides its arguments: the roles and the config's choices."""

    roles: Roles
    gap: GapChoice
    reward_spec: RewardSpec

    def has(self, stage: str) -> bool:
        return stage in self.roles.planned


Body = Callable[..., None]


def reads(declare: Callable[..., Iterable[str | None]]) -> Callable[[Body], Body]:
    """Declare the finished stages a body opens: `declare(choices, **args)` names them (None: nothing) from the run's
    `Choices` and the body's keyword arguments."""

    def mark(body: Body) -> Body:
        body.reads = declare   # type: ignore[attr-defined]
        return body

    return mark


def declared_reads(body: Body, choices: Choices, args: Mapping[str, Any]) -> frozenset[str]:
    """The stages `body` declares it opens with these arguments."""
    declare = getattr(body, "reads", None)
    if declare is None:
        raise ConfigError(f"stage body {body.__module__}.{body.__qualname__} does not declare what it reads (@reads)")
    return frozenset(filter(None, declare(choices, **args)))


@dataclass(frozen=True)
class StageContext:
    """Everything a stage body reads besides its own `train.<stage>` settings (its `hp` argument): the data, the
    objective's roles, the config's choices, finished artifacts, how to train and the few run-wide settings."""

    source: PreferenceSource
    splits: Mapping[str, list[PreferenceExample]]
    oracle: Oracle | None
    roles: Roles
    model_spec: ModelSpec
    reward_spec: RewardSpec
    adapters: Adapters
    gap: GapChoice
    judge: Judge
    baseline: Baseline
    fitter: StageFitter
    tracker: Tracker
    artifacts: Mapping[str, Path]   # finished stages' directories (filled as the run goes)
    seed: int
    eval_sampling: Sampling         # decoding of every stage's val samples
    log_rollouts_every: int         # PPO iterations between logged rollout tables
    table_rows: int                 # rows of every logged table
    cache_dir: Path                 # the artifact cache's root (the LLM judge keeps its answers there)
    stage: str = ""                 # the task whose body runs with this context
    readable: frozenset[str] = field(default_factory=frozenset)   # what that body declared it reads
    loaded: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)   # what it loaded once

    def has(self, stage: str) -> bool:
        """Whether this run's plan has `stage` (so a later body may read its artifact)."""
        return stage in self.roles.planned

    def scoped(self, stage: str, readable: frozenset[str]) -> StageContext:
        """This context for the body of task `stage`, which declared `readable`: it opens those finished stages and
        no other."""
        return replace(self, stage=stage, readable=readable, loaded={})

    def generator(self, model: PreTrainedModel, sampling: Sampling, max_input_tokens: int, label: str) -> Generator:
        """A sampling pass of this task with the run's tokenizer, seeded by its purpose (`label`)."""
        return Generator(model, self.tokenizer(), sampling, max_input_tokens, label, self.sampling_seed(label))

    def sampling_seed(self, purpose: str, of: str | None = None) -> int:
        """The seed of one sampling pass: (run seed, `of`, purpose), whatever was loaded or drawn before it. `of`
        defaults to this task; a pass that samples another stage's model names that stage (M_P's references are then
        the same in every round and objective), or a role its passes share across tasks."""
        return purpose_seed(self.seed, self.stage if of is None else of, purpose)

    def artifact(self, stage: str) -> Path:
        """The directory of a finished stage the running body declared it reads."""
        if stage not in self.readable:
            raise ConfigError(f"a stage body opened '{stage}', which its @reads declaration does not name (it "
                              f"declares {sorted(self.readable)}): its key would not change with it")
        if stage not in self.artifacts:
            raise ConfigError(f"no artifact of stage '{stage}' in this run: add it to objective.stages")
        return self.artifacts[stage]

    def policy_input(self, example: PreferenceExample) -> str:
        return self.source.templates.policy_input(example.prompt)

    def improver_input_of_rejected(self, example: PreferenceExample) -> str:
        return self.source.templates.improver_input(example.prompt, example.rejected)

    def reseed(self) -> None:
        """Reset every random generator to the run's seed."""
        L.seed_everything(self.seed, workers=True, verbose=False)

    @property
    def device(self) -> torch.device:
        """The device the configured trainer trains on (where evaluation and reference sampling run)."""
        return self.fitter.device

    def _once(self, kind: str, stage: str, load: Callable[[Path], Any]) -> Any:
        """`load(artifact of stage)`, loaded once per task."""
        if (kind, stage) not in self.loaded:
            self.loaded[kind, stage] = load(self.artifact(stage))
        return self.loaded[kind, stage]

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The run's tokenizer (loaded once per task)."""
        return self._once("tokenizer", "tokenizer", load_tokenizer)

    def frozen_model(self, stage: str) -> PreTrainedModel:
        """A finished stage's causal LM on the task's device, to sample from or score with and never to train:
        loaded once per task, however many passes use it. A model that trains is `load_stage_model`'s."""
        return self._once("frozen", stage, lambda _: self.load_stage_model(stage).to(self.device))

    def release(self, stage: str) -> None:
        """Forget `stage`'s frozen model, to free its memory (a later `frozen_model` loads it again)."""
        self.loaded.pop(("frozen", stage), None)

    def reward_model(self, stage: str) -> RewardModel:
        """A finished scalar model (R_P) to score with, loaded once per task."""
        return self._once("reward", stage, load_reward_model)

    def trainable(self, model: Any) -> Any:
        """A model about to train, with the memory options of `model=` (gradient checkpointing)."""
        return for_training(model, self.model_spec.gradient_checkpointing)

    def load_stage_model(self, stage: str) -> PreTrainedModel:
        """A fresh copy of the causal LM a finished stage saved (the policy, M_PIT or a PPO round), to train."""
        return set_generation_cache(load_model(self.artifact(stage), self.model_spec.trust_remote_code),
                                    self.model_spec.generation_cache)

    def new_reward_model(self, spec: RewardSpec, adapters: Adapters) -> RewardModel:
        """An untrained scalar model of `spec` (from `spec.init_from`'s weights), wrapped in `adapters`."""
        init_dir = self.artifact(spec.init_from) if spec.init_from else None
        tokenizer = self.tokenizer() if spec.needs_policy_tokenizer else None
        model = spec.build(tokenizer, init_dir, self.model_spec, self.source.max_response_tokens)
        model.backbone = adapters.wrap(self.trainable(model.backbone))   # the head always trains in full
        return model

    def sample_eval(self, name: str, model: Any, tokenizer: Any, inputs: list[str], rows: list[PreferenceExample],
                    refs: list[str], max_input_tokens: int) -> dict[str, float]:
        """Sample on val inputs; with an oracle, score the samples against the references (chosen or y_ref)."""
        label = f"{name} val samples"
        texts = generate_texts(model, tokenizer, inputs, self.eval_sampling, max_input_tokens, label,
                               seed=self.sampling_seed(label))
        metrics = {"val_sample_words": mean(len(t.split()) for t in texts)}
        scores = [self.oracle(e.prompt, t) for e, t in zip(rows, texts, strict=True)] if self.oracle else None
        if scores:
            ref_scores = [self.oracle(e.prompt, r) for e, r in zip(rows, refs, strict=True)]
            metrics.update(val_oracle=mean(scores), val_oracle_reference=mean(ref_scores),
                           val_better_than_reference=mean(float(s > r)
                                                          for s, r in zip(scores, ref_scores, strict=True)))
        shown = list(zip(inputs, refs, texts, scores or [None] * len(texts), strict=True))[: self.table_rows]
        self.tracker.log_table(f"{name}/samples", ["input", "reference", "sample", "oracle"], [list(r) for r in shown])
        return metrics
