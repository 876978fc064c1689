"""The PIT stage graph (docs/design.md §2), read top to bottom: data, then each stage the objective asks for.

Every stage is content-addressed (`pit.artifacts`): a finished stage with the same key is reused, a
stage killed half-way leaves nothing under its final name and runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pit.artifacts import ArtifactStore, cache_key, source_digest, write_json_atomic
from pit.data.encode import collate_sft, encode_pairs
from pit.data.schema import DataError, LoadedData, PreferenceExample, PreferenceSource
from pit.data.splits import split_examples
from pit.distributed import barrier, is_rank_zero, single_process
from pit.errors import ConfigError
from pit.evaluate.figures import CURVES, publish_figures
from pit.evaluate.stage import build_evaluation, publish_evaluation
from pit.models.factory import for_training, load_model, load_tokenizer, save_model, set_generation_cache
from pit.models.generate import generate_texts
from pit.models.lora import FullWeights
from pit.models.reward import RewardModel
from pit.modules.preference_losses import GAP_LOSSES
from pit.modules.sft import SFTModule
from pit.rl_stages import build_pit_round, build_rlhf_policy
from pit.supervised_stages import build_gap_difference, build_gap_reward, build_reward
from pit.tracking import TABLE_ROWS, RunLedger, Tracker, find_secrets, run_identity
from pit.training import StageFitter

log = logging.getLogger(__name__)

NO_FIT_STAGES = ("tokenizer", "evaluate")   # built by rank zero alone under DDP (the others wait for them)
STAGE_ORDER = ("sft_policy", "reward", "rlhf_policy", "sft_pit", "gap_reward", "pit_rl", "control_sft", "control_rl",
               "judge", "evaluate")
CURRICULUM_SOURCES = ("dataset", "policy")   # where a pit_rl round takes its references y_ref from
GAP_KINDS = (*GAP_LOSSES, "residual", "rp_difference")   # objective.gap_loss: trained (Eq. 2 or one term), R_P + h, R_P
TRAINER_KEY_FIELDS = ("accelerator", "devices", "strategy", "precision", "gradient_clip_val")

Builder = Callable[[Path, dict[str, float]], None]
StagePlan = tuple[dict[str, Any], tuple[str, ...], Builder]


@dataclass(frozen=True)
class Objective:
    """An `objective=` choice: which stages of the pipeline to run."""

    name: str
    stages: list[str]
    gap_loss: str = "residual"
    curriculum: list[str] = field(default_factory=lambda: list(CURRICULUM_SOURCES))

    def __post_init__(self) -> None:
        if self.gap_loss not in GAP_KINDS:
            raise ConfigError(f"objective.gap_loss={self.gap_loss!r}: choose one of {list(GAP_KINDS)}")
        unknown = sorted(set(self.stages) - set(STAGE_ORDER))
        if unknown:
            raise ConfigError(f"objective '{self.name}': unknown stages {unknown}; known: {list(STAGE_ORDER)}")
        if bad := sorted(set(self.curriculum) - set(CURRICULUM_SOURCES)):
            raise ConfigError(f"objective.curriculum: unknown sources {bad}; choose from {CURRICULUM_SOURCES}")
        if "pit_rl" in self.stages and not self.curriculum:
            raise ConfigError(f"objective '{self.name}' runs pit_rl with an empty curriculum: drop pit_rl from stages")
        if ("control_sft" in self.stages) != ("control_rl" in self.stages):
            raise ConfigError(f"objective '{self.name}': the compute-matched control needs both control_sft and "
                              f"control_rl in stages")


class Pipeline:
    """Runs one Hydra job's stages against the shared artifact cache and records everything in results.json."""

    def __init__(self, cfg: DictConfig):
        config = OmegaConf.to_container(cfg, resolve=True)
        if secrets := find_secrets(config):
            raise ConfigError(f"config holds secrets at {secrets}: pass keys through environment variables (the config "
                             f"names the variable, e.g. `api_key_env: OPENAI_API_KEY`). Hydra has already written this "
                             f"config under {cfg.paths.output_dir}/.hydra: delete it and rotate the key.")
        self.cfg = cfg
        self.output_dir = Path(cfg.paths.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.store = ArtifactStore(cfg.paths.cache_dir, locking=single_process(cfg.trainer))
        self.source: PreferenceSource = instantiate(cfg.dataset)
        self.model_spec = instantiate(cfg.model)
        self.objective: Objective = instantiate(cfg.objective, _convert_="all")
        self.reward_spec = instantiate(cfg.reward_model)
        self.judge = instantiate(cfg.judge)
        self.baseline = instantiate(cfg.baseline)
        self.adapters: FullWeights = instantiate(cfg.peft, _convert_="all")
        self.results: dict[str, Any] = {"stages": {}}
        self.keys: dict[str, str] = {}
        self.config_keys: dict[str, str] = {}   # the same keys without the code version: to say why a stage reran
        self.code_version = cfg.cache.code_version or source_digest()
        self.improver_stage = "sft_pit"   # M_PIT: the last curriculum round once pit_rl has run
        self.rank_zero = is_rank_zero()      # under DDP only rank zero publishes artifacts, results and W&B
        self.ledger = RunLedger(self.store.root / "runs", run_identity(config, str(self.output_dir)),
                                write=self.rank_zero)
        if self.ledger.resumed and self.rank_zero:
            log.info("continuing the interrupted run %s (tracker run id %s)", self.ledger.path.stem, self.ledger.run_id)
        self.tracker: Tracker = (instantiate(cfg.logger, run_id=self.ledger.run_id) if self.rank_zero
                                 else Tracker())
        self.fitter = StageFitter(cfg.trainer, cfg.checkpoint, cfg.seed, self.tracker.lightning_logger,
                                  self.output_dir / "lightning")
        self.tracker.log_config(config)

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            self._load_data()
            self._stage("tokenizer", {"model": self._sub("model")}, (), self._build_tokenizer)
            plans = {"sft_policy": partial(self._plan_sft, "sft_policy", self.policy_input_of,
                                           self.source.max_prompt_tokens),
                     "sft_pit": partial(self._plan_sft, "sft_pit", self.improver_input_of_rejected,
                                        self.source.max_improver_tokens),
                     "reward": self._plan_reward, "rlhf_policy": self._plan_rlhf_policy,
                     "gap_reward": self._plan_gap_reward, "control_sft": self._plan_control_sft,
                     "control_rl": self._plan_control_rl, "judge": self._plan_judge,
                     "evaluate": self._plan_evaluate}
            for name in (s for s in STAGE_ORDER if s in self.objective.stages):
                if name == "pit_rl":
                    self._run_curriculum()
                else:
                    self._stage(name, *plans[name]())
            if "evaluate" in self.keys:
                publish_evaluation(self)
            if self.rank_zero:
                publish_figures(self)
            self.results["wall_seconds"] = round(time.perf_counter() - start, 2)
            self._write_results()
            self.tracker.log_summary({k: v for k, v in self.results.items() if k != "data"})
            if self.rank_zero:
                self.ledger.finish()
            return self.results
        finally:
            self.tracker.finish()
            self.ledger.release()

    # ---- what each stage depends on: (its config subtree, its upstream stages, how to build it) -----------------
    def _common(self, trains_with_peft: bool = True) -> dict[str, Any]:
        peft = {"peft": self._sub("peft")} if trains_with_peft else {}
        return {"seed": self.cfg.seed, "templates": self._sub("dataset.templates"), **peft,
                "trainer": {k: self.cfg.trainer[k] for k in TRAINER_KEY_FIELDS}}

    def _after(self, stage: str, init_from: str | None) -> tuple[str, ...]:
        """Upstream stages: the tokenizer, and the stage whose weights this one starts from (which must have run)."""
        if init_from is not None and init_from not in self.keys:
            raise ConfigError(f"{stage} starts from '{init_from}' (init_from), which has not run before it; add it to "
                              f"objective.stages or set init_from=null")
        return ("tokenizer", *filter(None, [init_from]))

    def _plan_sft(self, name: str, make_input: Callable[[PreferenceExample], str], max_input_tokens: int,
                  hp: DictConfig | None = None) -> StagePlan:
        hp = self.cfg.train[name] if hp is None else hp
        config = {**self._common(), "model": self._sub("model"), "train": OmegaConf.to_container(hp, resolve=True)}
        build = partial(self._build_sft, name, hp, make_input, max_input_tokens)
        return config, self._after(name, hp.init_from), build

    def _plan_reward(self) -> StagePlan:
        return ({**self._common(), "reward_model": self._sub("reward_model"), "train": self._sub("train.reward")},
                self._after("reward", self.reward_spec.init_from), partial(build_reward, self))

    def _plan_rlhf_policy(self) -> StagePlan:
        missing = [s for s in ("sft_policy", "reward") if s not in self.keys]
        if missing:
            raise ConfigError(f"rlhf_policy optimises the SFT policy against R_P: add {missing} to objective.stages")
        config = {**self._common(), "train": self._sub("train.rlhf_policy")}
        hp = self.cfg.train.rlhf_policy
        return config, ("sft_policy", "reward"), partial(build_rlhf_policy, self, "rlhf_policy", hp, "sft_policy")

    def _plan_control_sft(self) -> StagePlan:
        """The compute-matched control, part 1: M_P's SFT continued for M_PIT's SFT budget (`sft_pit.max_steps`)."""
        hp = OmegaConf.merge(self.cfg.train.sft_policy,
                             {"max_steps": self.cfg.train.sft_pit.max_steps, "init_from": "sft_policy"})
        return self._plan_sft("control_sft", self.policy_input_of, self.source.max_prompt_tokens, hp)

    def _plan_control_rl(self) -> StagePlan:
        """Part 2: plain RLHF against R_P for M_P's and every curriculum round's PPO iterations together."""
        if "reward" not in self.keys:
            raise ConfigError("control_rl optimises the control policy against R_P: add reward to objective.stages")
        rounds = len(self.objective.curriculum) if "pit_rl" in self.objective.stages else 0
        rlhf = self.cfg.train.rlhf_policy.iterations if "rlhf_policy" in self.objective.stages else 0
        iterations = rlhf + rounds * self.cfg.train.pit_rl.iterations
        hp = OmegaConf.merge(self.cfg.train.rlhf_policy, {"iterations": iterations})
        config = {**self._common(), "train": OmegaConf.to_container(hp, resolve=True)}
        return config, ("control_sft", "reward"), partial(build_rlhf_policy, self, "control_rl", hp, "control_sft")

    def _run_curriculum(self) -> None:
        """`pit_rl`: one cached stage per round (`pit_rl/1_dataset`, `pit_rl/2_policy`), each starting from the last.

        A round's key holds its position, its reference source and the rounds before it, so an ablation that
        shares a prefix of the curriculum (round 1 only) reuses those rounds.
        """
        if "gap_reward" not in self.keys:
            raise ConfigError("pit_rl optimises M_PIT against R_PIT: add gap_reward to objective.stages")
        previous = self.improver_base
        for index, source in enumerate(self.objective.curriculum, 1):
            name = f"pit_rl/{index}_{source}"
            config = {**self._common(), "train": self._sub("train.pit_rl"), "source": source}
            policy = (self.policy_stage,) if source == "policy" else ()
            rp = ("reward",) if "reward" in self.keys else ()   # R_P's oracle correlation is reported beside R_PIT's
            upstream = tuple(dict.fromkeys((self.improver_base, "gap_reward", previous, *policy, *rp)))
            self._stage(name, config, upstream, partial(build_pit_round, self, name, source, previous))
            previous = name
        self.improver_stage = previous

    @property
    def improver_base(self) -> str:
        """Where M_PIT starts and its KL reference: its SFT, or the SFT policy itself (the no-SFT ablation)."""
        return "sft_pit" if "sft_pit" in self.objective.stages else "sft_policy"

    @property
    def policy_stage(self) -> str:
        """M_P: the RLHF policy when the objective trains one, else the SFT policy."""
        return "rlhf_policy" if "rlhf_policy" in self.keys else "sft_policy"

    def _plan_gap_reward(self) -> StagePlan:
        if self.objective.gap_loss == "rp_difference":
            if "reward" not in self.keys:
                raise ConfigError("objective.gap_loss=rp_difference computes gaps with R_P: the reward stage must run")
            return {**self._common(), "gap_loss": "rp_difference"}, ("reward",), partial(build_gap_difference, self)
        config = {**self._common(), "reward_model": self._sub("reward_model"), "train": self._sub("train.gap_reward"),
                  "gap_loss": self.objective.gap_loss}
        upstream = self._after("gap_reward", self.reward_spec.init_from)
        if self.objective.gap_loss == "residual":
            if "reward" not in self.keys:
                raise ConfigError("objective.gap_loss=residual adds a trained term to R_P's difference: the reward "
                                  "stage must run")
            upstream = (*upstream, "reward")
        return config, upstream, partial(build_gap_reward, self)

    def _plan_judge(self) -> StagePlan:
        # the judge trains full weights whatever `peft` says: runs that differ in peft are judged by one judge
        config = {**self._common(trains_with_peft=False), "judge": self._sub("judge"),
                  "train": self._sub("train.judge")}
        return config, ("tokenizer",), partial(self.judge.build, self)

    def _plan_evaluate(self) -> StagePlan:
        if "judge" not in self.keys:
            raise ConfigError("evaluate needs the judge stage: add judge to objective.stages")
        improver = (self.improver_stage,) if self.improver_stage in self.keys else ()
        control = ("control_rl",) if "control_rl" in self.keys else ()
        config = {**self._common(), "evaluate": self._sub("evaluate"), "baseline": self._sub("baseline")}
        return (config, ("tokenizer", "judge", self.policy_stage, *improver, *control),
                partial(build_evaluation, self))

    # ---- data ------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        loaded: LoadedData = self.source.load()
        self.oracle = loaded.oracle
        self.splits = split_examples(loaded.examples, **self._sub("splits"))
        counts = {name: len(rows) for name, rows in self.splits.items()}
        self.results["data"] = {"source": loaded.source, "counts": counts, "dropped": dict(loaded.dropped)}
        data = {"dataset": self._sub("dataset"), "splits": self._sub("splits")}
        self.keys["data"] = self.config_keys["data"] = cache_key("data", data, {})
        self.tracker.log_metrics({f"data/{k}": v for k, v in counts.items()})
        dropped = ", ".join(f"{k}={v}" for k, v in loaded.dropped.items()) or "none"
        log.info("data %s: %s; dropped: %s", loaded.source, counts, dropped)
        if not self.splits["train"] or not self.splits["val"]:
            raise DataError(loaded.source, f"the train and val splits must not be empty (counts {counts})")

    def policy_input_of(self, example: PreferenceExample) -> str:
        return self.source.templates.policy_input(example.prompt)

    def improver_input_of_rejected(self, example: PreferenceExample) -> str:
        return self.source.templates.improver_input(example.prompt, example.rejected)

    # ---- the cached-stage mechanism ----------------------------------------------------------------------------
    def _stage(self, name: str, config: dict[str, Any], upstream: tuple[str, ...], build: Builder) -> None:
        """Reuse the artifact of (name, config, upstream keys, code) when complete, else build it atomically under
        the (stage, key) lock; a job that waited for that lock reuses what the holder built."""
        upstream = ("data", *upstream)
        key = cache_key(name, config, {u: self.keys[u] for u in upstream}, code=self.code_version)
        self.keys[name] = key
        self.config_keys[name] = cache_key(name, config, {u: self.config_keys[u] for u in upstream})
        start = time.perf_counter()
        alone = name in NO_FIT_STAGES   # under DDP rank zero builds it alone, the other ranks wait, then read it
        if alone and not self.rank_zero:
            log.info("stage %s: waiting for rank zero to build it", name)
            self.store.wait_for(name, key)
        with self.store.lock(name, key):
            if self.store.is_complete(name, key):
                metrics, status = self.store.metrics(name, key), "reused"
            else:
                because = self.store.rerun_reason(name, self.config_keys[name], self.code_version)
                log.info("stage %s: running (key %s)%s", name, key, f"; {because}" if because else "")
                self.fitter.start(name, self.store.checkpoints(name, key))
                self.seed()   # a stage never depends on what ran before it in this process
                provenance = {"config_key": self.config_keys[name], "code": self.code_version}
                with self.store.write(name, key, self.rank_zero, provenance) as (out, metrics):
                    self.fitter.record_curves(out / CURVES)
                    build(out, metrics)
                if not alone:
                    barrier()   # every rank built it (its fit needs them all); rank zero's copy is in place now
                status = "ran" if self.fitter.resumed_from is None else "resumed"
        record = {"status": status, "seconds": round(time.perf_counter() - start, 2), "key": key, "metrics": metrics}
        if status == "resumed":
            record["resumed_from_batch"] = self.fitter.resumed_from
        self.tracker.log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
        self._record(name, record)

    def _record(self, name: str, record: dict[str, Any]) -> None:
        self.results["stages"][name] = record
        log.info("stage %s: %s", name, {k: v for k, v in record.items() if k != "metrics"})
        self._write_results()

    def _write_results(self) -> None:
        if self.rank_zero:
            write_json_atomic(self.output_dir / "results.json", self.results)

    def _sub(self, path: str) -> Any:
        return OmegaConf.to_container(OmegaConf.select(self.cfg, path), resolve=True)

    # ---- stage bodies -----------------------------------------------------------------------------------------
    def _build_tokenizer(self, out: Path, metrics: dict[str, float]) -> None:
        """Train (tiny model) or fetch (pretrained) the tokenizer once; every later stage loads this one."""
        texts = [t for e in self.splits["train"] for t in (self.policy_input_of(e),
                                                             self.improver_input_of_rejected(e), e.chosen)]
        tokenizer = self.model_spec.tokenizer(texts)
        tokenizer.save_pretrained(out)
        metrics["vocab_size"] = len(tokenizer)

    def _build_sft(self, name: str, hp: DictConfig, make_input: Callable[[PreferenceExample], str],
                   max_input_tokens: int, out: Path, metrics: dict[str, float]) -> None:
        """Fine-tune on (input, y_w) with the loss on response tokens, save the model, sample from it on val."""
        tokenizer = self.tokenizer()
        model = self.adapters.wrap(self.trainable(self.model_spec.model(tokenizer) if hp.init_from is None
                                                   else self.load_stage_model(hp.init_from)))

        def encode(split: str) -> list[Any]:
            rows = self.splits[split]
            return encode_pairs(tokenizer, [make_input(e) for e in rows], [e.chosen for e in rows], max_input_tokens,
                                self.source.max_response_tokens)

        module = SFTModule(model, hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps, prefix=name,
                           compile=self.model_spec.compile_training)
        collate = partial(collate_sft, pad_id=tokenizer.pad_token_id)
        trainer = self.fitter.fit(module, hp, encode("train"), encode("val"), collate, metrics)
        model = self.adapters.merged(model)
        save_model(model, tokenizer, out)
        model.to(trainer.strategy.root_device)
        val = self.splits["val"][: hp.eval_samples]
        refs = [e.rejected if name == "sft_pit" else e.chosen for e in val]
        metrics.update(self.sample_eval(name, model, tokenizer, [make_input(e) for e in val], val, refs,
                                         max_input_tokens))

    def device(self) -> torch.device:
        """The device the configured trainer would train on (where evaluation and reference sampling run)."""
        return self.fitter.trainer(1, None).strategy.root_device

    def new_reward_model(self, spec: Any, adapters: FullWeights) -> RewardModel:
        """An untrained scalar model of `spec` (from `spec.init_from`'s weights), wrapped in `adapters`."""
        init_dir = self.artifact(spec.init_from) if spec.init_from else None
        tokenizer = self.tokenizer() if spec.needs_policy_tokenizer else None
        model = spec.build(tokenizer, init_dir, self.model_spec, self.source.max_response_tokens)
        model.backbone = adapters.wrap(self.trainable(model.backbone))   # the head always trains in full
        return model

    def seed(self) -> None:
        """Reset every random generator to the run's seed."""
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)

    def trainable(self, model: Any) -> Any:
        """A model about to train, with the memory options of `model=` (gradient checkpointing)."""
        return for_training(model, self.model_spec.gradient_checkpointing)

    def load_stage_model(self, stage: str) -> Any:
        """The causal LM a finished stage saved (the policy, M_PIT or a PPO round)."""
        return set_generation_cache(load_model(self.artifact(stage), self.model_spec.trust_remote_code),
                                    self.model_spec.generation_cache)

    def tokenizer(self) -> Any:
        return load_tokenizer(self.artifact("tokenizer"))

    def artifact(self, stage: str) -> Path:
        return self.store.path(stage, self.keys[stage])

    def sample_eval(self, name: str, model: Any, tokenizer: Any, inputs: list[str], rows: list[PreferenceExample],
                     refs: list[str], max_input_tokens: int) -> dict[str, float]:
        """Sample on val inputs; with an oracle, score the samples against the references (chosen or y_ref)."""
        texts = generate_texts(model, tokenizer, inputs, instantiate(self.cfg.eval_sampling), max_input_tokens,
                               f"{name} val samples")
        metrics = {"val_sample_words": mean(len(t.split()) for t in texts)}
        scores = [self.oracle(e.prompt, t) for e, t in zip(rows, texts, strict=True)] if self.oracle else None
        if scores:
            ref_scores = [self.oracle(e.prompt, r) for e, r in zip(rows, refs, strict=True)]
            metrics.update(val_oracle=mean(scores), val_oracle_reference=mean(ref_scores),
                           val_better_than_reference=mean(float(s > r)
                                                          for s, r in zip(scores, ref_scores, strict=True)))
        shown = list(zip(inputs, refs, texts, scores or [None] * len(texts), strict=True))[:TABLE_ROWS]
        self.tracker.log_table(f"{name}/samples", ["input", "reference", "sample", "oracle"], [list(r) for r in shown])
        return metrics
