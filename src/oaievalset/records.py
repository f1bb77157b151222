"""Reading an eval's JSONL record, written by our oaieval or by the original's (whose final
report comes before its events): its final report, token usage and samples. A record that
is missing, cut short or not JSON is read as far as it goes, and what is wrong is said."""

from __future__ import annotations

import json
import shlex
from array import array
from collections.abc import Callable, Iterator
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
        return _command_of(self.spec)

    @property
    def created_at(self) -> str | None:
        return _created_at(self.spec)

    def summary(self, size: int = -1, mtime_ns: int = -1) -> RecordSummary:
        """What the report needs of the record but its samples, for the file of that size
        and modification time."""
        spec = {k: self.spec[k] for k in SPEC_KEPT if k in self.spec} if self.spec else None
        if self.spec and isinstance(self.spec.get("run_config"), dict):
            command = self.spec["run_config"].get("command")
            assert spec is not None
            spec["run_config"] = {"command": command} if command is not None else {}
        return RecordSummary(
            path=self.path,
            final_report=self.final_report,
            usage=self.usage,
            problems=list(self.problems),
            spec=spec,
            samples=len(self.samples),
            wrong=sum(s.correct is False for s in self.samples),
            errored=sum(bool(s.error) for s in self.samples),
            size=size,
            mtime_ns=mtime_ns,
        )


SPEC_KEPT = ("eval_name", "completion_fns", "created_at", "run_config")


class RecordSummary(NamedTuple):
    """A record read once, without its samples: small enough to keep for every eval of a
    set, and to cache between runs (keyed by the file's size and modification time)."""

    path: Path
    final_report: dict[str, Any] | None
    usage: Usage | None
    problems: list[str]
    spec: dict[str, Any] | None
    samples: int  # how many
    wrong: int
    errored: int
    size: int = -1  # of the file read; -1 when there was none
    mtime_ns: int = -1

    @property
    def complete(self) -> bool:
        return self.final_report is not None and not self.problems

    @property
    def command(self) -> list[str] | None:
        return _command_of(self.spec)

    @property
    def created_at(self) -> str | None:
        return _created_at(self.spec)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "final_report": self.final_report,
            "usage": list(self.usage) if self.usage is not None else None,
            "problems": self.problems,
            "spec": self.spec,
            "samples": self.samples,
            "wrong": self.wrong,
            "errored": self.errored,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordSummary:
        """The summary as as_json wrote it; KeyError, TypeError or ValueError otherwise."""
        usage = data["usage"]
        return cls(
            path=Path(data["path"]),
            final_report=data["final_report"],
            usage=Usage(*(int(n) for n in usage)) if usage is not None else None,
            problems=[str(p) for p in data["problems"]],
            spec=data["spec"],
            samples=int(data["samples"]),
            wrong=int(data["wrong"]),
            errored=int(data["errored"]),
            size=int(data["size"]),
            mtime_ns=int(data["mtime_ns"]),
        )


def _command_of(spec: dict[str, Any] | None) -> list[str] | None:
    """The `oaieval` command line the record gives (`run_config.command`), split."""
    config = (spec or {}).get("run_config")
    command = config.get("command") if isinstance(config, dict) else None
    if not isinstance(command, str) or not command.strip():
        return None
    try:
        return shlex.split(command)
    except ValueError:  # not written by shlex.quote: show it as it is
        return [command]


def _created_at(spec: dict[str, Any] | None) -> str | None:
    """When the eval started, as the record gives it (`2024-01-31 12:00:00.1+00:00`)."""
    when = (spec or {}).get("created_at")
    return when if isinstance(when, str) and when else None


def read_record(path: Path | str | None) -> Record:
    """The record at `path`, as far as it can be read, its samples in memory."""
    samples: list[Sample] = []
    record, _ = _scan(path, samples.append)
    return record._replace(samples=samples)


