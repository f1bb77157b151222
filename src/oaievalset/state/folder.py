"""The state folder beside a progress file, `{model}.{eval_set}.progress.d/`: its layout and
the parts that live in it. The progress file itself holds nothing but completed commands,
so that the original can still read it.

    lock            the progress lock (locks.ProgressLock)
    active          held shared by every process running on the set (locks.Presence)
    claims/         one lock per command being run (claims.Claims)
    state.jsonl     the last state of each command (journal.Journal)
    logs/           one log per command: the child's stdout and stderr
    answers/        one answer journal per eval not yet recorded (engine/answers.py)
    reports/        one JSON report per run; report.json is the latest
    report.html     the report page, its samples' scripts in report_files/ (present/page.py)
    record-summaries.json  what the report read of each record (summaries.py)
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oaievalset.commands import command_id
from oaievalset.errors import ProgressError
from oaievalset.outcome import BATCHES_SUFFIX
from oaievalset.state.claims import Claims
from oaievalset.state.journal import CommandState, Journal
from oaievalset.state.locks import Presence, ProgressLock

_UNSAFE = re.compile(r"[^\w.-]")  # replaced by _ in log file names


class StateFolder:
    """The front of a set's state: callers ask it, and it asks its parts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = ProgressLock(path / "lock")
        self._claims = Claims(path / "claims")
        self._journal = Journal(path / "state.jsonl")
        self._presence = Presence(path / "active")

    # -- which process runs which command --------------------------------------------

    def try_claim(self, command: Sequence[str]) -> bool:
        """Claim a command for this process; False if another process holds it."""
        return self._claims.try_claim(command)

    def wait_claim(self, command: Sequence[str]) -> None:
        """Wait until no other process holds the command, then hold it."""
        self._claims.wait_claim(command)

    def release(self, command: Sequence[str]) -> None:
        self._claims.release(command)

    def held_elsewhere(self, commands: Sequence[Sequence[str]]) -> set[str]:
        """The ids of the commands another process runs now."""
        return self._claims.held_elsewhere(commands)

    # -- the last known state of each command ----------------------------------------

    def states(self) -> dict[str, CommandState]:
        """The journal: the last known state of each command, by command id."""
        return self._journal.read()

    def note(self, command: Sequence[str], **fields: Any) -> None:
        """Tell the journal of a change of a command's state (fields of CommandState)."""
        self._journal.update(command, **fields)

    # -- files -----------------------------------------------------------------------

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    @property
    def latest_report(self) -> Path:
        return self.path / "report.json"

    def log_path(self, command: Sequence[str]) -> Path:
        key = command[2] if len(command) > 2 else "eval"
        return Path(f"{self.path}/logs/{_UNSAFE.sub('_', key)}.{command_id(command)[:8]}.log")

    def answers_path(self, command: Sequence[str]) -> Path:
        """The eval's answer journal: by eval name alone, so that a run with other
        arguments finds the journal of the last and sets it aside (never two to mix)."""
        key = command[2] if len(command) > 2 else "eval"
        return Path(f"{self.path}/answers/{_UNSAFE.sub('_', key)}.jsonl")

    def forget_answers(self, command: Sequence[str]) -> None:
        """Remove the eval's answer journal (and one it set aside, and its batches' state):
        it is recorded, or --no-resume starts it afresh."""
        path = self.answers_path(command)
        for suffix in ("", ".set-aside", BATCHES_SUFFIX):
            each = path.with_name(path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                each.unlink()

    def create(self, parent: Path) -> None:
        """Make the folders, so that an unwritable place fails before any eval runs."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "logs").mkdir(exist_ok=True)
            self._claims.folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise ProgressError(
                f"cannot create {self.path} ({exc.strerror}); "
                f"make {parent} writable or set OAIEVALSET_PROGRESS_DIR"
            ) from None
        if not os.access(parent, os.W_OK):
            raise ProgressError(
                f"cannot write to {parent}; make it writable or set OAIEVALSET_PROGRESS_DIR"
            )

    def join(self) -> None:
        """Count this process among those running on the set, until close(); compact the
        journal if it is the only one. Call under the progress lock."""
        if self._presence.join():
            self._journal.compact()
        self._presence.share()  # others may join; none may compact

    def close(self) -> None:
        """Release what a run held: the journal, any claims left, the presence lock."""
        self._journal.close()
        self._claims.release_all()
        self._presence.leave()


def state_folder_of(progress_file: Path) -> StateFolder:
    """`x.progress.txt` -> the folder `x.progress.d` beside it."""
    name = progress_file.name
    stem = name[: -len(".txt")] if name.endswith(".txt") else name
    return StateFolder(progress_file.parent / f"{stem}.d")
