"""The oaieval engine, against a real chat-completions server on loopback through the real
`openai` package, and offline with `dummy`."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.records import read_record

from oaievalset.engine.cli import main as oaieval

# The usage sums in a final report, for four answers of the loopback server.
USAGE4 = {
    "usage_completion_tokens": 4,
    "usage_prompt_tokens": 4,
    "usage_total_tokens": 8,
    "usage_completion_tokens_details": 0,
    "usage_prompt_tokens_details": 0,
}

QUESTIONS = {
    "Capital of France?": "Paris",
    "Two plus two?": "4",
    "Colour of the sky?": "Blue",
    "Opposite of up?": "Down",
}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "data" / "qa").mkdir(parents=True)
    samples = [
        {
            "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}],
            "ideal": a,
        }
        for q, a in QUESTIONS.items()
    ]
    (root / "data" / "qa" / "samples.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in samples)
    )
    json_samples = [{"input": "Give the object", "ideal": ['{"a": [1, 2]}']}]
    (root / "data" / "qa" / "json.jsonl").write_text(json.dumps(json_samples[0]) + "\n")
    (root / "evals" / "qa.yaml").write_text(
        "qa-match:\n  id: qa-match.dev.v0\n"
        "qa-match.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
        "  args:\n    samples_jsonl: qa/samples.jsonl\n"
        "qa-includes.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n"
        "  args:\n    samples_jsonl: qa/samples.jsonl\n    ignore_case: true\n"
        "qa-fuzzy.dev.v0:\n  class: evals.elsuite.basic.fuzzy_match:FuzzyMatch\n"
        "  args:\n    samples_jsonl: qa/samples.jsonl\n"
        "qa-json.dev.v0:\n  class: evals.elsuite.basic.json_match:JsonMatch\n"
        "  args:\n    samples_jsonl: qa/json.jsonl\n"
        "qa-unsupported.dev.v0:\n  class: evals.elsuite.bluff.eval:BluffEval\n"
    )
    return root


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    chat = ChatServer(answers=dict(QUESTIONS), models=("test-model",)).start()
    monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield chat
    chat.stop()


def run_eval(
    registry: Path,
    tmp_path: Path,
    *args: str,
    model: str = "test-model",
    eval_name: str = "qa-match",
) -> tuple[int, Path]:
    record = tmp_path / f"record-{len(list(tmp_path.glob('record-*')))}.jsonl"
    code = oaieval(
        [model, eval_name, "--registry_path", str(registry), "--record_path", str(record), *args]
    )
    return code, record


def test_correct_answers_score_1(server: ChatServer, registry: Path, tmp_path: Path) -> None:
    code, record = run_eval(registry, tmp_path)
    assert code == 0
    lines = read_record(record)
    assert list(lines[0]) == ["spec"] and lines[0]["spec"]["eval_name"] == "qa-match.dev.v0"
    assert lines[-1]["final_report"] == {"accuracy": 1.0, "boostrap_std": 0.0, **USAGE4}
    matches = [line for line in lines if line.get("type") == "match"]
    assert len(matches) == 4 and all(m["data"]["correct"] for m in matches)
    assert all(r["temperature"] == 0.0 for r in server.requests)


def test_wrong_answers_score_0(server: ChatServer, registry: Path, tmp_path: Path) -> None:
    server.answers = {}
    code, record = run_eval(registry, tmp_path)
    assert code == 0
    assert read_record(record)[-1]["final_report"]["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("eval_name", "report"),
    [
        ("qa-includes.dev.v0", {"accuracy": 1.0, "boostrap_std": 0.0, **USAGE4}),
        ("qa-fuzzy.dev.v0", {"accuracy": 1.0, "f1_score": 1.0, **USAGE4}),
    ],
)
def test_other_classes_score_right_answers(
    server: ChatServer, registry: Path, tmp_path: Path, eval_name: str, report: dict[str, float]
) -> None:
    code, record = run_eval(registry, tmp_path, eval_name=eval_name)
    assert code == 0
    assert read_record(record)[-1]["final_report"] == report


def test_json_match_compares_decoded_json(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    server.answers = {"Give the object": '{"a": [1,2]}'}
    code, record = run_eval(registry, tmp_path, eval_name="qa-json.dev.v0")
    assert code == 0 and read_record(record)[-1]["final_report"]["accuracy"] == 1.0
    server.answers = {"Give the object": '{"a": [2, 1]}'}
    code, record = run_eval(registry, tmp_path, eval_name="qa-json.dev.v0")
    assert code == 0 and read_record(record)[-1]["final_report"]["accuracy"] == 0.0


def _comparable(lines: list[dict[str, Any]]) -> list[Any]:
    out = []
    for line in lines[1:]:
        line = {k: v for k, v in line.items() if k not in ("run_id", "created_at")}
        out.append(line)
    return out


def test_the_record_does_not_depend_on_the_thread_count(
    server: ChatServer, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.answers = {"Capital of France?": "Paris", "Two plus two?": "five"}
    monkeypatch.setenv("EVALS_THREADS", "10")
    _, many = run_eval(registry, tmp_path, eval_name="qa-fuzzy.dev.v0")
    monkeypatch.setenv("EVALS_THREADS", "1")
    _, one = run_eval(registry, tmp_path, eval_name="qa-fuzzy.dev.v0")
    assert _comparable(read_record(many)) == _comparable(read_record(one))
    sample_ids = [line["sample_id"] for line in read_record(many)[1:-1]]
    assert sample_ids == sorted(sample_ids, key=lambda s: int(s.rsplit(".", 1)[1]))


def test_a_server_error_is_one_clear_line(
    server: ChatServer, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.fail_status = 400
    code, record = run_eval(registry, tmp_path)
    assert code == 1 and not record.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("oaieval: error: the server at ") and "HTTP 400" in err


def test_an_unknown_model_is_named(
    server: ChatServer, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, model="no-such-model")
    assert code == 1
    assert "does not know model 'no-such-model'" in capsys.readouterr().err


def test_a_refused_connection_is_one_clear_line(
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code, _ = run_eval(registry, tmp_path)
    assert code == 1
    assert "cannot reach the model server" in capsys.readouterr().err


def test_a_missing_key_is_one_clear_line(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path)
    assert code == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err


def test_dummy_needs_no_key_and_no_network(registry: Path, tmp_path: Path) -> None:
    assert "OPENAI_API_KEY" not in os.environ
    code, record = run_eval(registry, tmp_path, model="dummy")
    assert code == 0
    assert read_record(record)[-1]["final_report"]["accuracy"] == 0.0


def test_one_sample_gives_null_not_nan(registry: Path, tmp_path: Path) -> None:
    code, record = run_eval(registry, tmp_path, "--max_samples", "1", model="dummy")
    assert code == 0
    assert read_record(record)[-1]["final_report"] == {"accuracy": 0.0, "boostrap_std": None}


def test_dry_run_writes_no_record(registry: Path, tmp_path: Path) -> None:
    code, record = run_eval(registry, tmp_path, "--dry-run", model="dummy")
    assert code == 0 and not record.exists()


def test_an_unsupported_class_names_the_eval_and_class(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, model="dummy", eval_name="qa-unsupported.dev.v0")
    assert code == 2
    err = capsys.readouterr().err
    assert "qa-unsupported.dev.v0" in err
    assert "evals.elsuite.bluff.eval:BluffEval" in err


def test_an_unknown_eval_offers_close_names(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, model="dummy", eval_name="qa-matc")
    assert code == 2
    assert "unknown eval 'qa-matc'; closest: qa-match" in capsys.readouterr().err


def test_extra_eval_params_reach_the_eval(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    server.answers = {q: a.lower() for q, a in QUESTIONS.items()}
    code, record = run_eval(
        registry, tmp_path, "--extra_eval_params", "ignore_case=0", eval_name="qa-includes.dev.v0"
    )
    assert code == 0
    spec = read_record(record)[0]["spec"]
    assert spec["run_config"]["eval_spec"]["args"]["ignore_case"] == 0
    assert read_record(record)[-1]["final_report"]["accuracy"] == 0.25  # only "4" matches


def test_the_record_names_the_arguments_it_was_run_with(registry: Path, tmp_path: Path) -> None:
    code, record = run_eval(registry, tmp_path, "--max_samples", "2", model="dummy")
    assert code == 0
    command = read_record(record)[0]["spec"]["run_config"]["command"]
    assert command.startswith("oaieval dummy qa-match --registry_path ")
    assert command.endswith(" --max_samples 2")


def test_a_bad_extra_eval_param_is_a_clear_error(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, "--extra_eval_params", "nonsense=1", model="dummy")
    assert code == 2
    assert "bad arguments" in capsys.readouterr().err


def test_http_run_is_refused(registry: Path, tmp_path: Path) -> None:
    code, _ = run_eval(registry, tmp_path, "--http-run", model="dummy")
    assert code == 2


def test_final_report_lines_are_logged_as_the_original(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, model="dummy")
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    at = [i for i, line in enumerate(err) if line.endswith("] Final report:")][-1]
    assert err[at + 1].endswith("] accuracy: 0.0")
    assert err[at + 2].endswith("] boostrap_std: 0.0")


def test_the_bundled_test_basic_evals_run_offline(tmp_path: Path) -> None:
    for key in ("test-match", "test-fuzzy-match", "test-includes", "test-includes-ignore-case"):
        record = tmp_path / f"{key}.jsonl"
        assert oaieval(["dummy", key, "--record_path", str(record)]) == 0
        lines = read_record(record)
        assert "spec" in lines[0] and "final_report" in lines[-1]


def test_completion_args_reach_the_server(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    code, _ = run_eval(registry, tmp_path, "--completion_args", "max_tokens=7,top_p=0.5")
    assert code == 0
    assert all(r["max_tokens"] == 7 and r["top_p"] == 0.5 for r in server.requests)


def test_log_to_file_takes_the_log_off_stderr(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "eval.log"
    code, _ = run_eval(registry, tmp_path, "--log_to_file", str(log), model="dummy")
    assert code == 0
    assert "Final report:" not in capsys.readouterr().err
    assert "] accuracy: 0.0" in log.read_text()


def test_several_completion_functions_are_refused_by_a_one_model_eval(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_eval(registry, tmp_path, model="dummy,dummy")
    assert code == 2
    assert "Match takes one completion function, got 2" in capsys.readouterr().err


def test_an_answer_with_a_lone_surrogate_is_recorded_as_valid_json(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server sends `"\ud800"` (valid JSON); the client decodes it to a lone surrogate,
    # which UTF-8 cannot hold: the record keeps its escape instead of failing the eval.
    chat = ChatServer(answer_fn=lambda r: "Paris\ud800!", models=("test-model",)).start()
    monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    try:
        code, record = run_eval(registry, tmp_path)
    finally:
        chat.stop()
    assert code == 0
    assert "\\ud800" in record.read_text(encoding="utf-8")
    sampled = [
        line["data"]["sampled"] for line in read_record(record) if line.get("type") == "match"
    ]
    assert sampled and all(s == "Paris\ud800!" for s in sampled)


def test_a_line_separator_inside_a_sample_string_does_not_end_the_line(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    samples = registry / "data" / "qa" / "samples.jsonl"
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    lines[0]["input"][0]["content"] = "Be\u2028brief.\u2029"
    samples.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in lines))
    code, record = run_eval(registry, tmp_path)
    assert code == 0
    assert len([line for line in read_record(record) if line.get("type") == "match"]) == 4
    systems = sorted(r["messages"][0]["content"] for r in server.requests)
    assert systems == ["Be brief."] * 3 + ["Be\u2028brief.\u2029"]
