"""What the reports read of each record, kept between runs in the set's state folder
(`record-summaries.json`), so that a record is read once: each summary is keyed by the
record's path, size, modification time and inode, and a record that changed in any of
them is read again. The cache only saves work: lost or unreadable, it is rebuilt."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from oaievalset.records import RecordSummary, Sample, stream_record

CACHE_NAME = "record-summaries.json"
FORMAT = 1  # raised when a summary's fields change: an older cache is then ignored


class Sink(Protocol):
    """Where a record's samples go, one at a time, while the record is read (the page's
    script of them)."""

    def add(self, sample: Sample) -> None: ...

    def close(self) -> None: ...  # the record is read: its samples are all there


# Given a record's path, size and modification time, before it is read: its sink, if any.
SinkFor = Callable[[Path, int, int], "Sink | None"]


class SummaryCache:
    """The summaries of one state folder's records. `path` None keeps nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.generation = 0  # how many passes have read a record: the one reading now is +1
        self.read = 0  # records read in full in this pass
        self.used: set[str] = set()
        if path is not None:
            self._load(path)

    @classmethod
    def of_folder(cls, state_dir: Path) -> SummaryCache:
        """The cache of a state folder, or one that keeps nothing when the folder does not
        exist (it is not made for the cache)."""
        return cls(state_dir / CACHE_NAME if state_dir.is_dir() else None)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):  # none yet, or not ours: start again
            return
        if isinstance(data, dict) and data.get("format") == FORMAT:
            records = data.get("records")
            if isinstance(records, dict):
                self.entries = {k: v for k, v in records.items() if isinstance(v, dict)}
            generation = data.get("generation")
            self.generation = generation if isinstance(generation, int) else 0

    def summary(self, where: Path | str, sink_for: SinkFor | None = None) -> RecordSummary:
        """The record's summary: from the cache when the file is as it was then, else read
        (a line at a time, its samples handed one by one to the sink `sink_for` gives)
        and kept."""
        path = Path(where)
        key = str(path)
        self.used.add(key)
        try:
            stat = os.stat(path)
        except OSError:  # missing or unreadable: read_record says which, nothing to keep
            return stream_record(path)
        entry = self.entries.get(key)
        if entry is not None and entry.get("key") == _key(stat):
            try:
                return RecordSummary.from_json(entry)
            except (KeyError, TypeError, ValueError):
                pass  # an entry not as we write them: read the record again
        # The file's state before the read: a record still being written that grows during
        # the read has another key next time, and is read again then.
        sink = sink_for(path, stat.st_size, stat.st_mtime_ns) if sink_for else None
        summary = stream_record(path, sink.add if sink else None, stat.st_size, stat.st_mtime_ns)
        if sink is not None:
            sink.close()
        self.read += 1
        self.entries[key] = {
            **summary.as_json(),
            "key": _key(stat),
            "read_in": self.generation + 1,
        }
        return summary

    def save(self) -> None:
        """Write the cache when this pass read a record: the entries used, and the others
        whose record still exists. Whole or not at all; a failure costs only a read later."""
        from oaievalset.files import atomic_write

        if self.path is None or not self.read:
            return
        kept = {k: v for k, v in self.entries.items() if k in self.used or os.path.exists(k)}
        data = {"format": FORMAT, "generation": self.generation + 1, "records": kept}
        try:
            # ASCII: a lone surrogate (a path not in UTF-8, a record's text) stays an escape.
            atomic_write(self.path, json.dumps(data))
        except OSError:
            return
        self.entries, self.generation, self.read = kept, self.generation + 1, 0


def _key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]
