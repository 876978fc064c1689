"""The PIT stage graph (docs/design.md §2), read top to bottom: the objective, the table of stages in the paper's
order, how each is planned from the config, and the cached-stage mechanism that runs them.

Every task is content-addressed (`pit.artifacts`): a finished task with the same key is reused, a task killed
half-way leaves nothing under its final name and runs again. Stage bodies live in `pit.stages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pit.artifacts import ArtifactStore, cache_key, foreign_source, source_digest, write_json_atomic
from pit.data.schema import DataError, LoadedData, PreferenceSource
from pit.data.splits import split_examples
from pit.distributed import barrier, is_rank_zero, single_process
from pit.errors import ConfigError
from pit.evaluate.figures import CURVES, publish_figures
from pit.interrupt import Interrupted
from pit.objective import Objective
from pit.preflight import models_to_load, preflight
from pit.stages.context import Choices, GapChoice, RewardSpec, Roles, StageContext, declared_reads
from pit.stages.evaluate import build_evaluation, build_judge, publish_evaluation
from pit.stages.gap import build_gap_reward
from pit.stages.ppo import build_pit_round, build_rlhf_policy
from pit.stages.supervised import build_reward, build_sft, build_tokenizer
from pit.threads import set_threads
from pit.tracking import RunLedger, Tracker, find_secrets, run_identity
from pit.training import StageFitter

log = logging.getLogger(__name__)

DATASET_REFERENCES = ("rejected", "chosen")   # which responses of a pair a `dataset` round uses as y_ref
TRAINER_KEY_FIELDS = ("accelerator", "devices", "strategy", "precision", "gradient_clip_val")


@dataclass(frozen=True)
class Task:
    """One cached unit of work: a stage, or one round of a stage that runs several (the curriculum)."""

    name: str
    config: dict[str, Any]         # what its key hashes, with its upstream tasks' keys and the code version
    upstream: tuple[str, ...]      # tasks whose keys its key holds (each must be planned before it)
    args: dict[str, Any] = field(default_factory=dict)   # keyword arguments of the stage's body
    reads: frozenset[str] = frozenset()   # what its body declares it opens (checked against upstream by plan_run)


@dataclass(frozen=True)
class Stage:
    """A row of the stage table: how the config plans it, the body that builds it (`pit.stages`), and whether it
    trains (a stage that does not is built by rank zero alone under DDP while the other ranks wait)."""

    name: str
    plan: Callable[[Plan], list[Task]]
    body: Callable[..., None]      # body(ctx, out, metrics, **task.args)
    fits: bool = True
    always: bool = False           # runs whatever objective.stages lists (the tokenizer)


class Plan:
    """The tasks of one run in table order; each plan function checks that what it reads is planned before it."""

    def __init__(self, cfg: DictConfig, objective: Objective, gap: GapChoice, reward_init_from: str | None):
        self.cfg, self.objective, self.gap, self.reward_init_from = cfg, objective, gap, reward_init_from
        self.tasks: list[tuple[Stage, Task]] = []

    def has(self, stage: str) -> bool:
        return any(task.name == stage for _, task in self.tasks)

    def require(self, stage: str, needed: list[str], why: str) -> None:
        if missing := [s for s in needed if not self.has(s)]:
            raise ConfigError(f"{stage} {why}: add {missing} to objective.stages")

    def sub(self, path: str) -> Any:
        return OmegaConf.to_container(OmegaConf.select(self.cfg, path), resolve=True)

    def common(self, trains_with_peft: bool = True) -> dict[str, Any]:
        """What every task's key holds: seed, templates, peft choice, the trainer's numerics, val samples' decoding."""
        peft = {"peft": self.sub("peft")} if trains_with_peft else {}
        return {"seed": self.cfg.seed, "templates": self.sub("dataset.templates"), **peft,
                "trainer": {k: self.cfg.trainer[k] for k in TRAINER_KEY_FIELDS},
                "eval_sampling": self.sub("eval_sampling")}   # val samples (metrics) and M_P's references

    def after(self, stage: str, init_from: str | None) -> tuple[str, ...]:
        """Upstream tasks: the tokenizer, and the stage whose weights this one starts from (which must be planned)."""
        if init_from is not None and not self.has(init_from):
            raise ConfigError(f"{stage} starts from '{init_from}' (init_from), which has not run before it; add it to "
                              f"objective.stages or set init_from=null")
        return ("tokenizer", *filter(None, [init_from]))

    def sft(self, name: str, hp: DictConfig, improver: bool) -> list[Task]:
        config = {**self.common(), "model": self.sub("model"), "train": OmegaConf.to_container(hp, resolve=True)}
        return [Task(name, config, self.after(name, hp.init_from), {"name": name, "hp": hp, "improver": improver})]

    def ppo(self, name: str, hp: DictConfig, start: str) -> list[Task]:
        """RLHF of `start` against R_P (M_P's, or the control's)."""
        self.require(name, [start, "reward"], f"optimises {start} against R_P")
        config = {**self.common(), "train": OmegaConf.to_container(hp, resolve=True)}
        return [Task(name, config, (start, "reward"), {"name": name, "hp": hp, "start": start})]


