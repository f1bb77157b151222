"""An eval resumed from the middle: oaievalset runs our oaieval against a loopback server, the
run dies or fails partway, and the next run asks only what has no answer yet. The record
it writes is the one an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import REG1, Fake, run_cli
from helpers.processes import start, wait_for
from helpers.records import per_sample

SAMPLES = 300
THREADS = 10  # the engine's threads: at most this many requests are in flight
R1 = ["--registry_path", str(REG1)]


def answer(request: dict[str, Any]) -> str:
    """q17 -> a17, but every third answer is wrong: a score that checks the order."""
    number = int(request["messages"][-1]["content"][1:])
    return f"a{number}" if number % 3 else "wrong"


@pytest.fixture
def registry(tmp_path: Path) -> list[str]:
    """A set of one Match eval of SAMPLES samples."""
    root = tmp_path / "registry"
    for folder in ("evals", "eval_sets", "data/many"):
        (root / folder).mkdir(parents=True)
    (root / "evals" / "many.yaml").write_text(
        "many:\n  id: many.dev.v0\nmany.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
        "  args:\n    samples_jsonl: many/samples.jsonl\n"
    )
    (root / "eval_sets" / "many.yaml").write_text("many-set:\n  evals: [many]\n")
    with open(root / "data" / "many" / "samples.jsonl", "w") as f:
        for i in range(SAMPLES):
            sample = {"input": [{"role": "user", "content": f"q{i}"}], "ideal": f"a{i}"}
            f.write(json.dumps(sample) + "\n")
    return ["--registry_path", str(root)]


def engine_env(server: ChatServer, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # our oaieval
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": server.base_url,
        "EVALS_THREADS": str(THREADS),
        **extra,
    }


def state_of(progress: Path) -> Path:
    return progress / "m.many-set.progress.d"


def journal_of(progress: Path) -> Path:
    return state_of(progress) / "answers" / "many.dev.v0.jsonl"


def kept(progress: Path) -> int:
    """The answers in the eval's journal (its first line says what run it is for)."""
    return len(journal_of(progress).read_text().splitlines()) - 1


