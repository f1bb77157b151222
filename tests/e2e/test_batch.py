"""A set run through the Batch API (`--batch`): oaievalset runs our oaieval against a
loopback server that serves the Files and Batches endpoints as the real `openai` package
calls them. No chat request goes out directly, each request is sent once, and the records
are those of a direct run with the same answers: after a kill -9 of everything while a
batch is in flight too, and when a batch fails some of its lines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers.batch_api import BatchAPI
from helpers.chat_server import ChatServer
from helpers.fake import run_cli
from helpers.processes import start, wait_for
from helpers.records import per_sample

MATCH_SAMPLES = 40
GRADED_SAMPLES = 10
REQUESTS = MATCH_SAMPLES + 2 * GRADED_SAMPLES  # a graded sample: its answer, then its grade

SPECS = """\
right:
  prompt: "Is this right? {completion}"
  choice_strings: ["Yes", "No"]
  choice_scores: {"Yes": 1, "No": 0}
  input_outputs: {input: completion}
"""


def answer(request: dict[str, Any]) -> str:
    """q7 -> a7 (every third wrong); a grading prompt -> Yes or No by a hash of it."""
    content = str(request["messages"][-1]["content"])
    if content.startswith("Is this right?"):
        return "Yes" if hashlib.sha256(content.encode()).digest()[0] % 2 else "No"
    number = int(content[1:])
    return f"a{number}" if number % 3 else "wrong"


@pytest.fixture
def registry(tmp_path: Path) -> list[str]:
    """A set of a Match eval and a model-graded eval."""
    root = tmp_path / "registry"
    for folder in ("evals", "eval_sets", "modelgraded", "data"):
        (root / folder).mkdir(parents=True)
    (root / "modelgraded" / "specs.yaml").write_text(SPECS)
    (root / "evals" / "e.yaml").write_text(
        "many:\n  id: many.dev.v0\nmany.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
        "  args:\n    samples_jsonl: many.jsonl\n"
        "graded:\n  id: graded.dev.v0\ngraded.dev.v0:\n"
        "  class: evals.elsuite.modelgraded.classify:ModelBasedClassify\n"
        "  args:\n    samples_jsonl: graded.jsonl\n    modelgraded_spec: right\n"
        "    eval_type: classify\n"
    )
    (root / "eval_sets" / "s.yaml").write_text("both:\n  evals: [many, graded]\n")
    for name, count in (("many", MATCH_SAMPLES), ("graded", GRADED_SAMPLES)):
        with open(root / "data" / f"{name}.jsonl", "w") as f:
            for i in range(count):
                sample = {"input": [{"role": "user", "content": f"q{i}"}], "ideal": f"a{i}"}
                f.write(json.dumps(sample) + "\n")
    return ["--registry_path", str(root)]


def engine_env(server: ChatServer, progress: Path) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # our oaieval
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": server.base_url,
        "OAIEVALSET_PROGRESS_DIR": str(progress),
        "OAIEVAL_BATCH_POLL": "0.2",
    }


def report_of(progress: Path) -> dict[str, Any]:
    path = progress / "m.both.progress.d" / "report.json"
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def records(progress: Path) -> dict[str, Any]:
    """Each eval's record, by sample, and its final report."""
    return {e["eval"]: per_sample(Path(e["record"])) for e in report_of(progress)["evals"]}


@pytest.fixture
def direct(registry: list[str], tmp_path: Path) -> dict[str, Any]:
    """The records of the set run directly, on a server of its own."""
    server = ChatServer(answer_fn=answer, models=("m",)).start()
    progress = tmp_path / "direct"
    try:
        result = run_cli(["m", "both", *registry], engine_env(server, progress), timeout=120)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == REQUESTS
    return records(progress)


def test_a_set_through_the_batch_api_asks_nothing_directly_and_scores_alike(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=0.2)
    server = ChatServer(answer_fn=answer, models=("m",), batch_api=api).start()
    progress = tmp_path / "batch"
    try:
        result = run_cli(["m", "both", *registry, "--batch"], engine_env(server, progress))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert server.requests == [], "no direct chat request"
    assert len(api.submitted) == REQUESTS and len(set(api.submitted)) == REQUESTS
    assert len(api.batches) == 3, "one for the Match eval; the graded one's answers, then grades"
    assert all(b["metadata"]["set"] == "both" for b in api.batches.values())
    assert records(progress) == direct
    entries = {e["eval"]: e for e in report_of(progress)["evals"]}
    assert entries["many.dev.v0"]["batch"] == {"requests": MATCH_SAMPLES, "batches": 1}
    assert entries["graded.dev.v0"]["batch"] == {"requests": 2 * GRADED_SAMPLES, "batches": 2}
    assert "--batch" not in entries["many.dev.v0"]["command"], "recorded as a direct run"
    answers = progress / "m.both.progress.d" / "answers"
    assert sorted(os.listdir(answers)) == [], "recorded: the journals and batch states go"


def test_after_kill_9_while_a_batch_is_in_flight_the_run_takes_it_up_again(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=4.0)
    server = ChatServer(answer_fn=answer, models=("m",), batch_api=api).start()
    progress = tmp_path / "batch"
    env = engine_env(server, progress)
    try:
        run = start(["m", "both", *registry, "--batch", "-j", "2"], env, new_session=True)
        wait_for(lambda: len(api.batches) == 2, timeout=60)  # both evals' first batches
        os.killpg(run.pid, signal.SIGKILL)  # oaievalset, the evals: all at once
        run.communicate()
        assert all(b["status"] in ("validating", "in_progress") for b in api.batches.values())
        again = run_cli(["m", "both", *registry, "--batch"], env, timeout=120)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr
    assert server.requests == []
    assert Counter(api.submitted).most_common(1)[0][1] == 1, "no request sent twice"
    assert len(api.submitted) == REQUESTS
    assert records(progress) == direct


def test_only_the_lines_a_batch_failed_are_sent_again(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    failed: set[str] = set()

    def fail_once(custom_id: str, body: dict[str, Any]) -> int | None:
        if int(custom_id[:4], 16) % 5 == 0 and custom_id not in failed:  # a fifth, once
            failed.add(custom_id)
            return 500
        return None

    api = BatchAPI(delay=0.1, fail_line=fail_once)
    server = ChatServer(answer_fn=answer, models=("m",), batch_api=api).start()
    progress = tmp_path / "batch"
    try:
        result = run_cli(["m", "both", *registry, "--batch"], engine_env(server, progress))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert failed, "some lines failed"
    sent = Counter(api.submitted)
    assert {k for k, n in sent.items() if n == 2} == failed and max(sent.values()) == 2
    assert len(sent) == REQUESTS
    assert records(progress) == direct


def test_an_expired_batch_keeps_what_it_answered_and_sends_only_the_rest(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=0.1, expire_after=15)
    server = ChatServer(answer_fn=answer, models=("m",), batch_api=api).start()
    progress = tmp_path / "batch"
    try:
        result = run_cli(["m", "both", *registry, "--batch"], engine_env(server, progress))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert any(b["status"] == "expired" for b in api.batches.values())
    assert len(set(api.submitted)) == REQUESTS
    # Each batch answers its first 15 lines: the Match eval's 40 go in 15 + 15 + 10.
    assert len(api.submitted) == REQUESTS + 25 + 10 + 0, Counter(api.submitted)
    assert records(progress) == direct
