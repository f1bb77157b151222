"""What happened to each command of a run: the result type and its statuses, shared by the
runner that fills results in and the report that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oaievalset.commands import Command
from oaievalset.records import Usage

DONE = "done"  # completed in this run
DONE_EARLIER = "done earlier"  # recorded before this run started
DONE_ELSEWHERE = "done elsewhere"  # completed by another oaievalset process during this run
FAILED = "failed"
TIMEOUT = "timed out"
INTERRUPTED = "interrupted"
NOT_RUN = "not run"  # never started (an earlier failure stopped the run)
INCOMPLETE = "incomplete"  # another process had it and did not complete it

FAILURES = (FAILED, TIMEOUT, INCOMPLETE)
COMPLETED = (DONE, DONE_EARLIER, DONE_ELSEWHERE)


class Result:
    """What happened to one command."""

    def __init__(
        self,
        command: Command,
        status: str,
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
        self.usage_all_runs: Usage | None = None  # of every run of it, as the journal keeps

    def __repr__(self) -> str:
        return f"Result({self.command!r}, {self.status!r}, exit_code={self.exit_code!r})"

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