def report_of(progress: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((state_of(progress) / "report.json").read_text())
    return report


def uninterrupted(registry: list[str], tmp_path: Path) -> tuple[dict[str, list[Any]], Any]:
    """The record of the same set run once, without trouble, on a server of its own."""
    server = ChatServer(answer_fn=answer, models=("m",)).start()
    progress = tmp_path / "uninterrupted"
    try:
        env = engine_env(server, OAIEVALSET_PROGRESS_DIR=str(progress))
        result = run_cli(["m", "many-set", *registry], env, timeout=120)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    return per_sample(Path(report_of(progress)["evals"][0]["record"]))


def test_after_kill_9_of_everything_the_resume_asks_only_what_had_no_answer(
    isolated: Path, tmp_path: Path, registry: list[str]
) -> None:
    server = ChatServer(answer_fn=answer, latency=0.03, models=("m",)).start()
    try:
        env = engine_env(server)
        run = start(["m", "many-set", *registry], env, new_session=True)
        wait_for(lambda: len(server.requests) >= SAMPLES // 3, timeout=60)
        os.killpg(run.pid, signal.SIGKILL)  # oaievalset, its guardian, the eval: all at once
        run.communicate()
        asked_first = server.settled()  # what the killed run sent, all of it
        answers = kept(isolated)
        assert asked_first - THREADS <= answers <= asked_first  # lost: what was in flight
        assert answers < SAMPLES - THREADS, "killed midway"
        resumed = run_cli(["m", "many-set", *registry], env, timeout=120)
        asked_again = len(server.requests) - asked_first
    finally:
        server.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert asked_again == SAMPLES - answers  # each sample without an answer, once
    assert asked_first + asked_again <= SAMPLES + THREADS
    report = report_of(isolated)
    entry = report["evals"][0]
    assert entry["answers_reused"] == {"reused": answers, "of": SAMPLES, "tokens": 2 * answers}
    assert report["answers_reused_this_run"] == entry["answers_reused"]
    assert f"{answers}/{SAMPLES}" in resumed.stderr  # the table's `reused` column
    assert f"{2 * answers:,} of them reused" in resumed.stderr
    assert not journal_of(isolated).exists(), "recorded: its journal is removed"
    # The record is what an uninterrupted run writes, reused answers' usage included.
    assert per_sample(Path(entry["record"])) == uninterrupted(registry, tmp_path)


def failing_after(answered: int) -> tuple[ChatServer, dict[str, bool]]:
    """A server that answers `answered` requests, then fails every one (HTTP 503) until
    healed (`state["healed"] = True`)."""
    state = {"healed": False}

    def fail(number: int, request: dict[str, Any]) -> int | None:
        return None if state["healed"] or number < answered else 503

    return ChatServer(answer_fn=answer, fail_when=fail, models=("m",)).start(), state


def test_an_eval_that_failed_when_the_server_did_asks_the_rest_of_a_healthy_one(
    isolated: Path, tmp_path: Path, registry: list[str]
) -> None:
    server, state = failing_after(100)
    try:
        env = engine_env(server, OAIEVAL_RETRY_BUDGET="0.5")
        failed = run_cli(["m", "many-set", *registry], env, timeout=120)
        assert failed.returncode == 1, failed.stderr
        answers = kept(isolated)  # less what was in flight when the eval gave up
        assert 100 - THREADS <= answers <= 100, "the answers kept, and no error"
        before = server.settled()
        state["healed"] = True
        resumed = run_cli(["m", "many-set", *registry], env, timeout=120)
        asked_again = len(server.requests) - before
    finally:
        server.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert asked_again == SAMPLES - answers
    entry = report_of(isolated)["evals"][0]
    assert entry["answers_reused"] == {"reused": answers, "of": SAMPLES, "tokens": 2 * answers}
    log = Path(entry["log"]).read_text()
    assert f"Answers: {answers} of {SAMPLES} reused from {journal_of(isolated)}" in log
    assert per_sample(Path(entry["record"])) == uninterrupted(registry, tmp_path)


@pytest.mark.parametrize(
    ("then", "why"),
    [
        (["--seed", "7"], "was written for other arguments (seed differs); set aside"),
        (["--no-resume"], None),
    ],
)
def test_a_journal_of_other_arguments_or_before_no_resume_is_never_used(
    isolated: Path, registry: list[str], then: list[str], why: str | None
) -> None:
    server, state = failing_after(100)
    try:
        env = engine_env(server, OAIEVAL_RETRY_BUDGET="0.5")
        failed = run_cli(["m", "many-set", *registry], env, timeout=120)
        assert failed.returncode == 1, failed.stderr
        before = server.settled()
        state["healed"] = True
        again = run_cli(["m", "many-set", *registry, *then], env, timeout=120)
        asked_again = len(server.requests) - before
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr
    assert asked_again == SAMPLES, "all asked afresh"
    entry = report_of(isolated)["evals"][0]
    assert entry["answers_reused"] == {"reused": 0, "of": SAMPLES, "tokens": 0}
    if why is not None:
        assert why in Path(entry["log"]).read_text()
    answers = journal_of(isolated).parent
    assert sorted(os.listdir(answers)) == [], "recorded: its journal, and one set aside, go"


def test_the_answer_cache_answers_the_same_requests_of_a_later_run_only_when_asked_for(
    isolated: Path, tmp_path: Path, registry: list[str]
) -> None:
    cache = tmp_path / "answer-cache"
    server = ChatServer(answer_fn=answer, models=("m",)).start()
    asked = []
    try:
        env = engine_env(server)
        for extra in (["--answer-cache", str(cache)],
                      ["--no-resume", "--answer-cache", str(cache)],
                      ["--no-resume"]):  # fmt: skip
            before = server.settled()
            result = run_cli(["m", "many-set", *registry, *extra], env, timeout=120)
            assert result.returncode == 0, result.stderr
            asked.append(len(server.requests) - before)
            if "--answer-cache" in extra:
                assert f"oaievalset: answer cache: {cache} (1 eval(s), " in result.stderr
            else:
                assert "answer cache" not in result.stderr
    finally:
        server.stop()
    assert asked == [SAMPLES, 0, SAMPLES], "the second run asked nothing; the third, no cache"
    assert len((cache / "many.dev.v0.jsonl").read_text().splitlines()) == SAMPLES + 1


def test_an_answer_cache_with_another_oaieval_is_warned_about(fake: Fake, tmp_path: Path) -> None:
    result = run_cli(["dummy", "zz-chain", *R1, "--answer-cache", str(tmp_path / "c")])
    assert result.returncode == 0, result.stderr
    assert (
        f"oaievalset: warning: --answer-cache is kept by this package's oaieval; "
        f"{fake.bin / 'oaieval'} is another one, which will ask every request"
    ) in result.stderr.splitlines()
