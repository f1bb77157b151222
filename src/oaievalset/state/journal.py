"""The state journal of a set: the last known state of each command (status, exit code,
times, attempts, log), as JSON lines that every run appends to. It only informs; the
progress file decides what is done."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from oaievalset.errors import ProgressError
from oaievalset.files import atomic_write
from oaievalset.state.claims import command_id

COMPACT_AT = 256 * 1024  # bytes of journal before a run that is alone compacts it


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None  # open for appending for the whole run

    def read(self) -> dict[str, dict[str, Any]]:
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


def merge(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Journal lines merged by command id, later fields winning; bad lines skipped."""
    states: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            states.setdefault(event["id"], {}).update(event)
    return states