# ---- how each stage is planned from the config, in the order of the paper's pipeline ----------------------------
def plan_tokenizer(plan: Plan) -> list[Task]:
    return [Task("tokenizer", {"model": plan.sub("model")}, ())]


def plan_sft_policy(plan: Plan) -> list[Task]:
    """M_P's SFT on (x, y_w)."""
    return plan.sft("sft_policy", plan.cfg.train.sft_policy, improver=False)


def plan_reward(plan: Plan) -> list[Task]:
    """R_P: Bradley-Terry on (x, y_w > y_l)."""
    config = {**plan.common(), "reward_model": plan.sub("reward_model"), "train": plan.sub("train.reward")}
    return [Task("reward", config, plan.after("reward", plan.reward_init_from), {"hp": plan.cfg.train.reward})]


def plan_rlhf_policy(plan: Plan) -> list[Task]:
    """M_P's RLHF: PPO of the SFT policy against R_P."""
    return plan.ppo("rlhf_policy", plan.cfg.train.rlhf_policy, "sft_policy")


def plan_sft_pit(plan: Plan) -> list[Task]:
    """M_PIT's SFT on ((x, y_l), y_w)."""
    return plan.sft("sft_pit", plan.cfg.train.sft_pit, improver=True)


def plan_gap_reward(plan: Plan) -> list[Task]:
    """R_PIT(x, y, y_ref) as the `gap=` choice makes it: trained (from `reward_model=`), R_P's difference, or both."""
    gap, hp = plan.gap, plan.cfg.train.gap_reward
    plan.require("gap_reward", list(gap.reads), f"with gap={gap.name} reads {list(gap.reads)}")
    gap.check(hp)
    config = {**plan.common(), "gap": {**plan.sub("gap"), **foreign_source(type(gap))}}
    upstream: tuple[str, ...] = ()
    if gap.trains:
        config.update(reward_model=plan.sub("reward_model"), train=plan.sub("train.gap_reward"))
        upstream = plan.after("gap_reward", plan.reward_init_from)
    return [Task("gap_reward", config, tuple(dict.fromkeys((*upstream, *gap.reads))), {"hp": hp})]


def plan_pit_rl(plan: Plan) -> list[Task]:
    """One task per curriculum round, each starting from the last. A round's key holds its position, its reference
    source and the rounds before it, so an ablation that shares a prefix of the curriculum reuses those rounds."""
    plan.require("pit_rl", ["gap_reward"], "optimises M_PIT against R_PIT")
    objective, tasks, hp = plan.objective, [], plan.cfg.train.pit_rl
    if bad := sorted(set(hp.dataset_references) - set(DATASET_REFERENCES)):
        raise ConfigError(f"train.pit_rl.dataset_references: unknown {bad}; choose from {list(DATASET_REFERENCES)}")
    previous = objective.improver_base
    for name, source in objective.rounds:
        config = {**plan.common(), "train": plan.sub("train.pit_rl"), "source": source}
        rp = ("reward",) if plan.has("reward") else ()   # R_P's oracle correlation is reported beside R_PIT's
        # M_P: every round is scored on its val drafts (`val_draft_*`), and a `policy` round samples its references
        upstream = tuple(dict.fromkeys((objective.improver_base, "gap_reward", previous, objective.policy, *rp)))
        tasks.append(Task(name, config, upstream, {"name": name, "hp": hp, "reference_source": source,
                                                  "init_from": previous}))
        previous = name
    return tasks


