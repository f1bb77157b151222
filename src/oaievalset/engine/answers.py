"""The answer journal: every answer a model gives, kept on disk the moment it arrives, so
that an eval run again after a crash, a failure or Ctrl-C asks only what has no answer yet.
And the answer cache, its opt-in sibling across runs.

The journal is a JSONL file (`OAIEVAL_ANSWER_JOURNAL` names it). Its first line says what
run it is for: the eval, its arguments, the seed, --max_samples, the completion functions
and their arguments, and a digest of the data files. A journal for anything else is set
aside (renamed, with a log line saying why), never mixed in. Each further line is one
answer, under the key of the request it answers: the sample and the position among that
sample's requests, the completion function and its server, and the request body. Lines
are appended with one write each, so a process killed at any moment leaves whole lines (a
cut last line is dropped when the journal is opened again). Errors are never written.

The answer cache (`OAIEVAL_ANSWER_CACHE` names a folder, one file per eval in it) keeps
answers under the same keys for any later run, whatever its arguments: the same request
in the same place gets the same answer again. It is off unless asked for, as a model
sampled at a temperature gives other answers on purpose.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oaievalset.engine.errors import EngineError
from oaievalset.outcome import ANSWER_CACHE, ANSWER_JOURNAL

ENV = ANSWER_JOURNAL
CACHE_ENV = ANSWER_CACHE
FORMAT = 1  # of the journal's lines
HEADER = "answer_journal"
CACHE_HEADER = "answer_cache"

logger = logging.getLogger("oaieval")


class _Place:
    """Where requests are made: a sample, and how many requests it has made so far."""

    def __init__(self, sample_id: str) -> None:
        self.sample_id = sample_id
        self.asked = 0

    def next(self) -> tuple[str, int]:
        position, self.asked = self.asked, self.asked + 1
        return self.sample_id, position


_PLACE: contextvars.ContextVar[_Place] = contextvars.ContextVar("answer_place")
_OUTSIDE = _Place("")  # requests outside any sample (none of our classes makes one)
_OUTSIDE_LOCK = threading.Lock()


@contextmanager
def at_sample(sample_id: str) -> Iterator[None]:
    """The requests made inside are this sample's, numbered in the order they are made
    (a sample's requests are made one after another, in an order its seed decides)."""
    token = _PLACE.set(_Place(sample_id))
    try:
        yield
    finally:
        _PLACE.reset(token)


def current_sample() -> str:
    """The sample whose requests are being made here ("" outside any)."""
    place = _PLACE.get(None)
    return place.sample_id if place is not None else ""


def request_key(function: str, server: str, body: Mapping[str, Any]) -> str:
    """The key of the next request made here: the place (sample, position), the completion
    function, its server, and the request body (messages and every parameter)."""
    place = _PLACE.get(None)
    if place is None:
        with _OUTSIDE_LOCK:
            where = _OUTSIDE.next()
    else:
        where = place.next()
    text = json.dumps([*where, function, server, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def data_digest(paths: Mapping[str, Path]) -> dict[str, str]:
    """A digest of each data file (or folder of them) by the argument naming it: samples
    that change make another journal."""
    digests = {}
    for name, path in sorted(paths.items()):
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else "").encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        digests[name] = digest.hexdigest()[:32]
    return digests


class AnswerJournal:
    """The answers of one eval run (see the module's doc), read on open and appended to as
    answers arrive; safe to use from every thread of the run. Without an identity, the
    answer cache's file of an eval, for any run."""

    def __init__(self, path: Path, identity: Mapping[str, Any] | None) -> None:
        self.path = path
        # As the header keeps it.
        self.identity = None if identity is None else json.loads(_dumps(identity))
        self._index: dict[str, tuple[int, int]] = {}  # key -> (offset, length) of its line
        self._lock = threading.Lock()
        self.reused = 0  # answers taken from the journal in this run
        self.reused_tokens = 0
        self.asked = 0  # answers asked of the model in this run
        self.created = not path.exists()  # by this run
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise EngineError(
                f"{path}: cannot use the {self.what.lower()} ({exc.strerror}); "
                f"check {ENV if identity is not None else CACHE_ENV}"
            ) from None

    def _open(self) -> None:
        kept = self._read() if self.path.exists() else False
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        if not kept:
            header: dict[str, Any] = {CACHE_HEADER: FORMAT}
            if self.identity is not None:
                header = {HEADER: FORMAT, "identity": self.identity}
            os.write(self._fd, (_dumps(header) + "\n").encode("utf-8"))
        self._reader = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._failed = False  # a write failed (a full disk): answers are no longer kept

    def _read(self) -> bool:
        """Index the journal's answers; False (and the journal set aside) if it is for
        another run or unreadable."""
        with open(self.path, "rb") as f:
            first = f.readline()
            why = self._mismatch(first)
            if why is not None:
                f.close()
                aside = self.path.with_name(self.path.name + ".set-aside")
                os.replace(self.path, aside)
                logger.warning(f"{self.what} {self.path} {why}; set aside as {aside}")
                return False
            offset = len(first)
            skipped = 0
            for line in f:
                if not line.endswith(b"\n"):  # cut by a crash mid-write: dropped
                    os.truncate(self.path, offset)
                    break
                try:
                    key = json.loads(line)["key"]
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                else:
                    self._index.setdefault(str(key), (offset, len(line)))
                offset += len(line)
        if skipped:
            logger.warning(f"{self.what} {self.path}: {skipped} unreadable line(s) skipped")
        if self._index:
            logger.info(f"{self.what} {self.path}: {len(self._index)} answers kept")
        return True

    @property
    def what(self) -> str:
        return "Answer journal" if self.identity is not None else "Answer cache"

    def _mismatch(self, first: bytes) -> str | None:
        if self.identity is None:
            try:
                cache = json.loads(first).get(CACHE_HEADER)
            except (ValueError, AttributeError):
                cache = None
            return None if cache == FORMAT else "is not an answer cache of this format"
        try:
            header = json.loads(first)
            kept = header["identity"] if header.get(HEADER) == FORMAT else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return "is not an answer journal of this oaieval"
        if kept is None:
            return "is of another format"
        if kept != self.identity:
            changed = sorted(
                k for k in set(kept) | set(self.identity) if kept.get(k) != self.identity.get(k)
            )
            verb = "differs" if len(changed) == 1 else "differ"
            return f"was written for other arguments ({', '.join(changed)} {verb})"
        return None

    def get(self, key: str, count: bool = True) -> dict[str, Any] | None:
        """The answer kept under the key, or None; `count` counts it as reused."""
        with self._lock:
            place = self._index.get(key)
        if place is None:
            return None
        answer: dict[str, Any] = json.loads(os.pread(self._reader, place[1], place[0]))
        if count:
            with self._lock:
                self.reused += 1
                self.reused_tokens += _total_tokens(answer.get("usage"))
        return answer

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Keep an answer: one line, in one write, before it is scored."""
        data = (_dumps({"key": key, **answer}) + "\n").encode("utf-8")
        with self._lock:
            self.asked += 1
            if self._failed:
                return
            try:
                written = os.write(self._fd, data)  # O_APPEND: at the end, whole
            except OSError as exc:
                written, why = 0, exc.strerror
            else:
                why = "a short write"
            if written != len(data):  # the eval goes on; what comes next is not kept
                self._failed = True
                logger.warning(f"{self.what} {self.path}: cannot write ({why}); "
                               f"the answers from now on are not kept")  # fmt: skip
                return
            end = os.lseek(self._fd, 0, os.SEEK_CUR)
            self._index.setdefault(key, (end - written, written))

    def summary(self) -> str:
        """The log line the orchestrator reads back (outcome.read_outcome)."""
        return Answers([self]).summary()

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._reader)

    def __enter__(self) -> AnswerJournal:
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if error is not None:  # a failed run: what it kept for the next
            logger.info(self.summary())
        self.close()


class Answers:
    """Where a run finds answers and keeps them: its journal, then the cache (either may
    be missing). An answer found in one is not asked; one asked is kept in both."""

    def __init__(self, stores: list[AnswerJournal]) -> None:
        self.stores = stores
        self.asked = 0
        self._fresh: set[str] = set()  # asked in this run: not reused when found again
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        fresh = key in self._fresh
        for store in self.stores:
            answer = store.get(key, count=not fresh)
            if answer is not None:
                return answer
        return None

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        with self._lock:
            self.asked += 1
            self._fresh.add(key)
        for store in self.stores:
            store.put(key, answer)

    def journal(self) -> AnswerJournal:
        """The run's journal (the store that has an identity)."""
        return next(store for store in self.stores if store.identity is not None)

    def new_round(self) -> None:
        """The eval runs again from its first sample (batch mode, engine/batch.py): what
        it reuses is counted afresh."""
        for store in self.stores:
            with store._lock:
                store.reused = store.reused_tokens = 0

    def summary(self) -> str:
        """The log line the orchestrator reads back (outcome.read_outcome)."""
        from oaievalset.outcome import reuse_line

        reused = sum(store.reused for store in self.stores)
        tokens = sum(store.reused_tokens for store in self.stores)
        asked = self.asked or max((store.asked for store in self.stores), default=0)
        where = " and ".join(
            str(store.path) if store.identity is not None else f"the answer cache {store.path}"
            for store in self.stores
        )
        return reuse_line(reused, reused + asked, tokens, where)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __enter__(self) -> Answers:
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if error is not None:  # a failed run: what it kept for the next
            logger.info(self.summary())
        self.close()


def _total_tokens(usage: Any) -> int:
    if isinstance(usage, Mapping):
        total = usage.get("total_tokens")
        if isinstance(total, int):
            return total
    return 0


def _dumps(value: Any) -> str:
    from oaievalset.engine.recorder import dumps

    return dumps(value)
