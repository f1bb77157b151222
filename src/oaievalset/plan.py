"""What would run, without running it: the plan of a set and the listing of sets and evals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oaievalset.commands import Command, command_id
from oaievalset.outcome import read_batches, read_error
from oaievalset.registry import Registry
from oaievalset.results import FAILED, INTERRUPTED, TIMEOUT
from oaievalset.state.progress import ProgressFile, recorded_set


def plan_entries(
    commands: Sequence[Command], progress: ProgressFile, resume: bool
) -> list[dict[str, Any]]:
    """For each command: done, running elsewhere, failed before, or pending, and why a
    recorded command for the same eval does not count (it differs in its arguments)."""
    recorded = progress.read() if resume else []
    done = recorded_set(recorded)
    by_eval: dict[str, list[Any]] = {}
    for line in recorded:
        if isinstance(line, list) and len(line) > 2 and isinstance(line[2], str):
            by_eval.setdefault(line[2], []).append(line)
    states = progress.state.states()
    running = progress.state.held_elsewhere(commands)
    entries: list[dict[str, Any]] = []
    for command in commands:
        key = command_id(command)
        state = states.get(key, {})
        entry: dict[str, Any] = {"eval": command[2], "command": command}
        if tuple(command) in done:
            entry["status"] = "done"
        elif key in running:
            entry["status"] = "running"
        elif state.get("status") in (FAILED, TIMEOUT, INTERRUPTED):
            entry["status"] = state["status"]
            entry["exit_code"] = state.get("exit_code")
            reason = read_error(Path(state["log"])) if state.get("log") else None
            if reason:
                entry["reason"] = reason  # the engine's one-line error, from the log
        else:
            entry["status"] = "pending"
        if state.get("log"):
            entry["log"] = state["log"]
        if state.get("where"):
            entry["where"] = state["where"]  # the cluster job (and node) that last ran it
        if entry["status"] != "done":
            near = [r for r in by_eval.get(command[2], []) if r != command]
            if near:
                entry["recorded_as"] = near
            batches = read_batches(progress.state.answers_path(command))
            if batches is not None:  # a run through the Batch API left them
                entry["batches"] = batches
        entries.append(entry)
    return entries


def add_estimates(
    entries: list[dict[str, Any]],
    progress: ProgressFile,
    registries: dict[tuple[str, ...], Any] | None = None,
) -> None:
    """To each entry still to run, what it would ask (estimate.Estimate, or why there is no
    estimate): its answer journal counts, and a record of an earlier run of the same eval
    gives its tokens per sample (read through the state folder's summaries of records, as
    the report reads them: once, then again only when it changes)."""
    from oaievalset.estimate import estimate
    from oaievalset.summaries import SummaryCache

    states = progress.state.states()
    latest: dict[str, tuple[float, str]] = {}  # eval -> (when, record) of its last record
    for state in states.values():
        done, command = state.get("done") or {}, state.get("command") or []
        if done.get("record") and len(command) > 2:
            when = done.get("ended") or 0.0
            if when >= latest.get(command[2], (-1.0, ""))[0]:
                latest[command[2]] = (when, str(done["record"]))
    registries = dict(registries or {})  # by roots, read once for all the commands
    cache = SummaryCache.of_folder(progress.state_dir)
    for entry in entries:
        if entry["status"] == "done":
            continue
        command = entry["command"]
        earlier = cache.summary(latest[command[2]][1]) if command[2] in latest else None
        journal = progress.state.answers_path(command)
        entry["estimate"] = estimate(command, journal, earlier, registries)
    cache.save()


def list_sets(registry: Registry) -> list[dict[str, Any]]:
    """Every eval set of every root, with the file that defines it."""
    return [
        {"name": entry.name, "file": str(entry.file), "alias_of": entry.alias}
        for entry in registry.eval_set_entries()
    ]
