"""A comparison (compare.Comparison) as people and scripts read it: text, JSON, CSV and
Markdown. The page is present/page.py."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from oaievalset.compare import Cell, Comparison
from oaievalset.present.table import align
from oaievalset.prices import format_cost

FORMAT_VERSION = 1  # of the JSON; raised when a field changes meaning or goes


def as_json(comparison: Comparison) -> str:
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "eval_set": comparison.eval_set,
            "models": comparison.models,
            "evals": comparison.evals,
            "cells": [c.as_dict() for c in comparison.cells.values()],
            "aggregates": [comparison.aggregate(m) for m in comparison.models],
            "notes": comparison.notes,
        },
        indent=2,
        allow_nan=False,
    )


CSV_FIELDS = ("model", "eval", "status", "metric", "value", "samples", "duration")


def as_csv(comparison: Comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [*CSV_FIELDS, "prompt_tokens", "completion_tokens", "total_tokens", "cost", "arguments"]
    )
    for cell in comparison.cells.values():
        row = cell.as_dict()
        usage = row["usage"] or {}
        writer.writerow(
            [*(_csv(row[f]) for f in CSV_FIELDS)]
            + [_csv(usage.get(k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
            + [_csv(row["cost"]), " ".join(cell.command[3:]) if cell.command else ""]
        )
    return out.getvalue().rstrip("\n")


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def grid_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The grid as strings: a header, a row per eval, then the model totals."""
    header = ["eval", *comparison.models]
    rows = []
    for name in comparison.evals:
        row = [name]
        for model in comparison.models:
            cell = comparison.cell(model, name)
            row.append(_cell_text(cell))
        rows.append(row)
    totals = ["mean / tokens"]
    for model in comparison.models:
        agg = comparison.aggregate(model)
        mean = "-" if agg["mean"] is None else f"{agg['mean']:.3f}"
        cost = "" if agg["cost"] is None else f" {format_cost(agg['cost'])}"
        # `-`, as in each cell, for a model that reports no tokens (dummy), not a count of 0.
        reported = any(c.usage for (m, _), c in comparison.cells.items() if m == model)
        tokens = f"{agg['usage']['total_tokens']:,}" if reported else "-"
        totals.append(f"{mean} / {tokens}{cost}")
    rows.append(totals)
    return header, rows


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "not run"
    if cell.value is None:
        return cell.status
    text = f"{cell.value:.3f}"
    if cell.samples is not None:
        text += f" n={cell.samples}"
    if cell.status != "done":
        text += f" ({cell.status})"
    return text


def as_text(comparison: Comparison) -> str:
    header, rows = grid_rows(comparison)
    lines = [f"Eval set {comparison.eval_set}, {len(comparison.models)} model(s):"]
    lines += align([header, *rows])
    lines.append("")
    lines.append(_details_text(comparison))
    lines += [f"note: {n}" for n in comparison.notes]
    return "\n".join(lines)


def _details_text(comparison: Comparison) -> str:
    """Per model and eval: status, samples, time, tokens, cost."""
    header = ["model", "eval", "status", "samples", "time", "tokens", "cost"]
    rows = []
    for cell in comparison.cells.values():
        rows.append(
            [
                cell.model,
                cell.eval,
                cell.status,
                "-" if cell.samples is None else str(cell.samples),
                "-" if cell.duration is None else f"{cell.duration:.1f}s",
                "-" if cell.usage is None else f"{cell.usage.total_tokens:,}",
                format_cost(cell.cost),
            ]
        )
    return "\n".join(align([header, *rows]))


def as_markdown(comparison: Comparison) -> str:
    header, rows = grid_rows(comparison)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "---|" * len(header)]
    out += [line(row) for row in rows]
    if comparison.notes:
        out += ["", *(f"- {note}" for note in comparison.notes)]
    return "\n".join(out)
