"""The plan of a set (plan.plan_entries) and the listing of sets, as text and JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from oaievalset.state.progress import ProgressFile, format_entry

if TYPE_CHECKING:
    from oaievalset.estimate import Estimate

FORMAT_VERSION = 1  # of the plan's JSON; raised when a field changes meaning or goes


def plan_text(
    model: str,
    eval_set: str,
    progress: ProgressFile,
    entries: list[dict[str, Any]],
    price: tuple[float, float] | None = None,
    batch: bool = False,
) -> str:
    lines = [f"Plan for {model} {eval_set} (progress file: {progress.path})"]
    if batch:
        lines.append("Through the Batch API: the costs are at batch prices.")
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
        if e.get("batches"):
            lines.append(f"  {'':{width}}  {e['batches'].describe()}")
        if "estimate" in e:
            lines.append(f"  {'':{width}}  {_estimate_text(e['estimate'], price)}")
    todo = sum(1 for e in entries if e["status"] != "done")
    lines.append(f"{todo} of {len(entries)} to run.")
    total = _total(entries)
    if total is not None:
        counted = len(_estimates(entries))
        wanted = sum(1 for e in entries if "estimate" in e)
        of = f" (of {counted} of the {wanted} evals to run)" if counted < wanted else ""
        lines.append(f"Estimate{of}: {_estimate_text(total, price)}.")
        methods = sorted({e.method.split(":")[0] for e in _estimates(entries)})
        for method in sorted({e.method for e in _estimates(entries)}):
            lines.append(f"  {method}")
        if methods == ["approximate"]:
            lines.append("  the real counts of a run correct the estimates of later plans")
    return "\n".join(lines)


def _estimates(entries: list[dict[str, Any]]) -> list[Estimate]:
    from oaievalset.estimate import Estimate

    return [e["estimate"] for e in entries if isinstance(e.get("estimate"), Estimate)]


def _total(entries: list[dict[str, Any]]) -> Estimate | None:
    from oaievalset.estimate import Estimate

    each = _estimates(entries)
    if not each:
        return None
    outputs = [e.output_tokens for e in each]
    return Estimate(
        sum(e.samples for e in each),
        sum(e.requests for e in each),
        sum(e.answered for e in each),
        sum(e.input_tokens for e in each),
        None if None in outputs else sum(o or 0 for o in outputs),
        "; ".join(sorted({e.method for e in each})),
    )


def _estimate_text(estimate: Estimate | str, price: tuple[float, float] | None) -> str:
    from oaievalset.prices import format_cost

    if isinstance(estimate, str):
        return f"no estimate: {estimate}"
    text = f"{estimate.requests:,} requests"
    if estimate.answered:
        text += f" ({estimate.answered:,} answered already, not asked again)"
    text += f", ~{estimate.input_tokens:,} input tokens"
    if estimate.output_tokens is not None:
        text += f", ~{estimate.output_tokens:,} output tokens"
    cost = estimate.cost(price)
    if cost is not None:
        text += f", ~{format_cost(cost)}"
        if estimate.output_tokens is None:
            text += " (input only)"
    return text


def plan_json(
    model: str,
    eval_set: str,
    progress: ProgressFile,
    entries: list[dict[str, Any]],
    price: tuple[float, float] | None = None,
    batch: bool = False,
) -> str:
    def shown(entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("batches"):
            entry = {**entry, "batches": entry["batches"]._asdict()}
        estimate = entry.get("estimate")
        if estimate is None:
            return entry
        if isinstance(estimate, str):
            return {**entry, "estimate": {"error": estimate}}
        return {**entry, "estimate": estimate.as_dict(price)}

    total = _total(entries)
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "model": model,
            "eval_set": eval_set,
            "progress_file": str(progress.path),
            "batch": batch,
            "commands": [shown(e) for e in entries],
            "estimate": total.as_dict(price) if total is not None else None,
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
