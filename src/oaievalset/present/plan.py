"""The plan of a set (plan.plan_entries) and the listing of sets, as text and JSON."""

from __future__ import annotations

import json
from typing import Any

from oaievalset.state.progress import ProgressFile, format_entry

FORMAT_VERSION = 1  # of the plan's JSON; raised when a field changes meaning or goes


def plan_text(
    model: str, eval_set: str, progress: ProgressFile, entries: list[dict[str, Any]]
) -> str:
    lines = [f"Plan for {model} {eval_set} (progress file: {progress.path})"]
    width = max([len(e["status"]) for e in entries] + [7])
    for e in entries:
        lines.append(f"  {e['status'].ljust(width)}  {' '.join(e['command'])}")
        if e.get("where"):
            lines.append(f"  {'':{width}}  last ran as {e['where']}")
        if "exit_code" in e and e["exit_code"] is not None:
            why = f": {e['reason']}" if e.get("reason") else ""
            lines.append(
                f"  {'':{width}}  last exit code {e['exit_code']}{why}; log: {e.get('log')}"
            )
        for other in e.get("recorded_as", []):
            lines.append(
                f"  {'':{width}}  not done: recorded with other arguments: {format_entry(other)}"
            )
    todo = sum(1 for e in entries if e["status"] != "done")
    lines.append(f"{todo} of {len(entries)} to run.")
    return "\n".join(lines)


def plan_json(
    model: str, eval_set: str, progress: ProgressFile, entries: list[dict[str, Any]]
) -> str:
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "model": model,
            "eval_set": eval_set,
            "progress_file": str(progress.path),
            "commands": entries,
        }
    )


def list_sets_text(sets: list[dict[str, Any]]) -> str:
    if not sets:
        return "No eval sets found."
    width = max(len(s["name"]) for s in sets)
    lines = []
    for s in sets:
        note = f"alias of {s['alias_of']}" if s["alias_of"] else s["file"]
        lines.append(f"{s['name'].ljust(width)}  {note}")
    return "\n".join(lines)
