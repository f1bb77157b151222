"""What the terminal shows during a run: the `>>> ` lines on stdout, warnings and failures
on stderr, and the live status line, which is redrawn under the other lines."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from oaievalset.present.console import alert, highlight
from oaievalset.results import COMPLETED, FAILURES, Phase

LOG_TAIL_LINES = 8  # lines of a failed eval's log shown when its stderr was not live
LOG_TAIL_BYTES = 64 * 1024


class View:
    """The run's output. `slots_of` gives the slots (with `phase` and `result`), counted for
    the live line at each redraw."""

    def __init__(
        self,
        out: IO[str],
        err: IO[str],
        color: bool,
        err_color: bool,
        live: bool,
        slots_of: Callable[[], Sequence[Any]],
        show_log_tails: bool = True,
    ) -> None:
        self.out = out
        self.err = err
        self.color = color
        self.err_color = err_color
        self.live = live
        self.slots_of = slots_of
        self.show_log_tails = show_log_tails
        self.progress: list[str] = []  # parts of the progress inside the evals, if known
        self.each: list[str] = []  # `eval 40/100` for each running eval, drawn if room is left

    def say(self, text: str) -> None:
        """A `>>> ` line on stdout."""
        self.clear()
        print(highlight(text, self.color), file=self.out, flush=True)
        self.draw()

    def warn(self, line: str) -> None:
        self.clear()
        self.out.flush()
        print(line, file=self.err, flush=True)
        self.draw()

    def failure(self, text: str, log: Path | None) -> None:
        """A failed eval, with the end of its log when its stderr was not shown live."""
        lines = [alert(text, self.err_color)]
        if self.show_log_tails and log is not None:
            lines += [f"    {line}" for line in log_tail(log, LOG_TAIL_LINES)]
        self.warn("\n".join(lines))

    def clear(self) -> None:
        if self.live:
            self.out.write("\r\033[K")

    def draw(self) -> None:
        if not self.live:
            return
        slots = self.slots_of()
        done = sum(s.result.status in COMPLETED for s in slots)
        failed = sum(s.result.status in FAILURES for s in slots)
        running = sum(s.phase == Phase.RUNNING for s in slots)
        pending = len(slots) - done - failed - running
        width = _width(self.out)
        line = status_line(done, failed, running, pending, width)
        for part in self.progress:  # as many as fit, most important first
            if len(line) + 2 + len(part) >= width:
                break
            line += ("  " if line.endswith("]") else ", ") + part
        else:  # the whole set's progress fit: the running evals' own, as many as fit
            for i, part in enumerate(self.each):
                if len(line) + 3 + len(part) >= width:
                    break
                line += ("  | " if i == 0 else ", ") + part
        self.out.write(line)
        self.out.flush()

    def show_progress(self, parts: list[str], each: Sequence[str] = ()) -> None:
        """The progress inside the evals: on the live line, or else as a line of its own;
        `each`, the running evals' own (`eval 40/100`), only on a live line with room."""
        self.progress = parts
        self.each = list(each)
        if self.live:
            self.clear()
            self.draw()
        elif parts:
            self.warn(f"oaievalset: progress: {', '.join(parts)}")


def status_line(done: int, failed: int, running: int, pending: int, width: int) -> str:
    """`[3 done, 1 failed, 2 running, 2 pending]`, shorter forms on a narrow terminal; never
    as wide as the terminal, so that it never wraps."""
    forms = (
        f"[{done} done, {failed} failed, {running} running, {pending} pending]",
        f"[{done} ok {failed} fail {running} run {pending} wait]",
        f"[{done}/{failed}/{running}/{pending}]",
    )
    for form in forms:
        if len(form) < width:
            return form
    return forms[-1][: max(0, width - 1)]


def _width(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def log_tail(log: Path, lines: int) -> list[str]:
    """The last non-blank lines of a log (the child's error, usually)."""
    try:
        with open(log, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > LOG_TAIL_BYTES:
        text = text[1:]  # the first line read is cut
    return [line.rstrip() for line in text if line.strip()][-lines:]
