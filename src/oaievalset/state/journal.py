"""The state journal of a set: the last known state of each command (status, exit code,
times, attempts, log), as JSON lines that every run appends to. It only informs; the
progress file decides what is done."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypedDict

from oaievalset.commands import command_id
from oaievalset.errors import ProgressError
from oaievalset.files import atomic_write
from oaievalset.outcome import BatchUse, Outcome, Reuse, read_outcome

COMPACT_AT = 256 * 1024  # bytes of journal before a run that is alone compacts it


class DoneState(TypedDict, total=False):
    """The run of a command that produced its record, kept apart so that a later attempt
    (a failed or interrupted --no-resume run) cannot stand for it."""

    started: float | None
    ended: float | None
    attempts: int
    metrics: dict[str, Any]  # its final report, NaN as null
    record: str | None
    where: str | None
    reuse: dict[str, int] | None  # what it took from its answer journal (outcome.Reuse)


class CommandState(TypedDict, total=False):
    """One command's last known state: the journal's lines for it merged, later fields
    winning. Every field may be missing (a line from an older version, or not yet known)."""

    id: str  # commands.command_id of the command
    command: list[str]
    status: str  # a results.Status, or "running"
    pid: int  # of the oaievalset process that ran it
    exit_code: int | None
    started: float | None  # time.time() of the first start of its last run
    ended: float | None
    attempts: int
    log: str  # the eval's log
    record: str  # where its record is, when an executor moved it
    where: str | None  # the node or job that ran it
    usage_all_runs: dict[str, int]  # the tokens of every run of it
    done: DoneState  # the run that produced its record, if one did


def as_recorded(state: CommandState) -> tuple[CommandState, Outcome]:
    """A recorded command's state and outcome as of the run that recorded it: what a later
    attempt wrote (its times, tries, status, and its log over the old one) does not
    describe the record that counts. A journal from before `done` was kept: the log."""
    done = state.get("done")
    if not done:
        log = state.get("log")
        return state, read_outcome(Path(log) if log else None)
    merged: CommandState = {**state, **done}  # type: ignore[typeddict-item]
    merged["status"] = "done"
    merged["exit_code"] = 0
    reuse, batch = Reuse.of(done.get("reuse")), BatchUse.of(done.get("batch"))
    return merged, Outcome(dict(done.get("metrics") or {}), done.get("record"), reuse, batch)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None  # open for appending for the whole run

    def read(self) -> dict[str, CommandState]:
        """The last known state of each command, by command id: the journal's lines merged,
        later fields winning. A line cut short by a crash is skipped."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return {}
        return merge(lines)

    def update(self, command: Sequence[str], **fields: Any) -> None:
        """Append a state change for a command. One write() of one line with O_APPEND, so
        concurrent processes never interleave within a line."""
        event = {"id": command_id(command), "command": list(command), **fields}
        line = (json.dumps(event) + "\n").encode("utf-8")
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ProgressError(f"{self.path}: cannot write ({exc.strerror})") from None
        os.write(self._fd, line)

    def compact(self) -> None:
        """Rewrite a large journal with one line per command, its last state.

        Only while no other process runs on the set (one would keep appending to the
        journal it opened), and only when that at least halves it: the journal then grows
        with the commands of the set, not with the number of runs.
        """
        try:
            if self.path.stat().st_size <= COMPACT_AT:
                return
            lines = self.path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        states = merge(lines)
        if 2 * len(states) > len(lines):
            return
        with suppress(OSError):  # the journal only informs: a failed compaction loses nothing
            atomic_write(self.path, "".join(json.dumps(s) + "\n" for s in states.values()))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def merge(lines: Sequence[str]) -> dict[str, CommandState]:
    """Journal lines merged by command id, later fields winning; bad lines skipped."""
    states: dict[str, CommandState] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            states.setdefault(event["id"], {}).update(event)  # type: ignore[typeddict-item]
    return states