def stream_record(
    path: Path | str | None,
    each: Callable[[Sample], None] | None = None,
    size: int = -1,
    mtime_ns: int = -1,
) -> RecordSummary:
    """The record's summary, each of its samples handed to `each` in order as it is made:
    memory holds one sample at a time and where each sample's lines are, never the file
    nor all its samples. Two passes: one finds the final report, the spec and where each
    sample's events are; the other folds each sample's events, in the samples' order.
    `size` and `mtime_ns` are the file's as the caller found it, kept in the summary."""
    record, (count, wrong, errored) = _scan(path, each)
    return record.summary(size, mtime_ns)._replace(samples=count, wrong=wrong, errored=errored)


def _scan(
    path: Path | str | None, each: Callable[[Sample], None] | None
) -> tuple[Record, tuple[int, int, int]]:
    """The record without its samples, which go to `each`, and how many there were, wrong
    and errored."""

    def bare(where: Path, problem: str) -> tuple[Record, tuple[int, int, int]]:
        return Record(where, None, [], None, [problem]), (0, 0, 0)

    if path is None:
        return bare(Path(""), "no record: the eval's log names none")
    path = Path(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the errors
    except FileNotFoundError:
        return bare(path, f"{path}: the record is missing")
    except OSError as exc:
        return bare(path, f"{path}: cannot read the record ({exc.strerror})")
    report: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    where = _Offsets()  # where each sample's event lines are
    problems: list[str] = []
    more = 0  # problems counted past MAX_PROBLEMS
    usage: Usage | None = None  # of the sampling events, for a record without a report
    with stream:
        offset = 0
        # Binary lines end at "\n" only: text lines would also end at a U+2028 inside a
        # string, which a record written with ensure_ascii=False holds as it is.
        for lineno, raw in enumerate(stream, start=1):
            at, offset = offset, offset + len(raw)
            data = _line(raw)
            if data is _BLANK:
                continue
            if data is _NOT_JSON:
                cut = not raw.endswith(b"\n")  # only the last line can lack its end
                what = "the record is cut short here" if cut else "not JSON"
                more += _problem(problems, f"{path}:{lineno}: {what}")
            elif not isinstance(data, dict):
                more += _problem(problems, f"{path}:{lineno}: not a record line")
            elif "final_report" in data:
                report = data["final_report"] if isinstance(data["final_report"], dict) else {}
            elif "spec" in data and isinstance(data["spec"], dict) and spec is None:
                spec = data["spec"]
            elif isinstance(data.get("sample_id"), str) and isinstance(data.get("data"), dict):
                where.add(data["sample_id"], at)
                if data.get("type") == "sampling":
                    used = Usage.of(data["data"].get("usage"))
                    if used is not None:
                        usage = used if usage is None else usage + used
            del data  # a long line is not kept while the next is read
        if more:
            problems.append(f"{path}: and {more} more lines like these")
        if report is None and not problems:
            problems.append(f"{path}: the record has no final report (the eval did not finish)")
        usage = (Usage.of(report, "usage_") if report else None) or usage
        dummy = (spec or {}).get("completion_fns") == ["dummy"]
        count = wrong = errored = 0
        for sample_id, offsets in where.in_order():
            folded = _Folded(sample_id)
            for at in offsets:
                stream.seek(at)
                event = _line(stream.readline())
                if isinstance(event, dict) and isinstance(event.get("data"), dict):
                    folded.add(event)  # (a record rewritten since the first pass: skipped)
            sample = folded.sample(dummy)
            count += 1
            wrong += sample.correct is False
            errored += bool(sample.error)
            if each is not None:
                each(sample)
    return Record(path, report, [], usage, problems, spec), (count, wrong, errored)


class _Offsets:
    """The offsets of each sample's event lines, in little memory: while every id is
    `PREFIX.N` with one prefix (as both engines write them), one integer per event,
    N << 40 | offset, in an array (8 bytes an event); else a list per id."""

    SHIFT = 40  # offsets below 1 TiB

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.packed = array("q")
        self.by_id: dict[str, list[int]] | None = None  # once an id is not PREFIX.N

    def add(self, sample_id: str, offset: int) -> None:
        if self.by_id is None:
            head, _, tail = sample_id.rpartition(".")
            fits = tail.isdigit() and str(int(tail)) == tail and offset < 1 << self.SHIFT
            if fits and (self.prefix is None or head == self.prefix) and int(tail) < 1 << 22:
                self.prefix = head
                self.packed.append(int(tail) << self.SHIFT | offset)
                return
            self.by_id = {}
            for key in self.packed:
                number, at = key >> self.SHIFT, key & ((1 << self.SHIFT) - 1)
                self.by_id.setdefault(f"{self.prefix}.{number}", []).append(at)
            self.packed = array("q")
        self.by_id.setdefault(sample_id, []).append(offset)

    def in_order(self) -> Iterator[tuple[str, list[int]]]:
        """Each sample id, by its index, with the offsets of its events in file order."""
        if self.by_id is not None:
            for sample_id in sorted(self.by_id, key=_order):
                yield sample_id, self.by_id.pop(sample_id)
            return
        keys, self.packed = sorted(self.packed), array("q")
        mask = (1 << self.SHIFT) - 1
        number, offsets = -1, list[int]()
        for key in keys:
            if key >> self.SHIFT != number:
                if offsets:
                    yield f"{self.prefix}.{number}", offsets
                number, offsets = key >> self.SHIFT, []
            offsets.append(key & mask)
        if offsets:
            yield f"{self.prefix}.{number}", offsets


_BLANK, _NOT_JSON = object(), object()


def _line(raw: bytes) -> Any:
    """A record line's JSON value, or _BLANK, or _NOT_JSON."""
    line = raw.decode("utf-8", errors="replace")
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)  # the original writes a bare NaN: json reads it
    except ValueError:
        return _NOT_JSON


