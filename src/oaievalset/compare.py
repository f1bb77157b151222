"""One eval set across the models that have run it: found from the progress folders, read
from each eval's state, log and record, as a grid of eval by model, with token usage and,
given prices, cost. present/compare.py and present/page.py show it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from oaievalset.errors import OaiEvalSetError, UsageError
from oaievalset.metrics import finite, headline
from oaievalset.records import RecordSummary, Usage
from oaievalset.summaries import SinkFor, SummaryCache

if TYPE_CHECKING:
    from oaievalset.state.journal import CommandState

SUFFIX = ".progress.txt"


class Cell(NamedTuple):
    """One eval of one model."""

    model: str
    eval: str
    status: str
    metric: str | None  # the headline metric's name
    value: float | None
    metrics: dict[str, Any]
    samples: int | None
    duration: float | None
    usage: Usage | None  # of the run that counts
    usage_all_runs: Usage | None  # of every run of it, resumes and retries included
    cost: float | None
    record: RecordSummary | None  # what the report read of its record
    log: str | None
    command: list[str] | None = None  # the oaieval command the cell comes from

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "eval": self.eval,
            "status": self.status,
            "metric": self.metric,
            "value": finite(self.value),
            "samples": self.samples,
            "duration": self.duration,
            "usage": self.usage.as_dict() if self.usage else None,
            "usage_all_runs": self.usage_all_runs.as_dict() if self.usage_all_runs else None,
            "cost": self.cost,
            "record": str(self.record.path) if self.record and self.record.path.name else None,
            "problems": list(self.record.problems) if self.record else [],
            "log": self.log,
            "command": self.command,
        }


class Comparison(NamedTuple):
    eval_set: str
    models: list[str]
    evals: list[str]
    cells: dict[tuple[str, str], Cell]  # (model, eval) -> cell
    notes: list[str]  # what is missing or odd, one line each

    def cell(self, model: str, eval_name: str) -> Cell | None:
        return self.cells.get((model, eval_name))

    def aggregate(self, model: str) -> dict[str, Any]:
        """The model's row of totals: the mean headline value, samples, statuses, time,
        tokens and cost over its evals."""
        cells = [c for (m, _), c in self.cells.items() if m == model]
        values = [c.value for c in cells if c.value is not None and math.isfinite(c.value)]
        usage = sum((c.usage for c in cells if c.usage), Usage())
        costs = [c.cost for c in cells if c.cost is not None]
        return {
            "model": model,
            "evals": len(cells),
            "done": sum(c.status.startswith("done") for c in cells),
            "mean": sum(values) / len(values) if values else None,
            "samples": sum(c.samples or 0 for c in cells),
            "duration": sum(c.duration or 0.0 for c in cells),
            "usage": usage.as_dict(),
            "cost": sum(costs) if costs else None,
        }


# -- finding and reading runs -------------------------------------------------------------


def find_models(progress_dir: Path, eval_set: str) -> list[str]:
    """The models with a progress folder for the set (a `/` in a model makes subfolders)."""
    ending = f".{eval_set}{SUFFIX}"
    found = []
    for path in progress_dir.rglob(f"*{ending}"):
        relative = path.relative_to(progress_dir).as_posix()
        found.append(relative[: -len(ending)])
    for folder in progress_dir.rglob(f"*.{eval_set}.progress.d"):
        model = folder.relative_to(progress_dir).as_posix()[: -len(f".{eval_set}.progress.d")]
        if model not in found:
            found.append(model)
    return sorted(found)  # a stable order, whichever of the two a model has


def compare(
    eval_set: str,
    progress_dir: Path,
    models: Sequence[str] | None = None,
    prices: dict[str, tuple[float, float]] | None = None,
    commands: Sequence[Sequence[str]] | None = None,
    sink_for: SinkFor | None = None,
) -> Comparison:
    """The set's grid for the given models (or every model that has run it): for each eval,
    its newest command, or, given `commands` (one model's run), exactly those. Each record
    is read once, then summarised in its model's state folder; while a record is read, its
    samples go to the sink `sink_for` gives (the page's script of them)."""
    from oaievalset.commands import command_id
    from oaievalset.state.progress import ProgressFile, progress_path, recorded_set

    chosen = list(models) if models else find_models(progress_dir, eval_set)
    notes: list[str] = []
    if not chosen:
        raise UsageError(
            f"no model has run eval set '{eval_set}' (no progress folder for it in "
            f"{progress_dir}); run it first, or set OAIEVALSET_PROGRESS_DIR"
        )
    cells: dict[tuple[str, str], Cell] = {}
    evals: list[str] = []
    for model in chosen:
        progress = ProgressFile(progress_path(model, eval_set, str(progress_dir)))
        try:
            recorded = recorded_set(progress.read())
        except OaiEvalSetError as exc:  # a corrupt progress file: say so, show the rest
            notes.append(f"{model}: {exc}")
            recorded = set()
        every = progress.state.states()
        # Beside the journal: no folder is made for a model that has none.
        cache = SummaryCache.of_folder(progress.state_dir)
        if commands is not None:
            states = {str(c[2]): every.get(command_id(c), {"command": list(c)}) for c in commands}
        else:
            states = _latest_by_eval(every)
        if not states:
            notes.append(f"{model}: no run of '{eval_set}' is recorded in {progress.state_dir}")
        for name, state in states.items():
            if name not in evals:
                evals.append(name)
            done = tuple(state.get("command", [])) in recorded
            cells[(model, name)] = _cell(model, name, state, done, prices, cache, sink_for)
        cache.save()
        notes += _argument_notes(model, [c for (m, _), c in cells.items() if m == model])
    if prices:
        for model in chosen:
            if model not in prices:
                notes.append(f"no price for model '{model}': its cost is not shown")
        for model in prices:
            if model not in chosen and "@" not in model:  # `m@flex`: a tier's, not a model
                notes.append(f"the prices name model '{model}', which is not compared")
    return Comparison(eval_set, chosen, evals, cells, notes)


def nothing_to_compare(eval_set: str, progress_dir: Path, models: Sequence[str]) -> str:
    """The error for a comparison with no cell: which models, and which have run the set."""
    if not models:
        return (
            f"no run of eval set '{eval_set}' is recorded in {progress_dir}; "
            f"run it first, or set OAIEVALSET_PROGRESS_DIR"
        )
    who = f"model {models[0]} has not" if len(models) == 1 else f"none of {', '.join(models)} has"
    others = [m for m in find_models(progress_dir, eval_set) if m not in models]
    tail = f"; these have: {', '.join(others)}" if others else "; run it first"
    return f"{who} run eval set '{eval_set}' (nothing of it in {progress_dir}){tail}"


def _argument_notes(model: str, cells: Sequence[Cell]) -> list[str]:
    """When a model's cells come from commands with other arguments for oaieval, which."""
    by_args: dict[str, list[str]] = {}
    for cell in cells:
        if cell.command:
            args = " ".join(cell.command[3:]) or "(no arguments)"
            by_args.setdefault(args, []).append(cell.eval)
    if len(by_args) < 2:
        return []
    return [
        f"{model}: {', '.join(evals)} ran with {args}" for args, evals in sorted(by_args.items())
    ]


def _latest_by_eval(states: dict[str, CommandState]) -> dict[str, CommandState]:
    """The newest state of each eval (a set run with other arguments has other commands)."""
    latest: dict[str, CommandState] = {}
    for state in states.values():
        command = state.get("command")
        if not isinstance(command, list) or len(command) < 3:
            continue
        name = str(command[2])
        when = state.get("ended") or state.get("started") or 0
        best = latest.get(name)
        if best is None or when >= (best.get("ended") or best.get("started") or 0):
            latest[name] = state
    return latest


def _cell(
    model: str,
    name: str,
    state: CommandState,
    done: bool,
    prices: dict[str, tuple[float, float]] | None,
    cache: SummaryCache,
    sink_for: SinkFor | None,
) -> Cell:
    from oaievalset.outcome import read_outcome
    from oaievalset.prices import cost_of
    from oaievalset.state.journal import as_recorded

    log = Path(state["log"]) if state.get("log") else None
    if done:  # as the run that recorded it ran (the log may be a later attempt's)
        state, outcome = as_recorded(state)
    else:
        outcome = read_outcome(log)
    where = state.get("record") or outcome.record  # the journal's, if an executor moved it
    record = cache.summary(where, sink_for) if done and where else None
    metrics = outcome.metrics or (record.final_report if record and record.final_report else {})
    metric, value = headline(metrics)
    usage = Usage.of(metrics, "usage_") or (record.usage if record else None)
    started, ended = state.get("started"), state.get("ended")
    duration = ended - started if done and started and ended and ended >= started else None
    command = list(state["command"]) if state.get("command") else None
    cost = cost_of(usage, _price_of(model, command, prices or {}, outcome.batch is not None))
    all_runs = state.get("usage_all_runs")
    return Cell(
        model=model,
        eval=name,
        status="done" if done else str(state.get("status", "pending")),
        metric=metric,
        value=value,
        metrics=metrics,
        samples=record.samples if record else None,
        duration=duration,
        usage=usage,
        usage_all_runs=Usage.of(all_runs) if all_runs else usage,
        cost=cost,
        record=record,
        log=str(log) if log else None,
        command=command,
    )


def _price_of(
    model: str, command: list[str] | None, prices: dict[str, tuple[float, float]], batch: bool
) -> tuple[float, float] | None:
    """The model's price: through the Batch API, its batch price; else for the service
    tier its command asked for, when the prices give one (a flex run at flex rates), else
    its standard price."""
    from oaievalset.prices import batch_price, service_tier, tier_key

    if batch:
        return batch_price(prices, model)
    tier = service_tier(command[3:]) if command else None
    if tier is not None and tier_key(model, tier) in prices:
        return prices[tier_key(model, tier)]
    return prices.get(model)
