"""The progress file: read it, record completed commands, claim commands, keep run state.

The file itself is byte-compatible with the original: one `json.dumps(command)` per line,
so that either tool can resume the other's run. Everything else (the lock, claims, the
state of each command, logs, the report) lives in a folder beside it, never inside it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from oaievalset.errors import ProgressError

DEFAULT_PROGRESS_DIR = "/tmp/oaievalset"
STATE_COMPACT_AT = 256 * 1024  # bytes of state journal before a run compacts it
LOCK_TIMEOUT = 60.0  # seconds; the lock is only held to read and rewrite small files

_UNSAFE = re.compile(r"[^\w.-]")  # replaced by _ in log file names

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


@functools.lru_cache(maxsize=4096)
def _command_id(frozen: tuple[str, ...]) -> str:
    return hashlib.sha1("\0".join(frozen).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def command_id(command: Sequence[str]) -> str:
    """A short stable name for a command, for its claim and state entry."""
    return _command_id(tuple(command))


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
    """One progress file and the state folder beside it."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        # With --no-resume the first record drops what the file held when this run started
        # (as the original), but keeps what other processes recorded since: see _stale.
        self._fresh = fresh
        self._started_fresh = fresh
        self._stale: Counter[str] = Counter()  # entries (as JSON text) held at the start
        stem = path.name[: -len(".txt")] if path.name.endswith(".txt") else path.name
        self.state_dir = path.parent / f"{stem}.d"
        self._lock: Any = None  # a filelock.FileLock, made when first needed
        self._claims: dict[str, int] = {}  # command id -> descriptor holding its flock
        self._state_fd: int | None = None  # the state journal, open for the whole run
        self._snapshot: _Snapshot | None = None
        self._presence: int | None = None  # holds a shared flock on `active` during a run

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

    # -- writing -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the state folder now, so that an unwritable place fails before any eval."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / "logs").mkdir(exist_ok=True)
            (self.state_dir / "claims").mkdir(exist_ok=True)
        except OSError as exc:
            raise ProgressError(
                f"cannot create {self.state_dir} ({exc.strerror}); "
                f"make {self.path.parent} writable or set OAIEVALSET_PROGRESS_DIR"
            ) from None
        if not os.access(self.path.parent, os.W_OK):
            raise ProgressError(
                f"cannot write to {self.path.parent}; make it writable "
                f"or set OAIEVALSET_PROGRESS_DIR"
            )
        # A lock that another process keeps holding fails the run here, before any eval
        # runs, rather than after the first one. Under it (so that no other process is
        # between its own two steps), join the processes running on this file, and compact
        # the journal if this one is alone.
        with self.locked():
            if self._join():
                self._compact_state()
            assert self._presence is not None
            fcntl.flock(self._presence, fcntl.LOCK_SH)  # others may join; none may compact
            if self._fresh:
                self._stale = Counter(_entry_key(e) for e in self._readable_entries())

    def _join(self) -> bool:
        """Mark this process as running on this progress file, until close(): a shared
        flock on `active` in the state folder. True if no other process is running on it
        (the lock could be taken exclusively), which is when the journal may be compacted."""
        if self._presence is not None:
            os.close(self._presence)
        path = self.state_dir / "active"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ProgressError(
                f"cannot open {path} ({exc.strerror}); make {self.state_dir} writable"
            ) from None
        self._presence = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _compact_state(self) -> None:
        """Rewrite a large state journal with one line per command, its last state.

        Only while no other process runs on this file (one would keep appending to the
        journal it opened), and only when that at least halves it: a journal then grows
        with the commands of the set, not with the number of runs.
        """
        try:
            if self.state_path.stat().st_size <= STATE_COMPACT_AT:
                return
            lines = self.state_path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        states = _merge_states(lines)
        if 2 * len(states) > len(lines):
            return
        with suppress(OSError):  # the journal only informs: a failed compaction loses nothing
            atomic_write(self.state_path, "".join(json.dumps(s) + "\n" for s in states.values()))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the progress lock, for a read-modify-write of the progress file.

        A free lock is taken with one flock call; a busy one is waited for through filelock,
        with a timeout. Both lock the same file with flock, so they exclude each other, and
        other processes, whichever way each took it. (filelock's own bookkeeping costs about
        0.25 ms per acquire, more than the rest of recording an eval.)
        """
        fd = self._lock_if_free()
        if fd is not None:
            try:
                yield
            finally:
                os.close(fd)  # the only descriptor of this open file: closing unlocks
            return
        # Imported here: only a busy lock needs it, and filelock takes a while to load.
        from filelock import FileLock, Timeout

        if self._lock is None:
            # Only the main thread takes it: filelock's per-thread bookkeeping is not needed.
            self._lock = FileLock(str(self.state_dir / "lock"), thread_local=False)
        try:
            with self._lock.acquire(timeout=LOCK_TIMEOUT):
                yield
        except Timeout:
            raise ProgressError(
                f"could not lock {self._lock.lock_file} within {LOCK_TIMEOUT:.0f} s; "
                f"another oaievalset holds it: wait for it, or delete the file if none runs"
            ) from None

    def _lock_if_free(self) -> int | None:
        """A descriptor holding the progress lock, or None if it is busy (or cannot be
        opened: filelock then waits, or reports the error)."""
        try:
            fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked, but maybe a file that was removed meanwhile: not the lock any more.
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)
                return None
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

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
            key = _entry_key(entry)
            if left[key] > 0:
                left[key] -= 1
            else:
                kept.append(entry)
        return kept

    def record(self, command: Sequence[str]) -> None:
        """Add a completed command to the file, under the lock, with an atomic replace.

        The whole file is rewritten, each entry as json.dumps writes it, as the original
        does; the text we wrote last is reused while the file is unchanged, so a long run
        does not serialize every entry again each time.
        """
        with self.locked():
            if self._fresh:
                # The first record of a --no-resume run: a fresh record, which still keeps
                # every entry recorded since this run started, by any process.
                before = None
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

    def is_recorded(self, command: Sequence[str]) -> bool:
        """Whether the file (as it is now) holds this command; after --no-resume, before the
        first record, only what was recorded since this run started counts."""
        if self._fresh:
            return tuple(command) in recorded_set(self._since_start())
        snapshot = self._current()
        return snapshot is not None and tuple(command) in snapshot.commands

    @property
    def fresh(self) -> bool:
        """Whether this is a --no-resume run (the first record starts a fresh record)."""
        return self._started_fresh

    @property
    def kept_earlier_record(self) -> bool:
        """True while a --no-resume run has recorded nothing: the file still holds the
        record from before the run."""
        return self._fresh

    # -- claims: which process is running which command ---------------------------------
    # A claim is an OS lock (flock) on a small file per command: it vanishes with its
    # process, even on kill -9. These are plain non-blocking flock calls rather than
    # filelock objects: they are taken once per eval, and filelock's bookkeeping costs
    # about a hundred times more than the system call.

    def _claim_path(self, command: Sequence[str]) -> Path:
        return self.state_dir / "claims" / f"{command_id(command)}.lock"

    def try_claim(self, command: Sequence[str]) -> bool:
        """Claim a command for this process; False if another process holds it."""
        return self._claim(command, blocking=False)

    def wait_claim(self, command: Sequence[str]) -> None:
        """Wait until no other process holds the command, then hold it."""
        self._claim(command, blocking=True)

    def _claim(self, command: Sequence[str], blocking: bool) -> bool:
        key = command_id(command)
        if key in self._claims:
            return True
        fd = os.open(self._claim_path(command), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._claims[key] = fd
        return True

    def is_claimed_elsewhere(self, command: Sequence[str]) -> bool:
        return self._claim_path(command).exists() and self._held_by_other(command)

    def _held_by_other(self, command: Sequence[str]) -> bool:
        if self.try_claim(command):
            self.release(command)
            return False
        return True

    def claimed_elsewhere(self, commands: Sequence[Sequence[str]]) -> set[str]:
        """The ids of the commands that another process holds now (one folder listing,
        then a probe of only those that have a claim file)."""
        try:
            names = set(os.listdir(self.state_dir / "claims"))
        except OSError:
            return set()
        return {
            command_id(command)
            for command in commands
            if f"{command_id(command)}.lock" in names and self._held_by_other(command)
        }

    def release(self, command: Sequence[str]) -> None:
        fd = self._claims.pop(command_id(command), None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    # -- state beside the progress file --------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.jsonl"

    def read_state(self) -> dict[str, dict[str, Any]]:
        """The last known state of each command, by command id.

        The state file is a journal: one JSON object per line, the last one for a command
        wins. It only informs (the progress file decides what is done), so a line cut
        short by a crash is skipped.
        """
        try:
            lines = self.state_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return {}
        return _merge_states(lines)

    def update_state(self, command: Sequence[str], **fields: Any) -> None:
        """Append a state change for a command. One write() of one line with O_APPEND, so
        concurrent processes never interleave within a line."""
        event = {"id": command_id(command), "command": list(command), **fields}
        line = (json.dumps(event) + "\n").encode("utf-8")
        if self._state_fd is None:  # opened once per run, closed by close()
            try:
                self._state_fd = os.open(
                    self.state_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                )
            except OSError as exc:
                raise ProgressError(f"{self.state_path}: cannot write ({exc.strerror})") from None
        os.write(self._state_fd, line)

    def close(self) -> None:
        """Release what a run held: the state journal and any claims left."""
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None
        for fd in self._claims.values():
            os.close(fd)
        self._claims.clear()
        if self._presence is not None:
            os.close(self._presence)
            self._presence = None

    def log_path(self, command: Sequence[str]) -> Path:
        key = command[2] if len(command) > 2 else "eval"
        return Path(f"{self.state_dir}/logs/{_UNSAFE.sub('_', key)}.{command_id(command)[:8]}.log")


def _entry_key(entry: Entry) -> str:
    return json.dumps(entry)


def _merge_states(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The journal's lines merged by command id, later fields winning; bad lines skipped."""
    states: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            states.setdefault(event["id"], {}).update(event)
    return states


def atomic_write(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary sibling, then os.replace."""
    # One temporary name per process and thread: callers hold the lock of the file, and a
    # name left behind by a killed process is simply overwritten next time.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # the folder is new, or was removed during the run
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # No fsync: os.replace already makes the file whole-or-nothing whatever happens
            # to the process, and an fsync per completed eval would dominate small runs.
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
