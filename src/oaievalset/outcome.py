"""What an eval's log says it produced, written by the engine and read by the driver: the
engine's closing lines (`Final report: {...}. Logged to PATH`, then `Final report:` and one
`name: value` line per metric), as both the original's oaieval and ours log them. The
engine writes them with `final_report_lines`; the runner, the report, the comparison and
the Ray backend read them here."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

# `[2026-01-01 12:00:00,000] [oaieval.py:253] accuracy: 0.5`, as both engines log it.
_METRIC = re.compile(r"^(?:\[[^\]]*\]\s*)*([A-Za-z_][\w.\-/]*): (.+)$")
_LOGGED_TO = ". Logged to "
REPORT_TAIL = 1 << 20  # bytes read from the end of a log to find its final report


def parse_number(text: str) -> str | int | float:
    """`3` as 3, `0.5` as 0.5 (and `nan` as nan), anything else as the text itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


# The variable that names our engine's answer journal for an eval (engine/answers.py).
ANSWER_JOURNAL = "OAIEVAL_ANSWER_JOURNAL"
ANSWER_CACHE = "OAIEVAL_ANSWER_CACHE"  # a folder: the answer cache across runs, opted into
BATCH = "OAIEVAL_BATCH"  # "1": an eval's requests go through the Batch API (engine/batch.py)
BATCH_SET = "OAIEVALSET_SET"  # the set an eval runs for, named in its batches' metadata
BUDGET = "OAIEVAL_BUDGET"  # a run's spending cap, shared by its evals (engine/spend.py)


class Reuse(NamedTuple):
    """What an eval run took from its answer journal: answers reused of all it needed, and
    the tokens those had cost."""

    reused: int
    answers: int
    tokens: int

    def as_dict(self) -> dict[str, int]:
        return {"reused": self.reused, "of": self.answers, "tokens": self.tokens}

    @classmethod
    def of(cls, data: Any) -> Reuse | None:
        """From as_dict()'s form (a journal's line), or None."""
        try:
            return cls(int(data["reused"]), int(data["of"]), int(data["tokens"]))
        except (TypeError, KeyError, ValueError):
            return None


# `Answers: 3 of 6 reused from PATH (1,234 tokens not asked again)`, as our engine logs it.
_REUSE = re.compile(
    r"\bAnswers: (\d+) of (\d+) reused from .* \(([\d,]+) tokens not asked again\)$"
)


def reuse_line(reused: int, answers: int, tokens: int, journal: str) -> str:
    """The engine's line for what it took from its answer journal (read back by read_outcome)."""
    return (
        f"Answers: {reused} of {answers} reused from {journal} ({tokens:,} tokens not asked again)"
    )


# `Batches: 300 requests in 2 batch(es), 300 answers taken this run`, as our engine logs a
# run through the Batch API (engine/batch.py).
_BATCH = re.compile(r"\bBatches: (\d+) requests in (\d+) batch\(es\), (\d+) answers taken")


def batch_line(requests: int, batches: int, answered: int) -> str:
    """The engine's line for a run through the Batch API (read back by read_outcome)."""
    return f"Batches: {requests} requests in {batches} batch(es), {answered} answers taken this run"


class BatchUse(NamedTuple):
    """What an eval run sent through the Batch API: requests, in how many batches."""

    requests: int
    batches: int

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "batches": self.batches}

    @classmethod
    def of(cls, data: Any) -> BatchUse | None:
        """From as_dict()'s form (a journal's line), or None."""
        try:
            return cls(int(data["requests"]), int(data["batches"]))
        except (TypeError, KeyError, ValueError):
            return None


BATCHES_SUFFIX = ".batches"  # beside an eval's answer journal: its batches' state
LIVE_BATCH = ("validating", "in_progress", "finalizing", "cancelling")  # the API's


class Batches(NamedTuple):
    """An eval's batches as its state file has them (written by engine/batch.py): those
    sent (their input file uploaded), those still running on the server, those that ended
    there and whose answers were taken (done); the requests they hold, and how many of them
    have ended (answered or failed). A batch that ended but is not read yet is neither
    running nor done."""

    created: int
    running: int
    read: int
    requests: int
    ended: int

    def describe(self) -> str:
        """`3 batches (1 in progress, 2 done), 220/300 requests ended`."""
        unread = self.created - self.running - self.read
        states = [f"{self.running} in progress"] * bool(self.running)
        states += [f"{unread} ended, not read yet"] * bool(unread)
        states += [f"{self.read} done"] * bool(self.read)
        return (
            f"{self.created} batch{'es' * (self.created != 1)} ({', '.join(states)}), "
            f"{self.ended:,}/{self.requests:,} requests ended"
        )

    def __add__(self, other: object) -> Batches:
        if not isinstance(other, Batches):
            return NotImplemented
        return Batches(*(a + b for a, b in zip(self, other)))


