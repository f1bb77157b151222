"""What the terminal shows: the colour decision and the `>>> ` lines."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import IO, Any

_GREEN = "\033[1;32m"
_RED = "\033[1;31m"
_RESET = "\033[0m"


def use_color(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal; NO_COLOR turns it off and FORCE_COLOR on (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def highlight(text: str, color: bool) -> str:
    """The original's `>>> text` line, in bold green when colour is on."""
    return f"{_GREEN}>>> {text}{_RESET}" if color else f">>> {text}"


def alert(text: str, color: bool) -> str:
    """A `>>> text` line for failures, in bold red when colour is on."""
    return f"{_RED}>>> {text}{_RESET}" if color else f">>> {text}"


RUN_NOTE = "the evals go on, and the summary still goes to stderr and to report.json"
LOST_NOTE = "what this command prints is lost"


class GuardedStdout:
    """Standard output that survives its reader leaving (`oaievalset ... | head -1`), or
    never being there (`oaievalset ... >&-`, where Python's sys.stdout is None).

    The evals are costly work: when the pipe closes, the run goes on, says so once on
    stderr (with `note`, what that means for this command), and what would have gone to
    stdout goes nowhere. The descriptor is pointed at /dev/null, so that the interpreter's
    last flush does not fail either, and so that no file opened later takes its number.
    """

    def __init__(self, stream: IO[str] | None, prog: str, note: str = RUN_NOTE) -> None:
        self._stream = stream
        self._prog = prog
        self.note = note
        self._closed = stream is None
        self._told = False
        if stream is None:
            _point_at_devnull(1)

    def write(self, text: str) -> int:
        if self._stream is not None and not self._closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._lost(self._stream)
        self._tell()
        return len(text)

    def flush(self) -> None:
        if self._stream is not None and not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._lost(self._stream)
                self._tell()

    def isatty(self) -> bool:
        return self._stream is not None and not self._closed and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _lost(self, stream: IO[str]) -> None:
        self._closed = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            _point_at_devnull(stream.fileno())

    def _tell(self) -> None:
        if self._told:
            return
        self._told = True
        import sys

        with contextlib.suppress(OSError, ValueError, AttributeError):
            print(
                f"{self._prog}: standard output was closed; {self.note}",
                file=sys.stderr,
                flush=True,
            )


def _point_at_devnull(fd: int) -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