MAX_PROBLEMS = 20  # lines named of a record that is not JSON at all; the rest counted


def _problem(problems: list[str], line: str) -> int:
    """Keep the line among the first MAX_PROBLEMS; past them, count it (1) and drop it, so
    that a record of a million bad lines costs no memory."""
    if len(problems) < MAX_PROBLEMS:
        problems.append(line)
        return 0
    return 1


def _order(sample_id: str) -> tuple[int, str]:
    """Samples by their index (`base.split.12`), then by name."""
    tail = sample_id.rsplit(".", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 62, sample_id)


class _Folded:
    """One sample's events as they stream by: what the first `sampling` gives the prompt
    and answer (a model-graded eval's later ones are the grader's); without one (the
    `dummy` model), the `match` event's answer, if it has one."""

    __slots__ = ("answer", "correct", "error", "ideal", "prompt", "sample_id", "score", "scored")

    def __init__(self, sample_id: str) -> None:
        self.sample_id = sample_id
        self.prompt: Any = None
        self.answer: Any = None
        self.ideal: Any = None
        self.correct: bool | None = None
        self.score: Any = None
        self.error: str | None = None
        self.scored = False  # a `match` or `metrics` event came

    def add(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event["data"]
        if kind == "sampling" and self.prompt is None:
            self.prompt, self.answer = data.get("prompt"), _answer(data.get("sampled"))
        elif kind == "match":
            self.scored = True
            self.correct = bool(data.get("correct"))
            self.ideal = data.get("expected")
            if self.answer is None:
                # Match and Includes record `sampled`; FuzzyMatch and JsonMatch only a
                # `picked` list, empty when nothing matched.
                self.answer = _answer(data.get("sampled", data.get("picked")))
        elif kind == "metrics":
            self.scored = True
            if "choice" in data:
                self.score = {"choice": data.get("choice"), "score": data.get("score")}
                if "metascore" in data:
                    self.correct = bool(data["metascore"])
            elif "f1_score" in data:
                self.score = {"f1_score": data["f1_score"]}
        elif kind == "error":
            self.error = str(data.get("message") or data)

    def sample(self, dummy: bool) -> Sample:
        error = self.error
        if error is None and not self.scored:
            error = "no result recorded for this sample"
        answer = DUMMY_ANSWER if self.answer is None and dummy else self.answer
        return Sample(
            self.sample_id, self.prompt, answer, self.ideal, self.correct, self.score, error
        )


def _answer(sampled: Any) -> Any:
    """The answer of a `sampled` or `picked` list (one answer, or the same one per matched
    ideal), or None when the list is empty."""
    if isinstance(sampled, list):
        if not sampled:
            return None
        return sampled[0] if all(s == sampled[0] for s in sampled) else sampled
    return sampled
