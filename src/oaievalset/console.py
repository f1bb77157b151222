"""What the terminal shows: the colour decision and the `>>> ` lines."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO

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