def plan_control_sft(plan: Plan) -> list[Task]:
    """The compute-matched control, part 1: M_P's SFT continued for M_PIT's SFT budget (`sft_pit.max_steps`)."""
    train = plan.cfg.train
    hp = OmegaConf.merge(train.sft_policy, {"max_steps": train.sft_pit.max_steps, "init_from": "sft_policy"})
    return plan.sft("control_sft", hp, improver=False)


def plan_control_rl(plan: Plan) -> list[Task]:
    """Part 2: plain RLHF against R_P for M_P's and every curriculum round's PPO iterations together."""
    train, objective = plan.cfg.train, plan.objective
    rlhf = train.rlhf_policy.iterations if "rlhf_policy" in objective.stages else 0
    hp = OmegaConf.merge(train.rlhf_policy, {"iterations": rlhf + len(objective.rounds) * train.pit_rl.iterations})
    return plan.ppo("control_rl", hp, "control_sft")


def plan_judge(plan: Plan) -> list[Task]:
    # the judge trains full weights whatever `peft` says: runs that differ in peft are judged by one judge
    config = {**plan.common(trains_with_peft=False), "judge": plan.sub("judge"), "train": plan.sub("train.judge")}
    return [Task("judge", config, ("tokenizer",), {"hp": plan.cfg.train.judge})]


def plan_evaluate(plan: Plan) -> list[Task]:
    """y_0 of M_P, K improvement steps of M_PIT (and the baseline), the control's answers: judged on the test (or
    val) split."""
    plan.require("evaluate", ["judge"], "needs the judge")
    if (hp := plan.cfg.evaluate).split not in ("test", "val") or hp.iterations < 1:   # train, judge: trained on
        raise ConfigError(f"evaluate.split={hp.split!r} must be test (or val, to choose settings), and "
                          f"evaluate.iterations={hp.iterations} at least 1")
    objective, control = plan.objective, ("control_rl",) if plan.has("control_rl") else ()
    config = {**plan.common(), "evaluate": plan.sub("evaluate"), "baseline": plan.sub("baseline")}
    return [Task("evaluate", config, ("tokenizer", "judge", objective.policy, *filter(None, [objective.improver]),
                                      *control), {"hp": plan.cfg.evaluate})]


STAGES: list[Stage] = [
    Stage("tokenizer", plan_tokenizer, build_tokenizer, fits=False, always=True),
    Stage("sft_policy", plan_sft_policy, build_sft),
    Stage("reward", plan_reward, build_reward),
    Stage("rlhf_policy", plan_rlhf_policy, build_rlhf_policy),
    Stage("sft_pit", plan_sft_pit, build_sft),
    Stage("gap_reward", plan_gap_reward, build_gap_reward),
    Stage("pit_rl", plan_pit_rl, build_pit_round),
    Stage("control_sft", plan_control_sft, build_sft),
    Stage("control_rl", plan_control_rl, build_rlhf_policy),
    Stage("judge", plan_judge, build_judge),
    Stage("evaluate", plan_evaluate, build_evaluation, fits=False),
]


def plan_run(cfg: DictConfig, objective: Objective, gap: GapChoice,
             reward_spec: RewardSpec) -> list[tuple[Stage, Task]]:
    """Every task this run takes, checked before any work starts: each reads only planned tasks, and what its body
    declares it opens is among the tasks its key holds (its upstream tasks and theirs)."""
    known = [stage.name for stage in STAGES if not stage.always]
    if unknown := sorted(set(objective.stages) - set(known)):
        raise ConfigError(f"objective '{objective.name}': unknown stages {unknown}; known: {known}")
    plan = Plan(cfg, objective, gap, reward_spec.init_from)
    for stage in STAGES:
        if stage.always or stage.name in objective.stages:
            for task in stage.plan(plan):
                if missing := [u for u in task.upstream if not plan.has(u)]:
                    raise ConfigError(f"{task.name} reads {missing}, which objective.stages does not run before it: "
                                      f"add them")
                plan.tasks.append((stage, task))
    choices, keyed = Choices(run_roles(objective, plan.tasks), gap, reward_spec), {}
    checked = []
    for stage, task in plan.tasks:
        keyed[task.name] = frozenset(task.upstream).union(*(keyed[u] for u in task.upstream))
        opened = declared_reads(stage.body, choices, task.args)
        if unkeyed := sorted(opened - keyed[task.name]):
            raise ConfigError(f"stage {task.name} opens {unkeyed}, which its key does not hold (its upstream: "
                              f"{sorted(keyed[task.name])}): a change to them would reuse a stale {task.name}. Add "
                              f"them to its plan's upstream in pit/pipeline.py")
        checked.append((stage, replace(task, reads=opened)))
    return checked


