"""The JSONL record of a run: the spec first, one line per event, the final report last."""

from __future__ import annotations

import json
import logging
import math
import random
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oaievalset.files import atomic_write

logger = logging.getLogger("oaieval")


def new_run_id(now: datetime | None = None) -> str:
    """A run id in the original's shape: yymmddHHMMSS plus 8 random letters and digits."""
    now = now or datetime.now(timezone.utc)
    suffix = "".join(random.choices(string.ascii_uppercase + string.digits, k=8))
    return now.strftime("%y%m%d%H%M%S") + suffix


def json_safe(value: Any) -> Any:
    """The value with NaN and infinities as null, so that every line is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any) -> str:
    """One line of JSON. A lone surrogate (a server may send `"\\ud800"`) cannot be written
    as UTF-8: it becomes its JSON escape again, as it only ever stands inside a string."""
    text = json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Event:
    sample_index: int
    seq: int
    sample_id: str
    type: str
    data: dict[str, Any]
    created_at: str


@dataclass
class Recorder:
    """Collects events from any thread; writes them in sample order, so that the record does
    not depend on the thread count or on scheduling."""

    run_id: str
    created_by: str = ""
    _events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    @contextmanager
    def sample(self, sample_id: str, index: int) -> Iterator[None]:
        """Events recorded inside belong to this sample."""
        self._local.current = (sample_id, index)
        try:
            yield
        finally:
            self._local.current = None

    def record(self, type: str, data: dict[str, Any]) -> None:
        current: tuple[str, int] | None = getattr(self._local, "current", None)
        if current is None:
            raise RuntimeError("an event was recorded outside of a sample")
        sample_id, index = current
        now = str(datetime.now(timezone.utc))
        with self._lock:
            self._events.append(Event(index, len(self._events), sample_id, type, data, now))

    def record_match(self, correct: bool, *, expected: Any, picked: Any, **extra: Any) -> None:
        # As the original: a one-element list of expected answers is written as the element.
        if isinstance(expected, list) and len(expected) == 1:
            expected = expected[0]
        self.record(
            "match", {"correct": bool(correct), "expected": expected, "picked": picked, **extra}
        )

    def record_metrics(self, **metrics: Any) -> None:
        self.record("metrics", metrics)

    def events(self, type: str | None = None) -> list[Event]:
        """Events in sample order, then in the order each sample recorded them."""
        with self._lock:
            ordered = sorted(self._events, key=lambda e: (e.sample_index, e.seq))
        return [e for e in ordered if type is None or e.type == type]

    def lines(self, spec: dict[str, Any], final_report: dict[str, Any]) -> list[str]:
        out = [dumps({"spec": spec})]
        for event_id, e in enumerate(self.events()):
            out.append(
                dumps(
                    {
                        "run_id": self.run_id,
                        "event_id": event_id,
                        "sample_id": e.sample_id,
                        "type": e.type,
                        "data": e.data,
                        "created_by": self.created_by,
                        "created_at": e.created_at,
                    }
                )
            )
        out.append(dumps({"final_report": final_report, "run_id": self.run_id}))
        return out

    def write(self, path: Path, spec: dict[str, Any], final_report: dict[str, Any]) -> None:
        """Write the whole record at once, through a temporary file: a reader never sees
        half a record."""
        text = "".join(line + "\n" for line in self.lines(spec, final_report))
        atomic_write(path, text)


def sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage of several answers added up, key by key in the order first seen: a missing
    or null count adds nothing, and nested counts (`completion_tokens_details`) are added up
    inside (the original crashes on those, openai/evals #1560). A key that is null in every
    answer sums to 0, as in the original."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, dict):
                inner = total.get(key)
                total[key] = sum_usage([inner, value] if isinstance(inner, dict) else [value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                current = total.get(key, 0)
                total[key] = (current if isinstance(current, (int, float)) else 0) + value
            else:
                total.setdefault(key, 0)
    return total


def add_token_usage(result: dict[str, Any], recorder: Recorder) -> None:
    """Add the summed usage of the sampling events to the final report as `usage_<key>`,
    with the original's log lines."""
    sampling = recorder.events("sampling")
    usages = [e.data["usage"] for e in sampling if isinstance(e.data.get("usage"), dict)]
    logger.info(f"Found {len(usages)}/{len(sampling)} sampling events with usage data")
    if not usages:
        return
    total = sum_usage(usages)
    shown = "\n".join(f"{key}: {_count(value)}" for key, value in total.items())
    logger.info(f"Token usage from {len(usages)} sampling events:\n{shown}")
    for key, value in total.items():
        name = f"usage_{key}"
        if name in result:
            logger.warning(f"Usage key {name} already exists in result, not adding {name}")
        else:
            result[name] = value


def _count(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_count(v)}" for k, v in value.items())
    return f"{value:,}"
