"""The PIT stage graph (DESIGN.md section 2), read top to bottom: data, then each stage the objective asks for.

Every stage is content-addressed (`pit.artifacts`): a finished stage with the same key is reused, a
stage killed half-way leaves nothing under its final name and runs again. Stages that later work
provides are reported as not available, never faked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pit.artifacts import ArtifactStore, cache_key, write_json_atomic
from pit.data.encode import collate_sft, encode_pairs
from pit.data.schema import DataError, LoadedData, PreferenceExample, PreferenceSource
from pit.data.splits import split_examples
from pit.errors import ConfigError
from pit.models.factory import load_model, load_tokenizer, save_model
from pit.models.generate import generate_texts
from pit.modules.sft import SFTModule
from pit.tracking import Tracker, find_secrets

log = logging.getLogger(__name__)

STAGE_ORDER = ("sft_policy", "reward", "rlhf_policy", "sft_pit", "gap_reward", "pit_rl", "judge", "evaluate")
NOT_AVAILABLE = {"reward": "issue #4", "gap_reward": "issue #4", "judge": "issue #4",
                 "rlhf_policy": "issue #5", "pit_rl": "issue #5", "evaluate": "issue #6"}
TRAINER_KEY_FIELDS = ("accelerator", "devices", "strategy", "precision", "gradient_clip_val")
SAMPLE_ROWS = 16


@dataclass(frozen=True)
class Objective:
    """An `objective=` choice: which stages of the pipeline to run."""

    name: str
    stages: list[str]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.stages) - set(STAGE_ORDER))
        if unknown:
            raise ConfigError(f"objective '{self.name}': unknown stages {unknown}; known: {list(STAGE_ORDER)}")


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
        self.store = ArtifactStore(cfg.paths.cache_dir)
        self.source: PreferenceSource = instantiate(cfg.dataset)
        self.model_spec = instantiate(cfg.model)
        self.objective: Objective = instantiate(cfg.objective, _convert_="all")
        self.results: dict[str, Any] = {"stages": {}}
        self.keys: dict[str, str] = {}
        self.tracker: Tracker = instantiate(cfg.logger)
        self.tracker.log_config(config)

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            self._load_data()
            self._stage("tokenizer", {"model": self._sub("model")}, self._build_tokenizer)
            builders: dict[str, Callable[[Path, dict[str, float]], None]] = {
                "sft_policy": partial(self._build_sft, "sft_policy", self.source.templates.policy_input,
                                      self.source.max_prompt_tokens),
                "sft_pit": partial(self._build_sft, "sft_pit", self._improver_input_of_rejected,
                                   self.source.max_improver_tokens),
            }
            for name in (s for s in STAGE_ORDER if s in self.objective.stages):
                if name in NOT_AVAILABLE:
                    self._record(name, {"status": "skipped", "reason": f"not available yet ({NOT_AVAILABLE[name]})"})
                    continue
                init_from = self.cfg.train[name].init_from
                if init_from is not None and init_from not in self.keys:
                    raise ConfigError(f"train.{name}.init_from={init_from}: that stage must run before {name}")
                config = {"train": self._sub(f"train.{name}"), "model": self._sub("model"), "seed": self.cfg.seed,
                          "trainer": {k: self.cfg.trainer[k] for k in TRAINER_KEY_FIELDS},
                          "templates": self._sub("dataset.templates")}
                self._stage(name, config, builders[name], upstream=("tokenizer", *filter(None, [init_from])))
            self.results["wall_seconds"] = round(time.perf_counter() - start, 2)
            self._write_results()
            self.tracker.log_summary({k: v for k, v in self.results.items() if k != "data"})
            return self.results
        finally:
            self.tracker.finish()

    # ---- data ------------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        loaded: LoadedData = self.source.load()
        self.oracle = loaded.oracle
        self.splits = split_examples(loaded.examples, **self._sub("splits"))
        counts = {name: len(rows) for name, rows in self.splits.items()}
        self.results["data"] = {"source": loaded.source, "counts": counts, "dropped": dict(loaded.dropped)}
        self.keys["data"] = cache_key("data", {"dataset": self._sub("dataset"), "splits": self._sub("splits")}, {})
        self.tracker.log_metrics({f"data/{k}": v for k, v in counts.items()})
        dropped = ", ".join(f"{k}={v}" for k, v in loaded.dropped.items()) or "none"
        log.info("data %s: %s; dropped: %s", loaded.source, counts, dropped)
        if not self.splits["train"] or not self.splits["val"]:
            raise DataError(loaded.source, f"the train and val splits must not be empty (counts {counts})")

    def _improver_input_of_rejected(self, example: PreferenceExample) -> str:
        return self.source.templates.improver_input(example.prompt, example.rejected)

    # ---- the cached-stage mechanism ----------------------------------------------------------------------------
    def _stage(self, name: str, config: dict[str, Any], build: Callable[[Path, dict[str, float]], None],
               upstream: tuple[str, ...] = ()) -> None:
        """Reuse the artifact of (name, config, upstream keys) when complete, else build it atomically."""
        key = cache_key(name, config, {u: self.keys[u] for u in ("data", *upstream)})
        self.keys[name] = key
        start = time.perf_counter()
        if self.store.is_complete(name, key):
            metrics, status = self.store.metrics(name, key), "reused"
        else:
            log.info("stage %s: running (key %s)", name, key)
            with self.store.write(name, key) as (out, metrics):
                build(out, metrics)
            status = "ran"
        self.tracker.log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
        self._record(name, {"status": status, "seconds": round(time.perf_counter() - start, 2), "key": key,
                            "metrics": metrics})

    def _record(self, name: str, record: dict[str, Any]) -> None:
        self.results["stages"][name] = record
        log.info("stage %s: %s", name, {k: v for k, v in record.items() if k != "metrics"})
        self._write_results()

    def _write_results(self) -> None:
        write_json_atomic(self.output_dir / "results.json", self.results)

    def _sub(self, path: str) -> Any:
        return OmegaConf.to_container(OmegaConf.select(self.cfg, path), resolve=True)

    # ---- stage bodies -----------------------------------------------------------------------------------------
    def _build_tokenizer(self, out: Path, metrics: dict[str, float]) -> None:
        """Train (tiny model) or fetch (pretrained) the tokenizer once; every later stage loads this one."""
        texts = [t for e in self.splits["train"] for t in (self.source.templates.policy_input(e.prompt),
                                                             self._improver_input_of_rejected(e), e.chosen)]
        tokenizer = self.model_spec.tokenizer(texts)
        tokenizer.save_pretrained(out)
        metrics["vocab_size"] = len(tokenizer)

    def _build_sft(self, name: str, make_input: Callable[[PreferenceExample], str], max_input_tokens: int,
                   out: Path, metrics: dict[str, float]) -> None:
        """Fine-tune a fresh model on (input, y_w) with the loss on response tokens, save it, sample from it."""
        hp = self.cfg.train[name]
        tokenizer = load_tokenizer(self.store.path("tokenizer", self.keys["tokenizer"]))
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        init_from = hp.init_from
        model = (self.model_spec.model(tokenizer) if init_from is None
                 else load_model(self.store.path(init_from, self.keys[init_from]), self.model_spec.trust_remote_code))

        def loader(split: str, shuffle: bool) -> DataLoader:
            rows = self.splits[split]
            pairs = encode_pairs(tokenizer, [make_input(e) for e in rows], [e.chosen for e in rows],
                                 max_input_tokens, self.source.max_response_tokens)
            return DataLoader(pairs, batch_size=hp.batch_size, shuffle=shuffle, drop_last=shuffle,
                              collate_fn=partial(collate_sft, pad_id=tokenizer.pad_token_id))

        module = SFTModule(model, hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps, prefix=name)
        trainer = self._trainer(hp.max_steps, hp.val_every)
        train_loader, val_loader = loader("train", True), loader("val", False)
        start = time.perf_counter()
        trainer.fit(module, train_loader, val_loader)
        metrics["train_seconds"] = round(time.perf_counter() - start, 2)
        if hp.max_steps % hp.val_every:
            trainer.validate(module, val_loader, verbose=False)
        metrics.update(module.val_metrics)
        save_model(model, tokenizer, out)
        model.to(trainer.strategy.root_device)
        val = self.splits["val"][: hp.eval_samples]
        refs = [e.chosen if name == "sft_policy" else e.rejected for e in val]
        metrics.update(self._sample_eval(name, model, tokenizer, [make_input(e) for e in val], val, refs,
                                         max_input_tokens))

    def _sample_eval(self, name: str, model: Any, tokenizer: Any, inputs: list[str], rows: list[PreferenceExample],
                     refs: list[str], max_input_tokens: int) -> dict[str, float]:
        """Sample on val inputs; with an oracle, score the samples against the references (chosen or y_ref)."""
        texts = generate_texts(model, tokenizer, inputs, instantiate(self.cfg.eval_sampling), max_input_tokens)
        metrics = {"val_sample_words": mean(len(t.split()) for t in texts)}
        scores = [self.oracle(e.prompt, t) for e, t in zip(rows, texts, strict=True)] if self.oracle else None
        if scores:
            ref_scores = [self.oracle(e.prompt, r) for e, r in zip(rows, refs, strict=True)]
            metrics.update(val_oracle=mean(scores), val_oracle_reference=mean(ref_scores),
                           val_better_than_reference=mean(float(s > r)
                                                          for s, r in zip(scores, ref_scores, strict=True)))
        shown = list(zip(inputs, refs, texts, scores or [None] * len(texts), strict=True))[:SAMPLE_ROWS]
        self.tracker.log_table(f"{name}/samples", ["input", "reference", "sample", "oracle"], [list(r) for r in shown])
        return metrics

    def _trainer(self, max_steps: int, val_every: int) -> L.Trainer:
        """The configured Lightning Trainer (cpu/gpu/ddp/...) with this stage's step budget and our logger."""
        return instantiate(self.cfg.trainer)(
            max_steps=max_steps, max_epochs=-1, val_check_interval=min(val_every, max_steps),
            check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=self.tracker.lightning_logger,
            enable_checkpointing=False, enable_model_summary=False,
            default_root_dir=str(self.output_dir / "lightning"))