def run_roles(objective: Objective, tasks: list[tuple[Stage, Task]]) -> Roles:
    """Which planned task plays which role."""
    return Roles(frozenset(task.name for _, task in tasks), objective.policy, objective.improver_base,
                 objective.improver)


class Pipeline:
    """Runs one Hydra job's tasks against the shared artifact cache and records everything in results.json."""

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
        self.gap: GapChoice = instantiate(cfg.gap, _convert_="all")
        self.reward_spec = instantiate(cfg.reward_model)
        self.judge = instantiate(cfg.judge)
        self.baseline = instantiate(cfg.baseline)
        self.adapters = instantiate(cfg.peft, _convert_="all")
        self.tasks = plan_run(cfg, self.objective, self.gap, self.reward_spec)
        self.objective.check_choices(self.baseline.improves, self.judge.name, self.judge.needs_oracle,
                                     self.source.has_oracle)
        set_threads(cfg.threads)   # this job's share of its CPUs, from how it was launched
        preflight(cfg, models_to_load({task.name for _, task in self.tasks}, self.model_spec, self.reward_spec,
                                      self.judge, self.source.has_oracle))
        self.results: dict[str, Any] = {"stages": {}}
        self.keys: dict[str, str] = {}
        self.config_keys: dict[str, str] = {}   # the same keys without the code version: to say why a stage reran
        self.artifacts: dict[str, Path] = {}
        self.current: tuple[str, float] | None = None   # the task being built or reused, and when it started
        self.code_version = cfg.cache.code_version or source_digest()
        self.rank_zero = is_rank_zero()      # under DDP only rank zero publishes artifacts, results and W&B
        self.ledger = RunLedger(self.store.root / "runs", run_identity(config, str(self.output_dir)),
                                write=self.rank_zero)
        if self.ledger.resumed and self.rank_zero:
            log.info("continuing the interrupted run %s (tracker run id %s)", self.ledger.path.stem, self.ledger.run_id)
        self.tracker: Tracker = instantiate(cfg.logger, run_id=self.ledger.run_id) if self.rank_zero else Tracker()
        self.fitter = StageFitter(cfg.trainer, cfg.checkpoint, cfg.seed, self.tracker.lightning_logger,
                                  self.output_dir / "lightning")
        self.tracker.log_config(config)

    def run(self) -> dict[str, Any]:
        start, finished = time.perf_counter(), False
        try:
            ctx = self._context()
            for stage, task in self.tasks:
                self._stage(ctx, stage, task)
            if ctx.has("evaluate"):
                self.results["eval"] = publish_evaluation(self.artifacts["evaluate"], self.cfg.table_rows,
                                                          self.tracker)
            if self.rank_zero and self.cfg.figures:
                publish_figures(self.results, self.artifacts, self.output_dir, self.tracker)
            self.results["wall_seconds"] = round(time.perf_counter() - start, 2)
            self._write_results()
            self.tracker.log_summary({k: v for k, v in self.results.items() if k != "data"})
            if self.rank_zero:
                self.ledger.finish()
            finished = True
            return self.results
        except Interrupted as stop:
            self._record_interruption(stop)
            raise
        finally:
            self.tracker.finish(failed=not finished)   # a failed run is marked so, not left to upload as finished
            self.ledger.release()

    def _record_interruption(self, stop: Interrupted) -> None:
        """Say once where a signal stopped the job and what a rerun does; keep it in results.json."""
        name, started = self.current or (None, 0.0)
        if name is None:
            where, then = "between stages", "finished stages are reused"
        elif stop.batch is None:
            where, then = f"stage {name}", "it starts that stage again (finished stages are reused)"
        else:
            where, then = f"stage {name} at batch {stop.batch}", "resumes there"
        log.error("interrupted by %s in %s; rerun the same command: %s", stop.signal_name, where, then)
        self.results["interrupted"] = {"signal": stop.signal_name, "stage": name, "batch": stop.batch}
        if name is not None:
            self.results["stages"][name] = {"status": "interrupted", "key": self.keys.get(name), "batch": stop.batch,
                                            "seconds": round(time.perf_counter() - started, 2)}
        self._write_results()

    def _context(self) -> StageContext:
        """Load and split the data, then what every stage body sees: the splits and the choices of the config."""
        loaded: LoadedData = self.source.load()
        data = {"dataset": self._sub("dataset"), "splits": self._sub("splits")}
        self.keys["data"] = self.config_keys["data"] = cache_key("data", data, {})
        splits = split_examples(loaded.examples, **self._sub("splits"))
        counts = {name: len(rows) for name, rows in splits.items()}
        self.results["data"] = {"source": loaded.source, "counts": counts, "dropped": dict(loaded.dropped)}
        self.tracker.log_metrics({f"data/{k}": v for k, v in counts.items()})
        dropped = ", ".join(f"{k}={v}" for k, v in loaded.dropped.items()) or "none"
        log.info("data %s: %s; dropped: %s", loaded.source, counts, dropped)
        if not splits["train"] or not splits["val"]:
            raise DataError(loaded.source, f"the train and val splits must not be empty (counts {counts})")
        roles = run_roles(self.objective, self.tasks)
        return StageContext(source=self.source, splits=splits, oracle=loaded.oracle, roles=roles,
                            model_spec=self.model_spec, reward_spec=self.reward_spec, adapters=self.adapters,
                            gap=self.gap, judge=self.judge, baseline=self.baseline, fitter=self.fitter,
                            tracker=self.tracker, artifacts=self.artifacts, seed=self.cfg.seed,
                            eval_sampling=instantiate(self.cfg.eval_sampling),
                            log_rollouts_every=self.cfg.log_rollouts_every, table_rows=self.cfg.table_rows,
                            cache_dir=self.store.root)

    # ---- the cached-stage mechanism ----------------------------------------------------------------------------
    def _stage(self, ctx: StageContext, stage: Stage, task: Task) -> None:
        """Reuse the artifact of (task, config, upstream keys, code) when complete, else build it atomically under
        the (task, key) lock; a job that waited for that lock reuses what the holder built."""
        name, upstream = task.name, ("data", *task.upstream)
        key = cache_key(name, task.config, {u: self.keys[u] for u in upstream}, code=self.code_version)
        self.keys[name], self.artifacts[name] = key, self.store.path(name, key)
        self.config_keys[name] = cache_key(name, task.config, {u: self.config_keys[u] for u in upstream})
        start = time.perf_counter()
        self.current = (name, start)
        if not stage.fits and not self.rank_zero:   # under DDP rank zero builds it alone; the others read it
            log.info("stage %s: waiting for rank zero to build it", name)
            self.store.wait_for(name, key)
        with self.store.lock(name, key):
            if self.store.is_complete(name, key):
                metrics, status = self.store.metrics(name, key), "reused"
            else:
                because = self.store.rerun_reason(name, self.config_keys[name], self.code_version)
                log.info("stage %s: running (key %s)%s", name, key, f"; {because}" if because else "")
                self.fitter.start(name, self.store.checkpoints(name, key))
                ctx.reseed()   # a stage never depends on what ran before it in this process
                provenance = {"config_key": self.config_keys[name], "code": self.code_version}
                with self.store.write(name, key, self.rank_zero, provenance) as (out, metrics):
                    self.fitter.record_curves(out / CURVES)
                    stage.body(ctx.scoped(name, task.reads), out, metrics, **task.args)
                if stage.fits:
                    barrier()   # every rank built it (its fit needs them all); rank zero's copy is in place now
                status = "ran" if self.fitter.resumed_from is None else "resumed"
        record = {"status": status, "seconds": round(time.perf_counter() - start, 2), "key": key, "metrics": metrics}
        if status == "resumed":
            record["resumed_from_batch"] = self.fitter.resumed_from
        self.tracker.log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
        self.results["stages"][name] = record
        log.info("stage %s: %s", name, " ".join(f"{k}={v}" for k, v in record.items() if k != "metrics"))
        self.current = None
        self._write_results()

    def _write_results(self) -> None:
        if self.rank_zero:
            write_json_atomic(self.output_dir / "results.json", self.results)

    def _sub(self, path: str) -> Any:
        return OmegaConf.to_container(OmegaConf.select(self.cfg, path), resolve=True)
