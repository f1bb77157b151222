"""The answer journal on its own: keys, a line cut by a crash, a journal of another run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from oaievalset.engine.answers import AnswerJournal, at_sample, request_key

IDENTITY = {"eval": "e.dev.v0", "seed": 1}
BODY = {"messages": [{"role": "user", "content": "2+2?"}], "temperature": 0}


def keys(sample: str, *bodies: dict[str, object], server: str = "http://a/v1") -> list[str]:
    with at_sample(sample):
        return [request_key("m", server, body) for body in bodies]


def test_a_request_is_known_by_its_place_its_model_server_and_body() -> None:
    twice = keys("e.dev.0", BODY, BODY)
    assert twice[0] != twice[1], "asked twice on purpose (multicomp_n): two requests"
    assert keys("e.dev.0", BODY, BODY) == twice, "the same place and body, run again"
    assert keys("e.dev.1", BODY)[0] != twice[0], "another sample"
    assert keys("e.dev.0", BODY, server="http://b/v1")[0] != twice[0], "another server"
    assert keys("e.dev.0", {**BODY, "temperature": 1})[0] != twice[0], "another parameter"


def test_answers_come_back_and_a_line_cut_by_a_crash_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with AnswerJournal(path, IDENTITY) as journal:
        journal.put("k1", {"sampled": ["4"], "model": "m", "usage": {"total_tokens": 5}})
    with open(path, "ab") as f:
        f.write(b'{"key": "k2", "sampled": ["cut')  # killed in the middle of a write
    with AnswerJournal(path, IDENTITY) as journal:
        assert journal.get("k2") is None
        journal.put("k3", {"sampled": ["5"], "model": "m", "usage": None})
    with AnswerJournal(path, IDENTITY) as journal:
        assert journal.get("k1") == {
            "key": "k1", "sampled": ["4"], "model": "m", "usage": {"total_tokens": 5}
        }  # fmt: skip
        assert journal.get("k3") is not None and journal.get("k2") is None
        assert (journal.reused, journal.reused_tokens) == (2, 5)
    assert all(json.loads(line) for line in path.read_text().splitlines())  # whole lines


@pytest.mark.parametrize(
    ("first_line", "why"),
    [
        (json.dumps({"answer_journal": 1, "identity": {**IDENTITY, "seed": 2}}),
         "was written for other arguments (seed differs)"),
        (json.dumps({"answer_journal": 99, "identity": IDENTITY}), "is of another format"),
        ("not json", "is not an answer journal of this oaieval"),
    ],
)  # fmt: skip
def test_a_journal_of_another_run_is_set_aside_with_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first_line: str, why: str
) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(first_line + "\n" + json.dumps({"key": "k1", "sampled": ["x"]}) + "\n")
    with caplog.at_level(logging.INFO, logger="oaieval"), AnswerJournal(path, IDENTITY) as j:
        assert j.get("k1") is None
    aside = tmp_path / "j.jsonl.set-aside"
    assert aside.read_text().startswith(first_line)
    assert f"Answer journal {path} {why}; set aside as {aside}" in caplog.text
    assert json.loads(path.read_text())["identity"] == IDENTITY  # a fresh journal
