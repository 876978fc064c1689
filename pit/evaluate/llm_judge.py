"""`judge=llm`: pairwise verdicts from an OpenAI-compatible chat-completions API.

Each pair is asked in both orders; a verdict counts only when both orders agree, otherwise it is a tie (LLM
judges prefer a position). Requests retry with exponential backoff on rate limits, server errors and network
failures; every answer is cached on disk, so a rerun or another sweep point asks nothing twice. The API key
is read from the environment variable the config names and never logged, stored or put in an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING

from filelock import FileLock

from pit.errors import ConfigError, UserError

if TYPE_CHECKING:
    from pit.pipeline import Pipeline

log = logging.getLogger(__name__)

QUESTION = ("Which response to the conversation is better{rubric}? Answer with the single letter A or B.\n\n"
            "Conversation:\n{prompt}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\nBetter response:")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class LLMJudge:
    """The judge stage measures agreement with y_w > y_l on `val_pairs` val pairs; `verdicts` serves evaluation."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", name: str = "llm",
                 rubric: str | None = None, val_pairs: int = 50, concurrency: int = 8, max_retries: int = 5,
                 backoff_seconds: float = 1.0, timeout_seconds: float = 60.0):
        self.base_url, self.model, self.api_key_env, self.name = base_url.rstrip("/"), model, api_key_env, name
        self.rubric, self.val_pairs, self.concurrency = rubric, val_pairs, concurrency
        self.max_retries, self.backoff_seconds, self.timeout_seconds = max_retries, backoff_seconds, timeout_seconds
        self.api_key()   # a missing key fails when the run starts, not after hours of training

    def api_key(self) -> str | None:
        """The key from the environment variable the config names (None for servers without keys)."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"judge={self.name} reads its API key from ${self.api_key_env}, which is not set "
                              f"(set judge.api_key_env=null for a server without keys)")
        return key

    def build(self, pipeline: Pipeline, out: Path, metrics: dict[str, float]) -> None:
        val = pipeline.splits["val"][: self.val_pairs]
        verdicts = self.verdicts(pipeline, out, 0.0)
        outcomes = verdicts.compare([e.prompt for e in val], [e.chosen for e in val], [e.rejected for e in val])
        metrics.update(val_acc=mean(o == 1.0 for o in outcomes), val_tie=mean(o == 0.5 for o in outcomes),
                       val_pairs=len(val), requests=verdicts.requests)
        (out / "judge.json").write_text(json.dumps({"kind": "llm", "base_url": self.base_url, "model": self.model}))

    def verdicts(self, pipeline: Pipeline, directory: Path, tie_margin: float) -> LLMVerdicts:
        return LLMVerdicts(self, Path(pipeline.cfg.paths.cache_dir) / "llm_judge" / "verdicts.jsonl")


def read_verdicts(path: Path) -> tuple[dict[str, str | None], int]:
    """The cached answers by question id, and how many lines could not be read (cut short, or not a verdict)."""
    cache: dict[str, str | None] = {}
    damaged = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                cache[entry["id"]] = entry["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                damaged += 1
    return cache, damaged


class LLMVerdicts:
    """Order-swapped, cached, retried pairwise verdicts of one LLM judge."""

    def __init__(self, judge: LLMJudge, cache_file: Path):
        self.judge, self.cache_file = judge, cache_file
        self.key = judge.api_key()
        self.lock = threading.Lock()
        self.file_lock = FileLock(f"{cache_file}.lock")   # sweep points in other processes append to it too
        self.cache, self.damaged_lines = read_verdicts(cache_file)
        if self.damaged_lines:
            log.warning("%s: skipped %d damaged lines (a write cut short by a kill); those pairs are asked again",
                        cache_file, self.damaged_lines)
        self.requests = 0

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        """1 when both orders prefer `first`, 0 when both prefer `second`, 0.5 otherwise."""
        rows = list(zip(prompts, first, second, strict=True))
        with ThreadPoolExecutor(self.judge.concurrency) as pool:
            forward = list(pool.map(lambda r: self.ask(r[0], r[1], r[2]), rows))
            backward = list(pool.map(lambda r: self.ask(r[0], r[2], r[1]), rows))
        return [1.0 if (f, b) == ("A", "B") else 0.0 if (f, b) == ("B", "A") else 0.5
                for f, b in zip(forward, backward, strict=True)]

    def ask(self, prompt: str, first: str, second: str) -> str | None:
        """"A", "B", or None for an answer that is neither; cached by (base URL, model, question)."""
        rubric = f" ({self.judge.rubric})" if self.judge.rubric else ""
        messages = [{"role": "user", "content": QUESTION.format(rubric=rubric, prompt=prompt, first=first,
                                                                 second=second)}]
        body = {"model": self.judge.model, "messages": messages, "temperature": 0, "max_tokens": 4}
        ident = hashlib.sha256(json.dumps([self.judge.base_url, body], sort_keys=True).encode()).hexdigest()
        with self.lock:
            if ident in self.cache:
                return self.cache[ident]
        content = self._post(body)["choices"][0]["message"]["content"].strip().upper()
        answer = content[:1] if content[:1] in ("A", "B") else None
        with self.lock:
            self.cache[ident] = answer
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with self.file_lock, self.cache_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"id": ident, "answer": answer}) + "\n")
        return answer

    def _post(self, body: dict) -> dict:
        url = f"{self.judge.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        reason = ""
        for attempt in range(self.judge.max_retries + 1):
            with self.lock:
                self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.judge.timeout_seconds) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                reason = f"HTTP {error.code}"
                if error.code not in RETRY_STATUS:
                    raise UserError(f"LLM judge at {url}: {reason} ({self._redact(error.read()[:200])})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = type(error).__name__
            if attempt < self.judge.max_retries:
                delay = self.judge.backoff_seconds * 2 ** attempt
                log.warning("LLM judge at %s: %s, retry %d in %.1f s", url, reason, attempt + 1, delay)
                time.sleep(delay)
        raise UserError(f"LLM judge at {url}: {reason} after {self.judge.max_retries + 1} tries")

    def _redact(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "replace")
        return text.replace(self.key, "***") if self.key else text
