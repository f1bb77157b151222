"""Reading an eval's JSONL record, written by our oaieval or by the original's (whose final
report comes before its events): its final report, token usage and samples. A record that
is missing, cut short or not JSON is read as far as it goes, and what is wrong is said."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, NamedTuple

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# What openai/evals' `dummy` answers to every prompt (ours too): it records no `sampling`
# event, and FuzzyMatch and JsonMatch record the answer only when it matched.
DUMMY_ANSWER = "This is a dummy response."


class Usage(NamedTuple):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(a + b for a, b in zip(self, other)))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(USAGE_KEYS, self))

    @classmethod
    def of(cls, data: Any, prefix: str = "") -> Usage | None:
        """From a mapping with `prompt_tokens`... (or `usage_prompt_tokens`... with the
        prefix); None when it has none of them."""
        if not isinstance(data, dict):
            return None
        found = [data.get(prefix + key) for key in USAGE_KEYS]
        if all(value is None for value in found):
            return None
        counts = [v if isinstance(v, int) and not isinstance(v, bool) else 0 for v in found]
        return cls(*counts)


class Sample(NamedTuple):
    """One sample of a record, as the report page shows it."""

    id: str
    prompt: Any
    answer: Any
    ideal: Any
    correct: bool | None  # None when the eval scores it otherwise (or not at all)
    score: Any  # a model-graded choice and score, or an F1 score, when there is one
    error: str | None


class Record(NamedTuple):
    path: Path
    final_report: dict[str, Any] | None
    samples: list[Sample]
    usage: Usage | None
    problems: list[str]  # what could not be read, one line each
    spec: dict[str, Any] | None = None  # the record's first line: the run spec

    @property
    def complete(self) -> bool:
        return self.final_report is not None and not self.problems

    @property
    def command(self) -> list[str] | None:
        """The `oaieval` command line the record gives (`run_config.command`), split."""
        config = (self.spec or {}).get("run_config")
        command = config.get("command") if isinstance(config, dict) else None
        if not isinstance(command, str) or not command.strip():
            return None
        try:
            return shlex.split(command)
        except ValueError:  # not written by shlex.quote: show it as it is
            return [command]

    @property
    def created_at(self) -> str | None:
        """When the eval started, as the record gives it (`2024-01-31 12:00:00.1+00:00`)."""
        when = (self.spec or {}).get("created_at")
        return when if isinstance(when, str) and when else None


def read_record(path: Path | str | None) -> Record:
    """The record at `path`, as far as it can be read."""
    if path is None:
        return Record(Path(""), None, [], None, ["no record: the eval's log names none"])
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Record(path, None, [], None, [f"{path}: the record is missing"])
    except OSError as exc:
        return Record(path, None, [], None, [f"{path}: cannot read the record ({exc.strerror})"])
    report: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    events: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    # Lines end at "\n" only: splitlines() would also cut at a U+2028 inside a string, which
    # a record written with ensure_ascii=False holds as it is.
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)  # the original writes a bare NaN: json reads it
        except ValueError:
            cut = lineno == len(lines) and not text.endswith("\n")
            problems.append(
                f"{path}:{lineno}: " + ("the record is cut short here" if cut else "not JSON")
            )
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}:{lineno}: not a record line")
        elif "final_report" in data:
            report = data["final_report"] if isinstance(data["final_report"], dict) else {}
        elif "spec" in data and isinstance(data["spec"], dict) and spec is None:
            spec = data["spec"]
        elif isinstance(data.get("sample_id"), str) and isinstance(data.get("data"), dict):
            events.setdefault(data["sample_id"], []).append(data)
    if report is None and not problems:
        problems.append(f"{path}: the record has no final report (the eval did not finish)")
    usage = Usage.of(report, "usage_") if report else None
    if usage is None:
        usage = _usage_of_events(events)
    dummy = (spec or {}).get("completion_fns") == ["dummy"]
    samples = [
        _sample(sample_id, evs, dummy) for sample_id, evs in sorted(events.items(), key=_order)
    ]
    return Record(path, report, samples, usage, problems, spec)


def _order(item: tuple[str, Any]) -> tuple[int, str]:
    """Samples by their index (`base.split.12`), then by name."""
    tail = item[0].rsplit(".", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 62, item[0])


def _usage_of_events(events: dict[str, list[dict[str, Any]]]) -> Usage | None:
    total: Usage | None = None
    for evs in events.values():
        for event in evs:
            if event.get("type") == "sampling":
                usage = Usage.of(event["data"].get("usage"))
                if usage is not None:
                    total = usage if total is None else total + usage
    return total


def _sample(sample_id: str, events: list[dict[str, Any]], dummy: bool = False) -> Sample:
    """What the sample's events say: the first `sampling` gives the prompt and answer (a
    model-graded eval's later ones are the grader's); without one (the `dummy` model), the
    `match` event's answer, if it has one."""
    prompt = answer = ideal = score = error = None
    correct: bool | None = None
    for event in events:
        kind, data = event.get("type"), event["data"]
        if kind == "sampling" and prompt is None:
            prompt, answer = data.get("prompt"), _answer(data.get("sampled"))
        elif kind == "match":
            correct = bool(data.get("correct"))
            ideal = data.get("expected")
            if answer is None:
                # Match and Includes record `sampled`; FuzzyMatch and JsonMatch only a
                # `picked` list, empty when nothing matched.
                answer = _answer(data.get("sampled", data.get("picked")))
        elif kind == "metrics":
            if "choice" in data:
                score = {"choice": data.get("choice"), "score": data.get("score")}
                if "metascore" in data:
                    correct = bool(data["metascore"])
            elif "f1_score" in data:
                score = {"f1_score": data["f1_score"]}
        elif kind == "error":
            error = str(data.get("message") or data)
    if error is None and not any(e.get("type") in ("match", "metrics") for e in events):
        error = "no result recorded for this sample"
    if answer is None and dummy:
        answer = DUMMY_ANSWER
    return Sample(sample_id, prompt, answer, ideal, correct, score, error)


def _answer(sampled: Any) -> Any:
    """The answer of a `sampled` or `picked` list (one answer, or the same one per matched
    ideal), or None when the list is empty."""
    if isinstance(sampled, list):
        if not sampled:
            return None
        return sampled[0] if all(s == sampled[0] for s in sampled) else sampled
    return sampled
