"""Results after a run: headline metrics from each eval's log, the summary table and the
JSON report."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oaievalset.runner import Result

# `[2026-01-01 12:00:00,000] [oaieval.py:253] accuracy: 0.5`, as both engines log it.
_METRIC = re.compile(r"^(?:\[[^\]]*\]\s*)*([A-Za-z_][\w.\-]*): (.+)$")
_HEADLINE_SKIP = ("boostrap_std", "bootstrap_std")
REPORT_TAIL = 1 << 20  # bytes read from the end of a log to find its final report


def parse_number(text: str) -> str | int | float:
    """`3` as 3, `0.5` as 0.5 (and `nan` as nan), anything else as the text itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_final_report(log: Path | None) -> dict[str, Any]:
    """The metrics after the last "Final report:" line of an eval's log, or {}."""
    if log is None:
        return {}
    try:
        with open(log, "rb") as f:
            # The report is at the end: a debug log may be huge, so read only its tail.
            size = os.fstat(f.fileno()).st_size
            if size > REPORT_TAIL:
                f.seek(size - REPORT_TAIL)
            data = f.read(REPORT_TAIL)
    except OSError:
        return {}
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > REPORT_TAIL:
        lines = lines[1:]  # the first line read is cut
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip().endswith("Final report:"):
            start = i + 1
            break
    if start is None:
        return {}
    metrics: dict[str, Any] = {}
    for line in lines[start:]:
        match = _METRIC.match(line.strip())
        if not match:
            break
        metrics[match.group(1)] = parse_number(match.group(2).strip())
    return metrics


def headline(metrics: dict[str, Any], most: int = 2) -> str:
    """The first few numeric metrics, e.g. `accuracy=0.667`."""
    shown = []
    for key, value in metrics.items():
        if key in _HEADLINE_SKIP or key.startswith("usage_"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = (
                f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
            )
            shown.append(f"{key}={text}")
        if len(shown) == most:
            break
    return " ".join(shown)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def summary_table(results: Sequence[Result]) -> str:
    """One row per eval: eval, status, duration, attempts, headline metrics."""
    header = ("eval", "status", "time", "tries", "metrics")
    rows = [
        (
            r.command[2] if len(r.command) > 2 else " ".join(r.command),
            r.status,
            _duration(r.duration),
            str(r.attempts) if r.attempts else "-",
            headline(r.metrics),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def json_report(
    model: str, eval_set: str, progress_file: Path, results: Sequence[Result], exit_code: int
) -> dict[str, Any]:
    """The run summary for scripts."""
    evals: list[dict[str, Any]] = []
    for r in results:
        evals.append(
            {
                "eval": r.command[2] if len(r.command) > 2 else None,
                "command": r.command,
                "status": r.status,
                "exit_code": r.exit_code,
                "attempts": r.attempts,
                "started": r.started,
                "ended": r.ended,
                "duration": r.duration,
                "log": str(r.log) if r.log else None,
                "metrics": {k: _finite(v) for k, v in r.metrics.items()},
            }
        )
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "model": model,
        "eval_set": eval_set,
        "progress_file": str(progress_file),
        "exit_code": exit_code,
        "counts": counts,
        "evals": evals,
    }


def _finite(value: Any) -> Any:
    # JSON has no NaN: the original's oaieval reports `boostrap_std: nan` for one sample.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False)
