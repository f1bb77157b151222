"""A set run through the Batch API (`--batch`): oaievalset runs our oaieval against a
loopback server that serves the Files and Batches endpoints as the real `openai` package
calls them. No chat request goes out directly, each request is sent once, and the records
are those of a direct run with the same answers: after a kill -9 of everything while a
batch is in flight too, and when a batch fails some of its lines."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
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

from oaievalset.prices import format_cost

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


def run_batched(
    api: BatchAPI, tmp_path: Path, registry: list[str], **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`oaievalset m both --batch` against a server with the Batch API `api`; its result,
    and the folder of its progress file."""
    with ChatServer(answer_fn=answer, models=("m",), batch_api=api).start() as server:
        progress = tmp_path / "batch"
        env = {**engine_env(server, progress), **env}
        result = run_cli(["m", "both", *registry, "--batch"], env)
    return result, progress


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
    with ChatServer(answer_fn=answer, models=("m",)).start() as server:
        progress = tmp_path / "direct"
        result = run_cli(["m", "both", *registry], engine_env(server, progress), timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == REQUESTS
    return records(progress)


# `3 batches (1 in progress, 2 done), 50/60 requests ended`, on the progress lines.
BATCHES = re.compile(r"(\d+) batch(?:es)? \(([^)]*)\), (\d+)/(\d+) requests ended")


def test_a_set_through_the_batch_api_asks_nothing_directly_and_scores_alike(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=1.0)
    with ChatServer(answer_fn=answer, models=("m",), batch_api=api).start() as server:
        progress = tmp_path / "batch"
        prices = tmp_path / "prices.yaml"
        prices.write_text("m: {input: 2, output: 8}\n")
        env = {**engine_env(server, progress), "OAIEVALSET_PROGRESS_EVERY": "0.2"}
        result = run_cli(["m", "both", *registry, "--batch", "--prices", str(prices)], env)
    assert result.returncode == 0, result.stderr
    # The progress lines count the batches as they go: one of each eval's rounds at a time.
    seen = [(int(m[0]), m[1], int(m[2]), int(m[3])) for m in BATCHES.findall(result.stderr)]
    assert any("in progress" in states for _, states, _, _ in seen), result.stderr
    assert max(created for created, _, _, _ in seen) == 3, seen
    ended = [n for _, _, n, _ in seen]
    assert ended == sorted(ended) and all(n <= total <= REQUESTS for _, _, n, total in seen)
    # The table: what went through batches, and its cost at half the price.
    for entry in report_of(progress)["evals"]:
        usage = entry["usage"]
        cost = (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 4) / 1e6
        row = next(line for line in result.stderr.splitlines() if line.startswith(entry["eval"]))
        batches = entry["batch"]
        assert f"{batches['requests']} in {batches['batches']}" in row, row
        assert format_cost(cost) in row.split(), (row, cost)
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
    with ChatServer(answer_fn=answer, models=("m",), batch_api=api).start() as server:
        progress = tmp_path / "batch"
        env = engine_env(server, progress)
        run = start(["m", "both", *registry, "--batch", "-j", "2"], env, new_session=True)
        wait_for(lambda: len(api.batches) == 2, timeout=60)  # both evals' first batches
        os.killpg(run.pid, signal.SIGKILL)  # oaievalset, the evals: all at once
        run.communicate()
        assert all(b["status"] in ("validating", "in_progress") for b in api.batches.values())
        # The Match eval's state file is lost too: its batch is found by its metadata.
        state = progress / "m.both.progress.d" / "answers"
        (state / "many.dev.v0.jsonl.batches").unlink()
        plan = run_cli(["m", "both", *registry, "--batch", "--plan", "--json"], env)
        again = run_cli(["m", "both", *registry, "--batch"], env, timeout=120)
    shown = {c["eval"]: c.get("batches") for c in json.loads(plan.stdout)["commands"]}
    assert shown["many.dev.v0"] is None and shown["graded.dev.v0"]["running"] == 1, shown
    assert json.loads(plan.stdout)["batch"] is True
    assert again.returncode == 0, again.stderr
    logs = "".join(log.read_text() for log in (state.parent / "logs").glob("many*.log"))
    assert "of this run, found on the server" in logs
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
    result, progress = run_batched(api, tmp_path, registry)
    assert result.returncode == 0, result.stderr
    assert failed, "some lines failed"
    sent = Counter(api.submitted)
    assert {k for k, n in sent.items() if n == 2} == failed and max(sent.values()) == 2
    assert len(sent) == REQUESTS
    assert records(progress) == direct


def test_batches_are_split_at_the_size_asked_for(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=0.1)
    result, progress = run_batched(api, tmp_path, registry, OAIEVAL_BATCH_SIZE="15")
    assert result.returncode == 0, result.stderr
    sizes = [b["request_counts"]["total"] for b in api.batches.values()]
    assert sizes == [15, 15, 10, 10, 10], "the Match eval's 40, then the graded eval's rounds"
    assert Counter(api.submitted).most_common(1)[0][1] == 1 and len(api.submitted) == REQUESTS
    assert records(progress) == direct


def test_an_expired_batch_keeps_what_it_answered_and_sends_only_the_rest(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=0.1, expire_after=15)
    result, progress = run_batched(api, tmp_path, registry)
    assert result.returncode == 0, result.stderr
    assert any(b["status"] == "expired" for b in api.batches.values())
    assert len(set(api.submitted)) == REQUESTS
    # Each batch answers its first 15 lines: the Match eval's 40 go in 15 + 15 + 10.
    assert len(api.submitted) == REQUESTS + 25 + 10 + 0, Counter(api.submitted)
    assert records(progress) == direct


def test_a_failed_batch_says_why_and_one_that_answered_nothing_is_sent_again(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    # The first batch (the Match eval's) fails at validation, which stops the set as a
    # failed eval does; the next (its requests again) completes with neither an output
    # nor an error file, so they go a third time.
    api = BatchAPI(delay=0.1, fail_batches=1, no_output=2)
    with ChatServer(answer_fn=answer, models=("m",), batch_api=api).start() as server:
        progress = tmp_path / "batch"
        env = engine_env(server, progress)
        first = run_cli(["m", "both", *registry, "--batch"], env)
        again = run_cli(["m", "both", *registry, "--batch"], env)
    assert first.returncode == 1, first.stderr
    failed = next(iter(api.batches))
    why = f"batch {failed} failed: the input is not valid (invalid_request, line 1)"
    assert why in first.stderr.splitlines()[-2], first.stderr  # the failure's summary
    assert again.returncode == 0, again.stderr
    assert "completed with no output file; its requests are sent again" in again.stderr
    assert server.requests == []
    sent = Counter(api.submitted)
    assert len(sent) == REQUESTS
    assert sorted(Counter(sent.values()).items()) == [(1, 2 * GRADED_SAMPLES), (3, MATCH_SAMPLES)]
    assert records(progress) == direct


def test_ctrl_c_leaves_the_batches_running_and_cancel_batches_cancels_them(
    tmp_path: Path, registry: list[str], direct: dict[str, Any]
) -> None:
    api = BatchAPI(delay=60.0)
    with ChatServer(answer_fn=answer, models=("m",), batch_api=api).start() as server:
        progress = tmp_path / "batch"
        env = engine_env(server, progress)
        run = start(["m", "both", *registry, "--batch", "-j", "2"], env, new_session=True)
        wait_for(lambda: len(api.batches) == 2, timeout=60)
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole group
        _, err = run.communicate(timeout=60)
        assert run.returncode == 130, err
        assert "go on (they are paid for)" in err and "--cancel-batches cancels them" in err
        assert all(b["status"] == "in_progress" for b in api.batches.values()), "not cancelled"
        plan = run_cli(["m", "both", *registry, "--plan"], env)
        # The Match eval's state file is lost: its batch is found by its metadata.
        (progress / "m.both.progress.d" / "answers" / "many.dev.v0.jsonl.batches").unlink()
        direct_run = run_cli(["m", "both", *registry], env)  # would pay for them twice
        cancel = run_cli(["m", "both", *registry, "--cancel-batches"], env)
        wait_for(lambda: all(b["status"] == "cancelled" for b in api.batches.values()))
        cancel_again = run_cli(["m", "both", *registry, "--cancel-batches"], env)
        api.delay = 0.1  # the batches sent from now on answer at once
        again = run_cli(["m", "both", *registry, "--batch"], env, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("1 batch (1 in progress), 0/") == 2, plan.stdout
    assert direct_run.returncode == 2 and server.requests == [], direct_run.stderr
    assert "graded.dev.v0: batches of an earlier run with --batch are still running" in (
        direct_run.stderr
    )
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.splitlines() == [
        "many.dev.v0: cancelled 1 batch(es)",
        "graded.dev.v0: cancelled 1 batch(es)",
    ]
    assert cancel_again.stdout.splitlines() == [
        "many.dev.v0: no batch running",
        "graded.dev.v0: no batch running",
    ], cancel_again.stderr
    assert again.returncode == 0, again.stderr
    # The cancelled batches answered nothing: their requests went again, once.
    assert len(set(api.submitted)) == REQUESTS and max(Counter(api.submitted).values()) == 2
    assert records(progress) == direct


def test_oaieval_alone_through_batches_with_several_models_asks_what_a_direct_run_asks(
    tmp_path: Path, registry: list[str]
) -> None:
    """`OAIEVAL_BATCH=1 oaieval A,B,GRADER eval`: each model's answers and the grades in
    batches, the record of a direct run; its own journal is gone once the record is."""
    root = Path(registry[1])
    with open(root / "modelgraded" / "specs.yaml", "a") as f:
        f.write(
            'best:\n  prompt: "Which is best? {completion}"\n  choice_strings: from_n\n'
            "  input_outputs: {input: completion}\n"
            '  output_template: "{i}. {output}\\n"\n'
        )
    with open(root / "evals" / "e.yaml", "a") as f:
        f.write(
            "best:\n  id: best.dev.v0\nbest.dev.v0:\n"
            "  class: evals.elsuite.modelgraded.classify:ModelBasedClassify\n"
            "  args:\n    samples_jsonl: graded.jsonl\n    modelgraded_spec: best\n"
            "    multicomp_n: from_models\n    eval_type: classify\n"
        )

    def pick(request: dict[str, Any]) -> str:
        content = str(request["messages"][-1]["content"])
        return "2" if content.startswith("Which is best?") else f"{request['model']} says hi"

    oaieval = str(Path(sys.executable).parent / "oaieval")
    argv = [oaieval, "m,m2,g", "best", *registry]
    runs = {}
    for mode in ("direct", "batch"):
        api = BatchAPI(delay=0.1)
        with ChatServer(answer_fn=pick, models=("m", "m2", "g"), batch_api=api).start() as server:
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": server.base_url,
                "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "OAIEVAL_BATCH_POLL": "0.2",
            }
            env.pop("OAIEVAL_ANSWER_JOURNAL", None)
            if mode == "batch":
                env["OAIEVAL_BATCH"] = "1"
            record = tmp_path / f"{mode}.jsonl"
            ran = subprocess.run(
                [*argv, "--record_path", str(record)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert ran.returncode == 0, ran.stderr
        asked = server.requests if mode == "direct" else api.bodies
        runs[mode] = (per_sample(record), sorted(json.dumps(b, sort_keys=True) for b in asked))
        if mode == "batch":
            assert server.requests == []
            # One round per model of a sample, then the grades: three batches.
            assert len(api.batches) == 3 and len(api.bodies) == 3 * GRADED_SAMPLES
    # Cancel mode with nothing to cancel: said plainly, and nothing left behind.
    with ChatServer(
        answer_fn=pick, models=("m", "m2", "g"), batch_api=BatchAPI()
    ).start() as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        env.update({"XDG_CACHE_HOME": str(tmp_path / "cache"), "OAIEVAL_BATCH": "cancel"})
        env.pop("OAIEVAL_ANSWER_JOURNAL", None)
        cancel = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled 0 batch(es) of this eval; no record written" in cancel.stderr
    assert runs["batch"] == runs["direct"]
    assert runs["direct"][0][1]["counts/2"] == GRADED_SAMPLES, "the grader picked the second"
    journals = tmp_path / "cache" / "oaievalset" / "batches"
    assert not journals.exists() or list(journals.iterdir()) == [], "recorded: its journal goes"
