"""An engine's JSONL record, read strictly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any


def _no_nan(text: str) -> Any:
    raise ValueError(f"not JSON: {text}")


def read_record(path: Path) -> list[dict[str, Any]]:
    """Every line of a record, refusing NaN and Infinity as JSON does."""
    lines = path.read_text().split("\n")  # a U+2028 inside a string does not end a line
    return [json.loads(line, parse_constant=_no_nan) for line in lines if line]


def per_sample(record: Path) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """A record's events by sample (type and data, in order), and its final report: what
    two runs of the same eval with the same answers have alike."""
    samples: dict[str, list[Any]] = {}
    final: dict[str, Any] = {}
    for line in read_record(record):
        if "sample_id" in line:
            samples.setdefault(line["sample_id"], []).append((line["type"], line["data"]))
        elif "final_report" in line:
            final = line["final_report"]
    return samples, final


def requests_of_both(run: dict[str, Any]) -> tuple[Counter[str], Counter[str]]:
    """The requests that reached the server from our engine and from the original's, in
    one run of a differential test (`{"ours": {"requests": [...]}, "original": ...}`), each
    as a count of its JSON: the same requests, in any order."""
    ours, theirs = (
        Counter(json.dumps(r, sort_keys=True) for r in run[side]["requests"])
        for side in ("ours", "original")
    )
    return ours, theirs
