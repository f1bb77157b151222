"""The engine asks, records and scores as the original's oaieval does: request bodies per
class, string prompts, sampling events, usage sums, samples files, and its log lines;
against a loopback server through the real `openai` package."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.records import read_record

from oaievalset.engine.cli import main as oaieval
from oaievalset.engine.recorder import sum_usage

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]


def write_registry(root: Path, samples: list[dict[str, Any]] | None = None) -> Path:
    (root / "evals").mkdir(parents=True)
    (root / "data" / "s").mkdir(parents=True)
    samples = samples or [
        {"input": CHAT, "ideal": "Paris"},
        {"input": "Say the capital of France.", "ideal": ["Paris", "paris"]},
    ]
    (root / "data" / "s" / "samples.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in samples)
    )
    classes = {
        "match": "evals.elsuite.basic.match:Match",
        "includes": "evals.elsuite.basic.includes:Includes",
        "fuzzy": "evals.elsuite.basic.fuzzy_match:FuzzyMatch",
        "json": "evals.elsuite.basic.json_match:JsonMatch",
    }
    (root / "evals" / "r.yaml").write_text(
        "".join(
            f"r-{name}.dev.v0:\n  class: {cls}\n  args:\n    samples_jsonl: s/samples.jsonl\n"
            for name, cls in classes.items()
        )
    )
    return root


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return write_registry(tmp_path / "reg")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    chat = ChatServer(answers={"Capital?": "Paris"}, default_answer="Paris", models=("m",))
    chat.start()
    monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield chat
    chat.stop()


def run(registry: Path, tmp_path: Path, eval_name: str, *args: str, model: str = "m") -> Path:
    record = tmp_path / f"{eval_name}-{time.monotonic_ns()}.jsonl"
    code = oaieval(
        [model, eval_name, "--registry_path", str(registry), "--record_path", str(record), *args]
    )
    assert code == 0
    return record


def sampling_events(record: Path) -> list[dict[str, Any]]:
    return [line["data"] for line in read_record(record) if line.get("type") == "sampling"]


@pytest.mark.parametrize(
    ("eval_name", "params"),
    [
        ("r-match.dev.v0", {"temperature": 0.0}),
        ("r-includes.dev.v0", {}),
        ("r-fuzzy.dev.v0", {"temperature": 0.0, "max_tokens": 100}),
        ("r-json.dev.v0", {"temperature": 0.0, "max_tokens": 512}),
    ],
)
def test_each_class_sends_the_parameters_the_original_sends(
    server: ChatServer, tmp_path: Path, eval_name: str, params: dict[str, Any]
) -> None:
    # Ideal answers that are JSON too, for JsonMatch.
    samples: list[dict[str, Any]] = [
        {"input": CHAT, "ideal": '"Paris"'},
        {"input": "Say the capital of France.", "ideal": ['"Paris"', '"paris"']},
    ]
    registry = write_registry(tmp_path / "reg", samples)
    run(registry, tmp_path, eval_name)
    assert len(server.requests) == 2
    for request in server.requests:
        assert {k: v for k, v in request.items() if k not in ("model", "messages")} == params
    by_prompt = {json.dumps(r["messages"]) for r in server.requests}
    # A string input is sent as one system message, as the original sends it.
    assert json.dumps([{"role": "system", "content": "Say the capital of France."}]) in by_prompt
    assert json.dumps(CHAT) in by_prompt


def test_max_tokens_and_completion_args_change_the_request(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    run(registry, tmp_path, "r-fuzzy.dev.v0", "--extra_eval_params", "max_tokens=7")
    assert {r["max_tokens"] for r in server.requests} == {7}
    server.requests.clear()
    run(registry, tmp_path, "r-includes.dev.v0", "--completion_args", "top_p=0.5,seed=3")
    assert all(r["top_p"] == 0.5 and r["seed"] == 3 for r in server.requests)


def test_api_base_and_api_key_in_completion_args_set_up_the_client(
    server: ChatServer, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = server.base_url
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_API_KEY")
    args = f"api_base={base},api_key=sk-other"
    run(registry, tmp_path, "r-includes.dev.v0", "--completion_args", args)
    assert len(server.requests) == 2
    assert all(set(r) == {"model", "messages"} for r in server.requests)


def test_sampling_events_keep_the_answers_model_and_usage_the_server_gave(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    server.usage = lambda request: {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": None},
        "prompt_tokens_details": None,
    }
    record = run(registry, tmp_path, "r-match.dev.v0")
    events = sampling_events(record)
    assert len(events) == 2
    for event in events:
        assert list(event) == ["prompt", "sampled", "model", "usage"]
        assert event["sampled"] == ["Paris"] and event["model"] == "m"
        assert event["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1
        assert event["usage"]["prompt_tokens"] == 10
    report = read_record(record)[-1]["final_report"]
    assert report["usage_prompt_tokens"] == 20
    assert report["usage_completion_tokens"] == 4
    assert report["usage_total_tokens"] == 24
    # The nested counts are summed inside; those the server left out (recorded as null in
    # the package's usage object, as the original records it) sum to 0.
    details = report["usage_completion_tokens_details"]
    assert details["reasoning_tokens"] == 2 and details["audio_tokens"] == 0
    assert report["usage_prompt_tokens_details"] == 0


def test_missing_and_null_usage_fields_never_crash_the_report(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    usages = iter([{"prompt_tokens": 3, "total_tokens": 3}, {"completion_tokens": None}])
    server.usage = lambda request: next(usages)
    report = read_record(run(registry, tmp_path, "r-includes.dev.v0"))[-1]["final_report"]
    assert report["usage_prompt_tokens"] == 3 and report["usage_total_tokens"] == 3
    assert report["usage_completion_tokens"] == 0
    server.usage = lambda request: None
    report = read_record(run(registry, tmp_path, "r-includes.dev.v0"))[-1]["final_report"]
    assert not any(key.startswith("usage_") for key in report)


def test_usage_sums_follow_the_order_first_seen_and_add_nested_counts() -> None:
    total = sum_usage(
        [
            {"b": 1, "a": None, "d": {"x": 1}},
            {"a": 2, "c": 5, "d": {"x": 2, "y": 3}},
            {"d": None, "b": 1},
        ]
    )
    assert list(total) == ["b", "a", "d", "c"]
    assert total == {"b": 2, "a": 2, "d": {"x": 3, "y": 3}, "c": 5}


def test_dummy_records_no_sampling_event_and_no_usage(registry: Path, tmp_path: Path) -> None:
    record = run(registry, tmp_path, "r-match.dev.v0", model="dummy")
    lines = read_record(record)
    assert [line["type"] for line in lines[1:-1]] == ["match", "match"]
    assert set(lines[-1]["final_report"]) == {"accuracy", "boostrap_std"}


def test_test_match_asks_what_the_original_asks(server: ChatServer, tmp_path: Path) -> None:
    record = tmp_path / "tm.jsonl"
    assert oaieval(["m", "test-match", "--record_path", str(record)]) == 0
    asked = sorted(r["messages"][-1]["content"] for r in server.requests)
    assert asked == ["Once upon a ", "OpenAI was founded in 20", "The first US president was "]
    lines = read_record(record)
    expected = sorted(e["data"]["expected"] for e in lines if e.get("type") == "match")
    assert expected == ["15", "George Washington", "time"]


@pytest.mark.parametrize("first_fails", [False, True], ids=["healthy", "first-try-fails"])
def test_after_the_first_answer_the_requests_overlap(
    server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_fails: bool
) -> None:
    # Six samples, ten threads, half a second an answer: 3 s one at a time, 1 s overlapped.
    monkeypatch.setenv("EVALS_THREADS", "10")
    monkeypatch.setenv("OAIEVAL_REQUEST_TIMEOUT", "30")
    server.latency = 0.5
    if first_fails:  # a transient failure is no answer: the next request goes alone too
        server.fail_when = lambda number, request: 500 if number == 0 else None
    samples = [{"input": f"Capital {i}?", "ideal": "Paris"} for i in range(6)]
    run(write_registry(tmp_path / "reg", samples), tmp_path, "r-includes.dev.v0")
    alone = 2 if first_fails else 1
    assert len(server.requests) == 6 + server.failures
    # Alone until an answer is read (the openai package builds its response types then) ...
    assert server.answered_before[:alone] == list(range(alone))
    assert min(server.answered_before[alone:]) >= alone
    # ... and then all at once. The server counts them, as wall time on a loaded machine
    # would not tell: one at a time, it never has two.
    assert server.most_in_flight >= 3, server.most_in_flight


def test_samples_may_be_compressed_or_a_folder_and_blank_lines_are_skipped(
    server: ChatServer, tmp_path: Path
) -> None:
    root = write_registry(tmp_path / "reg")
    samples = root / "data" / "s" / "samples.jsonl"
    lines = samples.read_text().splitlines()
    folder = root / "data" / "parts"
    folder.mkdir()
    (folder / "b.jsonl").write_text(lines[1] + "\n\n")
    (folder / "a.jsonl").write_text("\n" + lines[0] + "\n")
    (folder / "ignored.txt").write_text("not samples")
    with gzip.open(root / "data" / "s" / "samples.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n\n")
    (root / "evals" / "more.yaml").write_text(
        "r-gz.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n"
        "  args:\n    samples_jsonl: s/samples.jsonl.gz\n"
        "r-folder.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n"
        "  args:\n    samples_jsonl: parts\n"
    )
    plain = run(root, tmp_path, "r-includes.dev.v0")
    for name in ("r-gz.dev.v0", "r-folder.dev.v0"):
        other = run(root, tmp_path, name)
        assert matches(other) == matches(plain)


def matches(record: Path) -> list[Any]:
    return [
        (line["sample_id"].rsplit(".", 1)[1], line["data"])
        for line in read_record(record)
        if line.get("type") == "match"
    ]


@pytest.mark.parametrize(("suffix", "package"), [(".lz4", "lz4"), (".zst", "zstandard")])
def test_a_compression_whose_package_is_missing_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, package: str
) -> None:
    pytest.importorskip("sys")  # always there: the branch below decides
    root = write_registry(tmp_path / "reg")
    (root / "data" / "s" / f"x.jsonl{suffix}").write_bytes(b"\x00")
    (root / "evals" / "c.yaml").write_text(
        f"r-c.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n"
        f"  args:\n    samples_jsonl: s/x.jsonl{suffix}\n"
    )
    code = oaieval(["dummy", "r-c.dev.v0", "--registry_path", str(root), "--dry-run"])
    err = capsys.readouterr().err
    try:
        __import__(package)
    except ImportError:
        assert code == 2 and f"needs the '{package}' package; pip install {package}" in err
    else:
        assert code == 2 and "cannot read samples" in err  # installed: the bytes are not valid
    assert "Traceback" not in err


def test_fuzzy_match_with_no_ideal_answer_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_registry(tmp_path / "reg", [{"input": CHAT, "ideal": []}])
    code = oaieval(["dummy", "r-fuzzy.dev.v0", "--registry_path", str(root), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("oaieval: error: eval 'r-fuzzy.dev.v0': a sample has 'ideal': []")


def test_an_extra_eval_param_with_two_equals_signs_is_refused(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dummy", "r-match.dev.v0", "--registry_path", str(registry), "--dry-run"]
    assert oaieval([*args, "--extra_eval_params", "k=v=w"]) == 2
    assert "'k=v=w' has more than one '='" in capsys.readouterr().err


def test_final_report_lines_show_numbers_alike(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "one.jsonl"
    args = ["--max_samples", "1", "--record_path", str(record)]
    assert oaieval(["dummy", "r-match.dev.v0", "--registry_path", str(registry), *args]) == 0
    err = capsys.readouterr().err
    summary = next(line for line in err.splitlines() if "Final report: {" in line)
    assert "'boostrap_std': nan" in summary and "None" not in summary
    assert any(line.endswith("] boostrap_std: nan") for line in err.splitlines())
    assert read_record(record)[-1]["final_report"]["boostrap_std"] is None


def test_http_client_lines_appear_only_with_debug(
    server: ChatServer, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(registry, tmp_path, "r-includes.dev.v0")
    quiet = capsys.readouterr().err
    run(registry, tmp_path, "r-includes.dev.v0", "--debug")
    loud = capsys.readouterr().err
    assert "/v1/chat/completions" not in quiet and "Final report:" in quiet
    assert "/v1/chat/completions" in loud
    logging.getLogger().setLevel(logging.WARNING)


def test_a_404_for_a_base_url_without_v1_names_the_path(
    server: ChatServer,
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.root_url)
    code = oaieval(["m", "r-includes.dev.v0", "--registry_path", str(registry), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "has no POST /chat/completions (HTTP 404: Not Found)" in err and "/v1" in err
    assert "does not know model" not in err


def test_ctrl_c_stops_a_standalone_oaieval_at_once_and_writes_no_record(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    server.latency = 14
    record = tmp_path / "never.jsonl"
    exe = Path(sys.executable).parent / "oaieval"
    args = ["m", "r-includes.dev.v0", "--registry_path", str(registry)]
    proc = subprocess.Popen(
        [str(exe), *args, "--record_path", str(record)],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.requests  # a request is in flight, for 14 s
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - began < 3, "it did not wait for the requests in flight"
    assert proc.returncode == 130 and "interrupted; no record written" in err
    assert "Traceback" not in err and not record.exists()
