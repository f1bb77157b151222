"""What the running evals have done so far, read from what they make durable as they go:
the answers in their answer journals (with the usage of each), and the lines of their logs
(the sample count, the retries). Read incrementally, a few times a second at most; nothing
here writes. Our oaieval writes both; another one leaves the journals empty, and then
only the evals' count is known."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from oaievalset.outcome import BATCHES_SUFFIX, Batches, read_batches
from oaievalset.prices import Price

_SAMPLES = re.compile(r"Evaluating (\d+) samples")
_KEPT = re.compile(r"Answer journal .*: (\d+) answers kept")
READ_AT_MOST = 4 << 20  # bytes read from one file in one look


class Progress(NamedTuple):
    """The answers received in this run, those taken from journals of earlier runs, the
    samples of the evals they are for, the tokens of this run's answers, the retries and
    how many of them were for a rate limit, and the seconds since the run began."""

    answers: int
    reused: int
    samples: int
    prompt_tokens: int
    completion_tokens: int
    retries: int
    rate_limited: int
    seconds: float
    batches: Batches | None = None  # of the evals that run through the Batch API

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, price: Price | None) -> float | None:
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6

    def describe(self, price: Price | None = None) -> list[str]:
        """The parts of a progress line, most important first."""
        from oaievalset.prices import format_cost

        rate = self.answers / self.seconds if self.seconds > 0 else 0.0
        answered = self.answers + self.reused
        parts = [
            f"{answered:,}/{self.samples:,} answers" if self.samples else f"{answered:,} answers",
            f"{self.tokens:,} tokens",
            f"{rate:.1f} req/s, {self.tokens / self.seconds if self.seconds > 0 else 0:,.0f} tok/s",
        ]
        if price is not None:
            parts.insert(2, format_cost(self.cost(price)))
        if self.batches is not None:
            parts.insert(1, self.batches.describe())
        if self.reused:
            parts.append(f"{self.reused:,} reused")
        if self.retries:
            parts.append(f"{self.retries} retries ({self.rate_limited} rate-limited)")
        return parts


class _Tail:
    """A file read from an offset on, whole lines at a time."""

    def __init__(self, path: Path, skip_existing: bool) -> None:
        self.path = path
        self.offset = 0
        if skip_existing:
            with contextlib.suppress(OSError):
                self.offset = path.stat().st_size

    def new_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:
                    self.offset = 0  # another file now (a journal set aside and begun anew)
                f.seek(self.offset)
                data = f.read(READ_AT_MOST)
        except OSError:
            return []  # not there yet, or gone (recorded, its journal removed)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offset += end
        return data[:end].splitlines()


class _Eval:
    def __init__(self, journal: Path, log: Path) -> None:
        self.journal = _Tail(journal, skip_existing=True)  # answers of earlier runs: not spent now
        self.log = _Tail(log, skip_existing=True)  # its earlier tries were counted then
        self.samples = self.kept = 0
        self.answers = self.prompt = self.completion = self.retries = self.limited = 0
        self.path = journal
        self.batches: Batches | None = None  # its batches' state, when it has some
        self._batches_seen: tuple[int, int] | None = None  # that file's size and mtime

    def update(self) -> None:
        self._update_batches()
        for line in self.journal.new_lines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if not isinstance(answer, dict) or "key" not in answer:
                continue  # the header
            self.answers += 1
            usage = answer.get("usage")
            if isinstance(usage, dict):
                self.prompt += _count(usage.get("prompt_tokens"))
                self.completion += _count(usage.get("completion_tokens"))
        for line in self.log.new_lines():
            if b"Retrying in " in line:
                self.retries += 1
                self.limited += b"HTTP 429" in line
            elif b"Evaluating " in line:
                found = _SAMPLES.search(line.decode("utf-8", "replace"))
                if found:  # again on a retry: the same eval
                    self.samples = int(found[1])
            elif b" answers kept" in line:
                found = _KEPT.search(line.decode("utf-8", "replace"))
                if found and not self.answers:  # at the first try's start; a retry's
                    self.kept = int(found[1])  # count holds the answers counted already

    def _update_batches(self) -> None:
        """Its batches' state file, read again when it changed (it is replaced whole); the
        last one read is kept once the eval ends and removes it."""
        try:
            info = os.stat(self.path.with_name(self.path.name + BATCHES_SUFFIX))
        except OSError:
            return
        seen = (info.st_size, info.st_mtime_ns)
        if seen != self._batches_seen:
            read = read_batches(self.path)
            if read is not None:
                self.batches, self._batches_seen = read, seen


class Watch:
    """The progress of a run's evals, by a key of the caller's (one per eval)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self._evals: dict[str, _Eval] = {}
        self._running: set[str] = set()  # the evals whose files may still grow

    def begin(self, key: str, journal: Path, log: Path) -> None:
        """An eval (re)starts: count what it writes from now on."""
        if key not in self._evals:
            self._evals[key] = _Eval(journal, log)
        self._running.add(key)

    def update(self) -> None:
        """What the running evals wrote since the last look (those that ended wrote all
        they will: a set of thousands is not read again at every look)."""
        for key in self._running:
            self._evals[key].update()

    def finish(self, key: str) -> None:
        """An eval ended: what it wrote last, before a success removes its journal."""
        if key in self._running:
            self._evals[key].update()
            self._running.discard(key)

    def answered(self, key: str) -> str | None:
        """`40/100` for one eval: its answers (kept ones included) of its samples, once its
        engine said how many samples it has; None before that or for another engine."""
        each = self._evals.get(key)
        if each is None or not each.samples:
            return None
        return f"{min(each.answers + each.kept, each.samples):,}/{each.samples:,}"

    def progress(self) -> Progress:
        evals = list(self._evals.values())
        batches = sum((e.batches for e in evals if e.batches), Batches(0, 0, 0, 0, 0))
        return Progress(
            answers=sum(e.answers for e in evals),
            reused=sum(min(e.kept, e.samples or e.kept) for e in evals),
            samples=sum(e.samples for e in evals),
            prompt_tokens=sum(e.prompt for e in evals),
            completion_tokens=sum(e.completion for e in evals),
            retries=sum(e.retries for e in evals),
            rate_limited=sum(e.limited for e in evals),
            seconds=time.monotonic() - self.began,
            batches=batches if batches.created else None,
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
