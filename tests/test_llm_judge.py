"""The LLM judge against a local OpenAI-compatible server on 127.0.0.1: order swapping, retries, cache, key hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FakeAPI

from pit.errors import ConfigError, UserError
from pit.evaluate.llm_judge import LLMVerdicts
from pit.stages.judges import LLMJudge

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI()
    yield server
    server.server.shutdown()


def judge(api: FakeAPI, **kwargs: object) -> LLMJudge:
    return LLMJudge(base_url=api.url, model="judge-model", api_key_env="PIT_TEST_JUDGE_KEY",
                    **kwargs)


def test_both_orders_retries_and_cache(api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    api.fail = 2                      # two 503s first: retried with backoff
    verdicts = LLMVerdicts(judge(api), tmp_path / "verdicts.jsonl")
    outcomes = verdicts.compare(["q1", "q2"], ["a much longer answer", "x"], ["short", "a much longer answer"])
    assert outcomes == [1.0, 0.0]
    assert len(api.requests) == 2 + 4 and verdicts.requests == 6           # 2 failures + 2 pairs x 2 orders
    asked = [r["messages"][0]["content"] for r in api.requests[2:]]
    assert any("Response A:\na much longer answer" in q for q in asked)
    assert any("Response B:\na much longer answer" in q for q in asked)    # the same pair, swapped
    assert set(api.auth) == {f"Bearer {KEY}"}
    again = LLMVerdicts(judge(api), tmp_path / "verdicts.jsonl")          # a rerun: every verdict from the cache
    assert again.compare(["q1", "q2"], ["a much longer answer", "x"], ["short", "a much longer answer"]) == outcomes
    assert again.requests == 0 and len(api.requests) == 6
    assert KEY not in caplog.text and KEY not in (tmp_path / "verdicts.jsonl").read_text()
    assert "Retrying request" in caplog.text   # the openai client's own retry, logged


def test_position_bias_becomes_a_tie(api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    api.biased = True                 # always "A": the two orders disagree
    assert LLMVerdicts(judge(api), tmp_path / "v.jsonl").compare(["q"], ["long answer"], ["short"]) == [0.5]


def test_errors_are_clear_and_hold_no_key(api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"\$PIT_TEST_JUDGE_KEY, which is not set"):
        judge(api)                                                     # at construction: before any training
    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    api.fail, api.fail_status = 1, 401                                    # not retried; the body echoes the key
    with pytest.raises(UserError, match="HTTP 401") as error:
        LLMVerdicts(judge(api), tmp_path / "v.jsonl").compare(["q"], ["a"], ["b"])
    assert KEY not in str(error.value) and "***" in str(error.value)
    api.fail, api.fail_status = 10, 503
    with pytest.raises(UserError, match="HTTP 503 after 3 tries"):
        LLMVerdicts(judge(api, max_retries=2), tmp_path / "w.jsonl").compare(["q"], ["a"], ["b"])


def test_a_verdict_line_cut_short_is_skipped_and_asked_again(api: FakeAPI, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A kill mid-append leaves half a line: the next run says so, skips it and asks that question again."""
    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    cache = tmp_path / "verdicts.jsonl"
    LLMVerdicts(judge(api), cache).compare(["q1"], ["long answer"], ["short"])
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])   # the second order's line cut short
    again = LLMVerdicts(judge(api), cache)
    assert again.damaged_lines == 1 and "skipped 1 damaged lines" in caplog.text
    assert again.compare(["q1"], ["long answer"], ["short"]) == [1.0] and again.requests == 1


def test_processes_append_verdicts_under_one_file_lock(api: FakeAPI, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends take the cache file's lock, which another process (here: another open of it) can hold."""
    from filelock import FileLock

    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    cache = tmp_path / "verdicts.jsonl"
    verdicts = LLMVerdicts(judge(api), cache)
    other = FileLock(f"{cache}.lock")
    other.acquire()
    with pytest.raises(TimeoutError):
        verdicts.file_lock.acquire(timeout=0.2)
    other.release()
    assert verdicts.compare(["q"], ["long answer"], ["short"]) == [1.0]
    assert len(cache.read_text().splitlines()) == 2


def test_a_null_or_unparsable_reply_is_no_verdict_counted_and_reported(api: FakeAPI, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`content: null` (a refusal or a filtered reply) and prose are "no verdict": a tie for that order, counted
    and logged, never a traceback."""
    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    api.replies = [None, "I cannot compare these."]   # both orders of the first pair
    verdicts = LLMVerdicts(judge(api, concurrency=1), tmp_path / "v.jsonl")
    assert verdicts.compare(["q1", "q2"], ["long answer", "long answer"], ["short", "short"]) == [0.5, 1.0]
    assert verdicts.no_verdicts == 2 and "2 of 4 answers held no verdict" in caplog.text


def test_the_client_is_an_optional_extra_named_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("PIT_TEST_JUDGE_KEY", KEY)
    monkeypatch.setitem(sys.modules, "openai", None)   # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'pit\[llm\]'"):
        LLMJudge(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="PIT_TEST_JUDGE_KEY")