# A batch not yet created on the server (its file sent, or not even that) may be: running.
_NOT_CREATED = ("preparing", "uploaded")


def read_batches(journal: Path) -> Batches | None:
    """What the state file beside an answer journal says of its eval's batches; None when
    there is none (or it cannot be read now: it is replaced whole, never half written)."""
    import json

    try:
        data = json.loads(journal.with_name(journal.name + BATCHES_SUFFIX).read_text())
        parts = [p for p in data["parts"] if p.get("batch_id") or p.get("file_id")]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    running = read = requests = ended = 0
    for part in parts:
        counts = part.get("counts") or {}
        held = len(part.get("keys") or []) or int(counts.get("total", 0) or 0)
        requests += held
        status = part.get("status")
        if status == "done":
            read += 1
            ended += held
            continue
        # A batch being cancelled is as good as ended: nothing more is paid for in it.
        running += status in _NOT_CREATED or (status in LIVE_BATCH and status != "cancelling")
        ended += int(counts.get("completed", 0) or 0) + int(counts.get("failed", 0) or 0)
    return Batches(len(parts), running, read, requests, ended)


class Outcome(NamedTuple):
    """What an eval's log says it produced: its final metrics, the record it wrote, what
    it took from its answer journal (our engine's, when it had one), and what it sent
    through the Batch API (when it ran so)."""

    metrics: dict[str, Any]
    record: str | None
    reuse: Reuse | None = None
    batch: BatchUse | None = None


def read_final_report(log: Path | None) -> dict[str, Any]:
    """The metrics after the last "Final report:" line of an eval's log, or {}."""
    return read_outcome(log).metrics


def _tail(log: Path | None) -> list[str]:
    """The lines at the end of a log (the report and the error are there: a debug log may
    be huge, so only its tail is read); [] if it cannot be read."""
    if log is None:
        return []
    try:
        with open(log, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > REPORT_TAIL:
                f.seek(size - REPORT_TAIL)
            data = f.read(REPORT_TAIL)
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > REPORT_TAIL else lines  # the first line read may be cut


ERROR_PREFIX = "oaieval: error: "  # how the engine (ours, and argparse's) says why it failed


def read_error(log: Path | None) -> str | None:
    """Why an eval failed, in one line, as its log says: the engine's last `oaieval: error:`
    line, or else the exception that ended a traceback (the original's way); or None."""
    lines = _tail(log)
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :].strip() or None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last):"):
            after = (line for line in lines[i + 1 :] if line.strip() and line[0] not in " \t")
            return next(after, "").strip() or None
    return None


def read_outcome(log: Path | None) -> Outcome:
    """The metrics after the last "Final report:" line of an eval's log, and the record
    path of its `Final report: {...}. Logged to PATH` line (both engines write both)."""
    lines = _tail(log)
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip().endswith("Final report:"):
            start = i + 1
            break
    if start is None:
        return Outcome({}, None)
    record = record_path_in(lines[:start])
    reuse = None
    for line in reversed(lines[:start]):
        found = _REUSE.search(line.rstrip())
        if found:
            reuse = Reuse(int(found[1]), int(found[2]), int(found[3].replace(",", "")))
            break
    batch = None
    for line in reversed(lines[:start]):
        sent = _BATCH.search(line)
        if sent:
            batch = BatchUse(int(sent[1]), int(sent[2]))
            break
    metrics: dict[str, Any] = {}
    for line in lines[start:]:
        match = _METRIC.match(line.strip())
        if not match:
            break
        metrics[match.group(1)] = parse_number(match.group(2).strip())
    return Outcome(metrics, record, reuse, batch)


def final_report_lines(result: Mapping[str, Any], record: str | None) -> list[str]:
    """The engine's closing lines for its final metrics, and the record it wrote (None: a
    dry run, which writes none). Numbers as Python shows them: NaN as nan."""
    where = "Dry run: no record written." if record is None else f"Logged to {record}"
    return [f"Final report: {dict(result)}. {where}", "Final report:"] + [
        f"{key}: {value}" for key, value in result.items()
    ]


def record_path_in(lines: Iterable[str]) -> str | None:
    """The record path of the last `Final report: {...}. Logged to PATH` line, if any."""
    found = None
    for line in lines:
        if "Final report: " in line and _LOGGED_TO in line:
            found = line.rpartition(_LOGGED_TO)[2].strip() or None
    return found
