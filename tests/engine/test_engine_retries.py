"""The engine against unhealthy servers: transient failures are retried within a budget and
the results are those of a healthy server; other failures stop at once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.records import read_record

from oaievalset.engine.cli import main as oaieval

SAMPLES = 40


def answer(request: dict[str, Any]) -> str:
    """Deterministic: right for some questions, wrong for others."""
    question = request["messages"][-1]["content"]
    digest = hashlib.sha1(question.encode()).digest()[0]
    return question.upper() if digest % 3 else "something else"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "data").mkdir()
    samples = [
        {"input": [{"role": "user", "content": f"q{i}"}], "ideal": [f"Q{i}"]}
        for i in range(SAMPLES)
    ]
    (root / "data" / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (root / "evals" / "s.yaml").write_text(
        "s-fuzzy.dev.v0:\n  class: evals.elsuite.basic.fuzzy_match:FuzzyMatch\n"
        "  args:\n    samples_jsonl: s.jsonl\n"
    )
    return root


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    chat = ChatServer(answer_fn=answer, models=("m",)).start()
    monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("EVALS_THREADS", "10")
    yield chat
    chat.stop()


def results(record: Path) -> tuple[Any, Any]:
    lines = read_record(record)
    events = [(e["sample_id"], e["type"], e["data"]) for e in lines[1:-1]]
    return events, lines[-1]["final_report"]


def run(registry: Path, tmp_path: Path, name: str) -> tuple[int, Path]:
    record = tmp_path / f"{name}.jsonl"
    args = ["m", "s-fuzzy.dev.v0", "--registry_path", str(registry), "--record_path", str(record)]
    return oaieval(args), record


@pytest.fixture
def healthy(server: ChatServer, registry: Path, tmp_path: Path) -> tuple[Any, Any]:
    code, record = run(registry, tmp_path, "healthy")
    assert code == 0 and server.failures == 0
    server.requests.clear()
    return results(record)


def thirty_percent(number: int, request: dict[str, Any]) -> int | None:
    return {1: 429, 4: 500, 7: 503}.get(number % 10)


@pytest.mark.parametrize("retry_after", [None, "0.1"], ids=["backoff", "retry-after"])
def test_thirty_percent_failures_give_the_healthy_results(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    healthy: tuple[Any, Any],
    retry_after: str | None,
) -> None:
    server.fail_when, server.retry_after = thirty_percent, retry_after
    code, record = run(registry, tmp_path, "unhealthy")
    assert code == 0
    assert server.failures >= SAMPLES * 3 // 10
    assert results(record) == healthy


@pytest.mark.parametrize("retry_after", [None, "1"], ids=["backoff", "retry-after"])
def test_a_server_that_says_429_for_a_while_then_recovers_gives_the_healthy_results(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    healthy: tuple[Any, Any],
    retry_after: str | None,
) -> None:
    server.stop()
    server.fail_for, server.fail_status, server.retry_after = 2.5, 429, retry_after
    server.start()  # the 429s last 2.5 s from now
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BASE_URL", server.base_url)
        code, record = run(registry, tmp_path, "recovering")
    assert code == 0 and server.failures >= 2
    assert results(record) == healthy


def test_after_a_429_the_threads_slow_down_together(
    server: ChatServer, registry: Path, tmp_path: Path, healthy: tuple[Any, Any]
) -> None:
    server.stop()
    server.fail_for, server.fail_status, server.retry_after = 1.5, 429, "1"
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BASE_URL", server.base_url)
        code, record = run(registry, tmp_path, "throttled")
    assert code == 0 and results(record) == healthy
    # Ten threads each retrying on its own would send ten requests into the pause again;
    # held together, the first ten 429s are followed by one probe at a time.
    assert 1 <= server.failures <= 13, server.failures


@pytest.mark.parametrize("kind", ["reset", "timeout"])
def test_broken_connections_and_timeouts_are_retried(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    healthy: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    if kind == "reset":
        server.fail_when = lambda number, request: 0 if number < 3 else None
    else:
        monkeypatch.setenv("OAIEVAL_REQUEST_TIMEOUT", "0.5")
        server.latency_fn = lambda number: 3.0 if number < 3 else 0.0
    code, record = run(registry, tmp_path, kind)
    assert code == 0
    assert len(server.requests) >= SAMPLES + 3
    assert results(record) == healthy


@pytest.mark.parametrize(
    ("status", "says"),
    [(400, "HTTP 400"), (401, "refused the API key"), (422, "HTTP 422")],
)
def test_failures_that_retrying_cannot_mend_stop_at_once(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    says: str,
) -> None:
    server.fail_status = status
    code, record = run(registry, tmp_path, "refused")
    assert code == 1 and not record.exists()
    assert len(server.requests) <= 10, "no request was tried twice"
    assert says in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_request_gives_up_when_its_retry_budget_is_spent(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OAIEVAL_RETRY_BUDGET", "2")
    server.fail_status = 500
    code, record = run(registry, tmp_path, "spent")
    assert code == 1 and not record.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "gave up on model 'm'" in err and "HTTP 500" in err and "OAIEVAL_RETRY_BUDGET" in err


def test_a_bad_retry_budget_is_a_clear_error(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: ChatServer
) -> None:
    monkeypatch.setenv("OAIEVAL_RETRY_BUDGET", "soon")
    code, _ = run(registry, tmp_path, "bad")
    assert code == 2


@pytest.mark.parametrize("threads", ["1", "10"], ids=["sequential", "threaded"])
def test_a_failed_threaded_run_does_not_stop_the_next_run_in_the_process(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    threads: str,
) -> None:
    server.fail_status = 401  # one thread fails, the run stops the others
    code, _ = run(registry, tmp_path, "refused")
    assert code == 1
    again = ChatServer(answer_fn=answer, models=("m",), retry_after="0.1")
    again.fail_when = lambda number, request: 429 if number == 0 else None
    again.start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", again.base_url)
        monkeypatch.setenv("EVALS_THREADS", threads)
        code, record = run(registry, tmp_path, "after")
    finally:
        again.stop()
    assert code == 0 and again.failures == 1  # the 429 was retried, not given up on
    assert len(again.requests) == SAMPLES + 1 and record.exists()


def test_the_requests_of_a_failed_run_do_not_go_on_in_the_background(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    # The first request is refused while the other threads wait for its answer: once the
    # run has failed, they send nothing (one may have started in the moment it took).
    server.fail_status, server.latency = 401, 0.3
    code, _ = run(registry, tmp_path, "refused")
    assert code == 1
    time.sleep(1.5)
    assert len(server.requests) <= 2, len(server.requests)
