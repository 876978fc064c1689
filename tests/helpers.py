"""What several test files share (conftest.py keeps the fixtures): the real config tree with fast overrides, stage
records, the weights of a cache, a fake OpenAI-compatible server, the records of an offline W&B run file, and the
evaluation re-judged from its artifact. `pytest` finds this module through `pythonpath` in pyproject.toml."""

from __future__ import annotations

import json
import re
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import pit.config  # noqa: F401  (registers the schemas)
from pit.evaluate.metrics import outcomes_from_scores, win_rates

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
HH_SLICE = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"   # shipped in the repo (data/hh-rlhf/README.md)
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Tiny configs of the model families the tests build from config (transformers' names and fields).
FAMILIES = {
    "gpt_neox": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "rotary_pct": 0.25, "max_position_embeddings": 256, "tie_word_embeddings": False},
    "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False},
    "gpt2": {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 256},   # learned absolute positions
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 1, "max_position_embeddings": 256, "tie_word_embeddings": True},
}

# A pipeline that finishes in seconds: few pairs, a very small model, a handful of steps.
FAST_TRAIN = [
    "model.config.n_layer=1", "model.config.n_embd=32", "model.config.n_head=2",
    "model.config.n_positions=128", "train.sft_policy.max_steps=4", "train.sft_policy.batch_size=8",
    "train.sft_policy.val_every=2", "train.sft_policy.eval_samples=8", "train.sft_pit.max_steps=3",
    "train.sft_pit.batch_size=8", "train.sft_pit.val_every=3", "train.sft_pit.eval_samples=8",
    "train.reward.max_steps=3", "train.reward.batch_size=8", "train.reward.val_every=3",
    "train.gap_reward.max_steps=3", "train.gap_reward.batch_size=8", "train.gap_reward.val_every=3",
    "train.judge.max_steps=2", "train.judge.batch_size=8", "train.judge.val_every=2",
    "train.rlhf_policy.iterations=2", "train.rlhf_policy.batch_size=8", "train.rlhf_policy.eval_samples=8",
    "train.rlhf_policy.ppo.ppo_epochs=1", "train.rlhf_policy.ppo.minibatches=2",
    "train.pit_rl.iterations=2", "train.pit_rl.batch_size=8", "train.pit_rl.eval_samples=8",
    "train.pit_rl.ppo.ppo_epochs=1", "train.pit_rl.ppo.minibatches=2",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "logger=none",
    "figures=false",   # ~1 s a PNG on 2 cores; the tests of figures turn them on
]
# The pipeline tests also exercise the Self-Refine baseline (the default, baseline=none, runs without it).
FAST = ["dataset.n_pairs=300", "baseline=self_refine", *FAST_TRAIN]
# FAST with a checkpoint after every batch and stages long enough to be killed in the middle.
CHECKPOINTED = [*FAST, "checkpoint.every=1", "train.sft_policy.max_steps=30", "train.rlhf_policy.iterations=4",
                "train.pit_rl.iterations=3"]


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The real config tree composed as `python -m pit.run` would, with paths under `tmp_path`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def command_line(args: list[str], capfd: Any) -> tuple[int, str, str]:
    """`python -m pit.run ARGS` in this process, so that no second interpreter imports the stack again (~15 s on one
    CPU): its exit status and what it wrote to stdout and stderr, file descriptors included (`sys.exit("error: ...")`
    prints its message and exits 1).
    The root logger's handlers (Hydra's job log) and the signal handlers (pit.interrupt) are put back afterwards.
    test_cli runs one such error as a real process too."""
    import logging
    import signal
    import sys

    from pit.run import main

    root, argv = logging.getLogger(), sys.argv
    handlers, level = list(root.handlers), root.level
    signals = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    sys.argv, status = ["pit.run", *args], 0
    try:
        main()
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        if isinstance(exit.code, str):
            sys.stderr.write(exit.code + "\n")
    finally:
        sys.argv = argv
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for signum, handler in signals.items():
            signal.signal(signum, handler)
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def stage_status(results: dict) -> dict[str, str]:
    """Each stage's status (ran, reused, resumed) in a results dict."""
    return {name: record["status"] for name, record in results["stages"].items()}


def logged_threads(log: str) -> int:
    """The torch thread count a job logged (`torch threads: N (...)`): jobs compared bit for bit must share it."""
    found = re.findall(r"torch threads: (\d+) ", log)
    assert len(found) == 1, f"expected one 'torch threads:' line, found {found} in:\n{log[-2000:]}"
    return int(found[0])


def model_hashes(cache: Path) -> dict[str, str]:
    """SHA-256 of every weights file of every finished stage, from the completion markers."""
    return {f"{marker.parent.parent.relative_to(cache)}/{name}": entry["sha256"]
            for marker in cache.rglob("_COMPLETE.json")
            for name, entry in json.loads(marker.read_text())["files"].items() if name.endswith(".safetensors")}


