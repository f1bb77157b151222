"""The one way tables are laid out as text: columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence


def align(rows: Sequence[Sequence[str]], gap: str = "  ") -> list[str]:
    """Each row as a line, its cells left-aligned in columns; no trailing spaces."""
    if not rows:
        return []
    columns = max(len(row) for row in rows)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(columns)]
    return [
        gap.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
