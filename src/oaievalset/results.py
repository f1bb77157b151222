"""What happened to each command of a run: the result type and its statuses, shared by the
runner that fills results in and the report that reads them."""

from __future__ import annotations

import itertools
import os
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oaievalset.commands import Command
from oaievalset.metrics import finite
from oaievalset.records import Usage

if TYPE_CHECKING:
    from oaievalset.outcome import BatchUse, Reuse


class Status(str, Enum):
    """How a command ended, or that it has not (yet) run. A str, so that it is written to
    JSON and compared as the word it is."""

    PENDING = "pending"  # in a report written while the run goes on
    DONE = "done"  # completed in this run
    DONE_EARLIER = "done earlier"  # recorded before this run started
    DONE_ELSEWHERE = "done elsewhere"  # completed by another oaievalset process during this run
    FAILED = "failed"
    TIMEOUT = "timed out"
    INTERRUPTED = "interrupted"
    NOT_RUN = "not run"  # never started (an earlier failure stopped the run)
    INCOMPLETE = "incomplete"  # another process had it and did not complete it
    STOPPED = "stopped"  # the run's budget was spent: not recorded, its answers kept

    # As the word, whatever the Python (3.11 changed how a str mixin formats).
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


PENDING, DONE, DONE_EARLIER, DONE_ELSEWHERE = (
    Status.PENDING,
    Status.DONE,
    Status.DONE_EARLIER,
    Status.DONE_ELSEWHERE,
)
FAILED, TIMEOUT, INTERRUPTED, NOT_RUN, INCOMPLETE, STOPPED = (
    Status.FAILED,
    Status.TIMEOUT,
    Status.INTERRUPTED,
    Status.NOT_RUN,
    Status.INCOMPLETE,
    Status.STOPPED,
)


class Phase(Enum):
    """Where a slot is in the run loop (its Result.status says how it ended)."""

    PENDING = "pending"  # not started yet
    RUNNING = "running"
    WAITING = "waiting"  # failed, and waiting for its retry
    HELD = "held"  # another oaievalset process runs it
    ENDED = "ended"


FAILURES = (FAILED, TIMEOUT, INCOMPLETE)
COMPLETED = (DONE, DONE_EARLIER, DONE_ELSEWHERE)


class Result:
    """What happened to one command."""

    def __init__(
        self,
        command: Command,
        status: Status,
        exit_code: int | None = None,
        attempts: int = 0,
        started: float | None = None,
        ended: float | None = None,
        log: Path | None = None,
        metrics: dict[str, Any] | None = None,
        record: str | None = None,
        where: str | None = None,
    ) -> None:
        self.command = command
        self.status = status
        self.exit_code = exit_code
        self.attempts = attempts
        self.started = started
        self.ended = ended
        self.log = log
        self.metrics: dict[str, Any] = metrics if metrics is not None else {}
        self.record = record  # the JSONL record the eval wrote, as its log names it
        self.where = where  # the node or job that ran it, when an executor says
        self.reason: str | None = None  # why it failed, when its log cannot say
        self.usage_all_runs: Usage | None = None  # of every run of it, as the journal keeps
        self.reuse: Reuse | None = None  # answers its run took from its answer journal
        self.batch: BatchUse | None = None  # what its run sent through the Batch API

    def __repr__(self) -> str:
        return f"Result({self.command!r}, {self.status!r}, exit_code={self.exit_code!r})"

    def as_dict(self) -> dict[str, Any]:
        """As report.json holds it: JSON values only (NaN as null)."""
        return {
            "eval": self.command[2] if len(self.command) > 2 else None,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "attempts": self.attempts,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "log": str(self.log) if self.log else None,
            "record": self.record,
            "where": self.where,
            "reason": self.reason,
            "usage": self.usage.as_dict() if self.usage else None,
            "usage_all_runs": self.usage_all_runs.as_dict() if self.usage_all_runs else None,
            "answers_reused": self.reuse.as_dict() if self.reuse else None,
            "batch": self.batch.as_dict() if self.batch else None,
            "metrics": {k: finite(v) for k, v in self.metrics.items()},
        }

    @property
    def usage(self) -> Usage | None:
        """The tokens of the run that counts, from its final report's usage sums."""
        return Usage.of(self.metrics, "usage_")

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the end; None when unknown. Times recorded by two
        processes (one started it again while the other ended it) may not make a span."""
        if self.started is None or self.ended is None or self.ended < self.started:
            return None
        return self.ended - self.started


_RUNS = itertools.count(1)  # several runs in one process (the Python API) get their own ids


def new_run_id() -> str:
    """A run's name among the set's reports: its start (UTC), process and number."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{os.getpid()}-{next(_RUNS)}"
