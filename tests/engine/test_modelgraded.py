"""Model-graded evals: specs from the registry, completion functions from the registry, how a
grader's answer becomes a choice, and the bundled set offline. (That they ask and score as
the original does is checked against the original in test_against_original.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import run_cli
from helpers.records import read_record

from oaievalset.engine.cli import main as oaieval
from oaievalset.engine.modelgraded import INVALID, chat_to_text, parse_choice, score_of
from oaievalset.errors import RegistryError
from oaievalset.registry import Registry

SPECS = """\
yes-no:
  prompt: "Is this right? {completion}"
  choice_strings: ["Yes", "No"]
  choice_scores: {"Yes": 1, "No": 0}
  input_outputs: {input: completion}
  format_type: ignored, as the original ignores it
yes-no-alias:
  id: yes-no
broken:
  prompt: "no choices"
  input_outputs: {input: completion}
"""


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "reg"
    for folder in ("evals", "modelgraded", "completion_fns", "data"):
        (root / folder).mkdir(parents=True)
    (root / "modelgraded" / "specs.yaml").write_text(SPECS)
    samples = [
        {"input": [{"role": "user", "content": f"Question {i}?"}], "ideal": "x"} for i in range(3)
    ]
    (root / "data" / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    evals = ""
    for name, spec in (("g", "yes-no-alias"), ("g-broken", "broken"), ("g-missing", "nope")):
        evals += (
            f"{name}.dev.v0:\n  class: evals.elsuite.modelgraded.classify:ModelBasedClassify\n"
            f"  args:\n    samples_jsonl: s.jsonl\n    modelgraded_spec: {spec}\n"
            f"    eval_type: classify\n"
        )
    (root / "evals" / "g.yaml").write_text(evals)
    (root / "completion_fns" / "fns.yaml").write_text(
        "my-grader:\n  class: evals.completion_fns.openai:OpenAIChatCompletionFn\n"
        "  args:\n    model: grader-model\n    extra_options: {seed: 5}\n"
        "cot/thinker:\n  class: evals.completion_fns.cot:ChainOfThoughtCompletionFn\n"
        "  args:\n    cot_completion_fn: gpt-3.5-turbo\n"
    )
    return root


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    def answer(request: dict[str, Any]) -> str:
        if request["model"] == "grader-model":
            return "Yes"
        return "An answer."

    chat = ChatServer(answer_fn=answer, models=("m", "grader-model")).start()
    monkeypatch.setenv("OPENAI_BASE_URL", chat.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield chat
    chat.stop()


def run(registry: Path, tmp_path: Path, model: str, eval_name: str = "g.dev.v0") -> int:
    record = tmp_path / "record.jsonl"
    return oaieval(
        [model, eval_name, "--registry_path", str(registry), "--record_path", str(record)]
    )


def test_a_registry_completion_function_grades_what_the_model_answers(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    assert run(registry, tmp_path, "m,my-grader") == 0
    by_model: dict[str, list[dict[str, Any]]] = {}
    for request in server.requests:
        by_model.setdefault(request["model"], []).append(request)
    assert len(by_model["m"]) == 3 and len(by_model["grader-model"]) == 3
    grading = by_model["grader-model"][0]
    assert grading["seed"] == 5  # the entry's extra_options
    assert grading["messages"][0]["content"].startswith("Is this right? An answer.\n\nAnswer")
    report = read_record(tmp_path / "record.jsonl")[-1]["final_report"]
    assert report["counts/Yes"] == 3 and report["score"] == 1.0


def test_with_one_model_the_model_grades_itself(
    server: ChatServer, registry: Path, tmp_path: Path
) -> None:
    assert run(registry, tmp_path, "m") == 0
    assert {r["model"] for r in server.requests} == {"m"}
    assert len(server.requests) == 6
    report = read_record(tmp_path / "record.jsonl")[-1]["final_report"]
    assert report == {
        "counts/__invalid__": 3,
        "score": 0.0,
        **{k: v for k, v in report.items() if k.startswith("usage_")},
    }


def test_a_completion_function_we_cannot_run_is_one_line_naming_it(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(registry, tmp_path, "dummy,cot/thinker") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "completion function 'cot/thinker'" in err and "fns.yaml" in err
    assert "ChainOfThoughtCompletionFn" in err


@pytest.mark.parametrize(
    ("eval_name", "says"),
    [
        ("g-broken.dev.v0", "model-graded spec 'broken' has no 'choice_strings'"),
        ("g-missing.dev.v0", "unknown model-graded spec 'nope'"),
    ],
)
def test_a_bad_or_missing_spec_is_one_line(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], eval_name: str, says: str
) -> None:
    assert run(registry, tmp_path, "dummy", eval_name) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_specs_follow_aliases_and_a_duplicate_names_both_files(
    registry: Path, tmp_path: Path
) -> None:
    spec = Registry([registry]).require_modelgraded_spec("yes-no-alias")
    assert spec.key == "yes-no" and spec.choice_scores == {"Yes": 1.0, "No": 0.0}
    other = tmp_path / "other"
    (other / "modelgraded").mkdir(parents=True)
    (other / "modelgraded" / "more.yaml").write_text(SPECS.split("yes-no-alias")[0])
    with pytest.raises(RegistryError, match="model-graded spec 'yes-no' is defined twice"):
        Registry([registry, other]).require_modelgraded_spec("yes-no")


@pytest.mark.parametrize(
    ("text", "eval_type", "match", "choice"),
    [
        ("Yes", "classify", "starts_or_endswith", "Yes"),
        ("No, it is not.\nYes", "classify", "starts_or_endswith", "No"),
        ("Reasoning here.\nYes\n", "cot_classify", "starts_or_endswith", "Yes"),
        ("Yes.\nThe reasons are many.", "classify_cot", "starts_or_endswith", "Yes"),
        ('"Yes"!', "classify", "exact", "Yes"),
        ("Yes indeed", "classify", "exact", INVALID),
        ("Y", "classify", "include", "Yes"),
        ("Perhaps", "classify", "starts_or_endswith", INVALID),
    ],
)
def test_the_graders_answer_becomes_a_choice(
    text: str, eval_type: str, match: str, choice: str
) -> None:
    assert parse_choice(text, eval_type, match, ["Yes", "No"]) == choice


def test_scores_of_choices() -> None:
    assert score_of("3", list("12345"), "from_strings") == 3.0
    assert score_of(INVALID, list("12345"), "from_strings") == 1.0
    assert score_of(INVALID, ["Yes", "No"], {"Yes": 1.0, "No": 0.0}) == 0.0
    assert score_of("Yes", ["Yes", "No"], None) is None


def test_a_chat_prompt_is_filled_in_as_text() -> None:
    one = [{"role": "user", "content": "Hi"}]
    assert chat_to_text(one) == "Hi"
    many = [
        {"role": "system", "content": "Be kind."},
        {"role": "system", "name": "example_user", "content": "Q"},
        {"role": "user", "content": "A?"},
    ]
    assert chat_to_text(many) == "Be kind.\nUser: Q\nUser: A?\n"


def test_the_bundled_model_graded_set_runs_offline_with_dummy(isolated: Path) -> None:
    result = run_cli(["dummy", "test-graded"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("score=") == 3


def test_with_an_answer_journal_the_answers_and_their_grading_are_reused_in_order(
    server: ChatServer, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAIEVAL_ANSWER_JOURNAL", str(tmp_path / "answers.jsonl"))

    def events() -> list[Any]:
        lines = read_record(tmp_path / "record.jsonl")
        return [(e["sample_id"], e["type"], e["data"]) for e in lines if "sample_id" in e]

    assert run(registry, tmp_path, "m,my-grader") == 0
    first, asked = events(), len(server.requests)
    assert asked == 6  # an answer and its grading per sample
    assert run(registry, tmp_path, "m,my-grader") == 0
    assert len(server.requests) == asked, "all six reused"
    assert events() == first
    assert read_record(tmp_path / "record.jsonl")[-1]["final_report"]["usage_total_tokens"] == 12