def rejudged(generations: Path, score: Callable[[list[str], list[str]], list[float]], method: str = "pit",
             tie_margin: float = 0.0) -> dict[str, float]:
    """Win/tie/lose, Δ and n of `method`'s first iteration over y_0, recomputed from an evaluate artifact's
    `generations.jsonl` with a pointwise `score(prompts, responses)`, batched as the evaluate stage batches its first
    comparison: the method's answers in one call, then those of y_0 not scored yet (equal texts tie). A reward
    model's score moves in its last bits with the width a batch pads to, which can turn a tie into a verdict."""
    rows = [json.loads(line) for line in generations.read_text().splitlines()]
    prompts, memo = [r["prompt"] for r in rows], {}

    def scored(texts: list[str]) -> list[float]:
        todo = list(dict.fromkeys(pair for pair in zip(prompts, texts, strict=True) if pair not in memo))
        if todo:
            memo.update(zip(todo, score([p for p, _ in todo], [t for _, t in todo]), strict=True))
        return [memo[pair] for pair in zip(prompts, texts, strict=True)]

    first = scored([r[method][0] for r in rows])
    return win_rates(outcomes_from_scores(first, scored([r["policy"] for r in rows]), tie_margin))


def reward_on_pairs(directory: Path, inputs: list[str], chosen: list[str], rejected: list[str]) -> dict[str, float]:
    """The accuracy (chosen scored above rejected) and the mean margin of the reward model saved in `directory`: a
    reward stage's val numbers again, from disk."""
    from pit.models.reward import load_reward_model

    scores = load_reward_model(directory).score(inputs + inputs, chosen + rejected)
    margins = scores[: len(inputs)] - scores[len(inputs):]
    return {"val_acc_w_gt_l": (margins > 0).float().mean().item(), "val_margin": margins.mean().item()}


def artifact_files(cache: Path, results: dict) -> dict[Path, int]:
    """Every file of the artifacts a run's results name, with its modification time: two runs that name the same
    artifacts and rebuilt or rewrote none of them give equal dicts."""
    return {p: p.stat().st_mtime_ns for name, record in results["stages"].items()
            for p in (cache / name / record["key"]).rglob("*") if p.is_file()}


class FakeAPI:
    """A local OpenAI-compatible chat server: answers "A" or "B" for the longer response (or always "A" when
    `biased`); fails the first `fail` requests. Its handler threads change the counters under one lock."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail, self.fail_status, self.biased, self.replies = 0, 503, False, []   # replies: canned contents first
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:   # one request at a time changes the counters (the server answers in threads)
                    api.requests.append(body)
                    api.auth.append(self.headers.get("Authorization"))
                    failing = api.fail > 0
                    if failing:
                        api.fail -= 1
                    canned = [api.replies.pop(0)] if api.replies and not failing else []   # a content may be None
                if failing:
                    self._reply(api.fail_status, {"error": f"echo {self.headers.get('Authorization')}"})
                    return
                if canned:
                    self._reply(200, {"choices": [{"message": {"role": "assistant", "content": canned[0]}}]})
                    return
                text = body["messages"][0]["content"]
                first, second = re.search(r"Response A:\n(.*)\n\nResponse B:\n(.*)\n\nBetter", text, re.S).groups()
                answer = "A" if api.biased or len(first) > len(second) else "B"
                self._reply(200, {"choices": [{"message": {"role": "assistant", "content": f" {answer}."}}]})

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# ---- offline W&B run files ------------------------------------------------------------------------------------
# A run file (`run-*.wandb`, what `wandb sync` uploads) is a 7-byte W&B header followed by a LevelDB-style log: 32 KiB
# blocks of chunks, each with a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last). Each record
# is a protobuf `wandb.proto.wandb_internal_pb2.Record`.
BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2  # here, not at the top: most tests never read a run file

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def summary_and_config(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Last value of each summary key and each top-level config key (JSON strings), as the server would see them."""
    summary: dict[str, str] = {}
    config: dict[str, str] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
        elif kind == "config":
            config.update({item.key: item.value_json for item in record.config.update})
        elif kind == "run":
            config.update({item.key: item.value_json for item in record.run.config.update})
    return summary, config


def history_keys(path: Path) -> set[str]:
    """Every metric name logged to the run's history."""
    return {item.key or "/".join(item.nested_key) for record in read_records(path)
            if record.WhichOneof("record_type") == "history" for item in record.history.item}


def history_series(path: Path, *keys: str) -> list[tuple[float, ...]]:
    """The logged rows (in order) that carry every one of `keys`, as tuples of their values."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            if all(k in row for k in keys):
                rows.append(tuple(float(row[k]) for k in keys))
    return rows
