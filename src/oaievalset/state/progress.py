"""The progress file: read it, record completed commands, under a lock, atomically.

The file is byte-compatible with the original: one `json.dumps(command)` per line, the
whole file rewritten after each completed eval, so that either tool can resume the
other's run. Everything else lives in the state folder beside it (see `state.py`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oaievalset.commands import command_id
from oaievalset.errors import ProgressError
from oaievalset.files import atomic_write
from oaievalset.state.folder import StateFolder, state_folder_of

__all__ = ["ProgressFile", "atomic_write", "command_id", "progress_path"]

DEFAULT_PROGRESS_DIR = "/tmp/oaievalset"
LOCK_TIMEOUT = 60.0  # seconds; the lock is only held to read and rewrite small files


Entry = Any  # a recorded line: a command (list of str), or whatever JSON another tool wrote


def progress_dir() -> str:
    """Where progress files go: /tmp/oaievalset, as the original, unless overridden."""
    return os.environ.get("OAIEVALSET_PROGRESS_DIR") or DEFAULT_PROGRESS_DIR


def progress_path(model: str, eval_set: str, base: str | None = None) -> Path:
    """`{base}/{model}.{eval_set}.progress.txt`, built from the raw names as the original.

    A `/` in a name makes subfolders, as in the original; a `..` part, which would write
    outside the folder, is refused.
    """
    base = progress_dir() if base is None else base
    relative = f"{model}.{eval_set}.progress.txt"
    if ".." in relative.split("/"):
        raise ProgressError(
            f"model '{model}' and eval set '{eval_set}' would put the progress file outside "
            f"{base} ('..' in a name); use names without '..'"
        )
    # String formatting, not Path joining: a leading '/' in the model stays under base.
    return Path(f"{base}/{relative}")


def parse_progress(text: str, path: Path) -> list[Entry]:
    """The entries of a progress file; blank lines are skipped, a corrupt line is an error."""
    entries: list[Entry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise ProgressError(
                f"{path}:{lineno}: corrupt progress line ({exc}); "
                f"fix or delete that line, or run with --no-resume to start a fresh record"
            ) from None
    return entries


def recorded_set(entries: Sequence[Entry]) -> set[tuple[str, ...]]:
    """The commands among the entries, for quick look-ups (other JSON values are ignored)."""
    return {
        tuple(entry)
        for entry in entries
        if isinstance(entry, list) and all(isinstance(part, str) for part in entry)
    }


def format_entry(entry: Entry) -> str:
    """How the original shows a recorded entry: its elements joined by spaces."""
    if isinstance(entry, (list, str)):
        return " ".join(str(part) for part in entry)
    return json.dumps(entry)


class _Snapshot:
    """The progress file as this process last read or wrote it: the stat key it had, its
    entries, its text when we wrote it, and (made when first asked) its commands as a set."""

    def __init__(self, key: tuple[int, int, int], entries: list[Entry], text: str | None) -> None:
        self.key = key
        self.entries = entries
        self.text = text
        self._commands: set[tuple[str, ...]] | None = None

    @property
    def commands(self) -> set[tuple[str, ...]]:
        if self._commands is None:
            self._commands = recorded_set(self.entries)
        return self._commands


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ProgressFile:
    """One progress file, and (as `.state`) the state folder beside it."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.state: StateFolder = state_folder_of(path)
        # With --no-resume the first record drops what the file held when this run started
        # (as the original), but keeps what other processes recorded since: see _stale.
        self._fresh = fresh
        self._started_fresh = fresh
        self._stale: Counter[str] = Counter()  # entries (as JSON text) held at the start
        self._snapshot: _Snapshot | None = None

    @property
    def state_dir(self) -> Path:
        return self.state.path

    @property
    def fresh(self) -> bool:
        """Whether this is a --no-resume run (the first record starts a fresh record)."""
        return self._started_fresh

    @property
    def kept_earlier_record(self) -> bool:
        """True while a --no-resume run has recorded nothing: the file still holds the
        record from before the run."""
        return self._fresh

    # -- reading -------------------------------------------------------------------------

    def read(self) -> list[Entry]:
        """The recorded entries (none if there is no file). Safe without the lock: the file
        is only ever replaced whole."""
        snapshot = self._current()
        return [] if snapshot is None else list(snapshot.entries)

    def _current(self) -> _Snapshot | None:
        """The file as it is now; parsed again only when it has changed."""
        try:
            key = _stat_key(self.path)
        except (FileNotFoundError, NotADirectoryError):
            self._snapshot = None
            return None  # no file, or a folder on its path is a file: prepare() will say so
        except OSError as exc:
            raise ProgressError(f"{self.path}: cannot read ({exc.strerror})") from None
        if self._snapshot is not None and self._snapshot.key == key:
            return self._snapshot
        try:
            data = self.path.read_bytes()
        except IsADirectoryError:
            raise ProgressError(f"{self.path}: is a folder, not a progress file") from None
        except FileNotFoundError:
            self._snapshot = None
            return None
        except OSError as exc:
            raise ProgressError(f"{self.path}: cannot read ({exc.strerror})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProgressError(
                f"{self.path}: not UTF-8 text; delete it or run with --no-resume"
            ) from None
        self._snapshot = _Snapshot(key, parse_progress(text, self.path), None)
        return self._snapshot

    def _readable_entries(self) -> list[Entry]:
        """The entries of the file as it is now; none if it cannot be parsed (a --no-resume
        run replaces such a file, as the original does)."""
        try:
            snapshot = self._current()
        except ProgressError:
            return []
        return [] if snapshot is None else snapshot.entries

    def _since_start(self) -> list[Entry]:
        """After --no-resume, before our first record: the entries recorded since this run
        started (by other processes), in file order."""
        left = Counter(self._stale)
        kept = []
        for entry in self._readable_entries():
            key = json.dumps(entry)
            if left[key] > 0:
                left[key] -= 1
            else:
                kept.append(entry)
        return kept

    def is_recorded(self, command: Sequence[str]) -> bool:
        """Whether the file (as it is now) holds this command; after --no-resume, before the
        first record, only what was recorded since this run started counts."""
        if self._fresh:
            return tuple(command) in recorded_set(self._since_start())
        snapshot = self._current()
        return snapshot is not None and tuple(command) in snapshot.commands

    # -- writing -------------------------------------------------------------------------

    def locked(self) -> Any:
        """Hold the progress lock, for a read-modify-write of the progress file."""
        return self.state.lock.held(LOCK_TIMEOUT)

    def prepare(self) -> None:
        """Before the first eval: make the state folder (so that an unwritable place fails
        now), and under the lock (so that no other process is between its own two steps)
        join the processes running on this set and tidy the journal if this one is alone.
        A lock that another process keeps holding fails the run here, before any eval."""
        self.state.create(self.path.parent)
        with self.locked():
            self.state.join()
            if self._fresh:
                self._stale = Counter(json.dumps(e) for e in self._readable_entries())

    def close(self) -> None:
        """Release what a run held in the state folder."""
        self.state.close()

    def record(self, command: Sequence[str]) -> None:
        """Add a completed command to the file, under the lock, with an atomic replace.

        The whole file is rewritten, each entry as json.dumps writes it, as the original
        does; the text we wrote last is reused while the file is unchanged, so a long run
        does not serialize every entry again each time.
        """
        with self.locked():
            before: _Snapshot | None = None
            text: str | None
            if self._fresh:
                # The first record of a --no-resume run: a fresh record, which still keeps
                # every entry recorded since this run started, by any process.
                entries: list[Entry] = self._since_start()
                text = None
                self._fresh = False
            else:
                before = self._current()
                entries = [] if before is None else list(before.entries)
                text = "" if before is None else before.text
            if text is None:
                text = "".join(json.dumps(entry) + "\n" for entry in entries)
            entries.append(list(command))
            text += json.dumps(list(command)) + "\n"
            atomic_write(self.path, text)
            after = _Snapshot(_stat_key(self.path), entries, text)
            if before is not None and before._commands is not None:
                after._commands = before._commands  # extended, not built again
                after._commands.add(tuple(command))
            self._snapshot = after
