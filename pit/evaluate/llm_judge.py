"""`judge=llm`: pairwise verdicts from an OpenAI-compatible chat-completions API.

Each pair is asked in both orders; a verdict counts only when both orders agree, otherwise it is a tie (LLM
judges prefer a position). Requests go through the official `openai` client (`pip install 'pit[llm]'`), which
retries rate limits, server errors and network failures with jittered exponential backoff and honours
`Retry-After`. A reply without a usable letter (`content: null`, a refusal, prose) is "no verdict": counted,
reported, and a tie for that order. Every answer is cached on disk, so a rerun or another sweep point asks
nothing twice. The API key is read from the environment variable the config names and never logged, stored or
put in an error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from filelock import FileLock

from pit.errors import ConfigError, UserError
from pit.progress import progress

log = logging.getLogger(__name__)

QUESTION = ("Which response to the conversation is better{rubric}? Answer with the single letter A or B.\n\n"
            "Conversation:\n{prompt}\n\nResponse A:\n{first}\n\nResponse B:\n{second}\n\nBetter response:")
NO_KEY = "no-key"   # what the client sends as the key to a server without keys (api_key_env: null)


class LLMClient:
    """Where and how an LLM judge is asked: the server, model, key variable, rubric and request limits (the
    `judge=llm` choice, `pit.stages.judges.LLMJudge`, adds its stage)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", name: str = "llm",
                 rubric: str | None = None, concurrency: int = 8, max_retries: int = 5, timeout_seconds: float = 60.0):
        self.base_url, self.model, self.api_key_env, self.name = base_url.rstrip("/"), model, api_key_env, name
        self.rubric, self.concurrency = rubric, concurrency
        self.max_retries, self.timeout_seconds = max_retries, timeout_seconds
        self.api_key()   # a missing key or client fails when the run starts, not after hours of training
        self.openai = openai_module()

    def api_key(self) -> str | None:
        """The key from the environment variable the config names (None for servers without keys)."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"judge={self.name} reads its API key from ${self.api_key_env}, which is not set "
                              f"(set judge.api_key_env=null for a server without keys)")
        return key


def openai_module() -> Any:
    """The `openai` package, or a ConfigError saying how to install it."""
    try:
        import openai
    except ImportError:
        raise ConfigError("judge=llm talks to the API through the openai client: pip install 'pit[llm]'") from None
    return openai


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

    def __init__(self, judge: LLMClient, cache_file: Path):
        self.judge, self.cache_file = judge, cache_file
        self.key = judge.api_key()
        self.lock = threading.Lock()
        self.file_lock = FileLock(f"{cache_file}.lock")   # sweep points in other processes append to it too
        self.cache, self.damaged_lines = read_verdicts(cache_file)
        if self.damaged_lines:
            log.warning("%s: skipped %d damaged lines (a write cut short by a kill); those pairs are asked again",
                        cache_file, self.damaged_lines)
        self.requests = self.no_verdicts = 0
        self.openai = judge.openai
        self.client = self.openai.OpenAI(
            base_url=judge.base_url, api_key=self.key or NO_KEY, max_retries=judge.max_retries,
            timeout=judge.timeout_seconds,
            http_client=self.openai.DefaultHttpxClient(event_hooks={"request": [self._count]}))

    def _count(self, request: Any) -> None:
        """Every HTTP request the client sends, its own retries included."""
        with self.lock:
            self.requests += 1

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        """1 when both orders prefer `first`, 0 when both prefer `second`, 0.5 otherwise."""
        questions = [q for p, a, b in zip(prompts, first, second, strict=True) for q in ((p, a, b), (p, b, a))]
        before = self.no_verdicts
        with ThreadPoolExecutor(self.judge.concurrency) as pool:
            answers = list(progress(pool.map(lambda q: self.ask(*q), questions), f"judge={self.judge.name}",
                                    len(questions), unit="question"))
        if self.no_verdicts > before:
            log.warning("judge=%s: %d of %d answers held no verdict (A or B); each counts as a tie for its order",
                        self.judge.name, self.no_verdicts - before, len(questions))
        return [1.0 if (f, b) == ("A", "B") else 0.0 if (f, b) == ("B", "A") else 0.5
                for f, b in zip(answers[::2], answers[1::2], strict=True)]

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
        content = (self._complete(body) or "").strip().upper()
        answer = content[:1] if content[:1] in ("A", "B") else None
        with self.lock:
            self.no_verdicts += answer is None
            self.cache[ident] = answer
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with self.file_lock, self.cache_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"id": ident, "answer": answer}) + "\n")
        return answer

    def _complete(self, body: dict) -> str | None:
        """The reply's text (None for `content: null` or no choices); API failures become one-line UserErrors."""
        openai, url = self.openai, f"{self.judge.base_url}/chat/completions"
        tries = self.judge.max_retries + 1
        try:
            reply = self.client.chat.completions.create(**body)
        except openai.APIStatusError as error:
            retried = error.status_code in (408, 409, 429) or error.status_code >= 500
            detail = f"after {tries} tries" if retried else f"({self._redact(error.response.text[:200])})"
            raise UserError(f"LLM judge at {url}: HTTP {error.status_code} {detail}") from None
        except openai.APIConnectionError as error:   # timeouts included
            raise UserError(f"LLM judge at {url}: {type(error).__name__} after {tries} tries") from None
        return reply.choices[0].message.content if reply.choices else None

    def _redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text
