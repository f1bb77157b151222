"""Results after a run: headline metrics from each eval's log, the summary table and the
JSON report."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oaievalset.commands import command_id
from oaievalset.errors import EXIT_INTERRUPTED, OaiEvalSetError
from oaievalset.metrics import headline as metrics_headline
from oaievalset.metrics import scores
from oaievalset.outcome import Reuse, read_error
from oaievalset.present.table import align
from oaievalset.prices import batch_price, cost_of, format_cost
from oaievalset.records import Usage
from oaievalset.results import DONE, DONE_EARLIER, FAILED, FAILURES, PENDING, Result

if TYPE_CHECKING:
    from oaievalset.commands import Command
    from oaievalset.state.progress import ProgressFile


def headline(metrics: dict[str, Any], most: int = 2) -> str:
    """The eval's headline metric, then its next scores, e.g. `accuracy=0.667`."""
    numbers = scores(metrics)
    name, _ = metrics_headline(metrics)
    order = ([name] if name is not None else []) + [k for k in numbers if k != name]
    shown = []
    for key in order[:most]:
        value = numbers[key]
        text = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        shown.append(f"{key}={text}")
    return " ".join(shown)


def _batches(result: Result) -> str:
    """`300 in 2`: the requests an eval sent through the Batch API, in how many batches."""
    if result.batch is None or not result.batch.batches:  # every answer was kept already
        return "-"
    return f"{result.batch.requests:,} in {result.batch.batches}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def summary_table(
    results: Sequence[Result],
    price: tuple[float, float] | None = None,
    width: int | None = None,
    tier: str | None = None,
    batch_price: tuple[float, float] | None = None,
) -> str:
    """One row per eval: eval, status, duration, attempts, answers reused from its answer
    journal (when any were), what went through the Batch API (when any did), tokens (and
    cost, given the model's price: an eval run through batches at `batch_price`), where it
    ran (on a cluster), headline metrics; then the totals. Wider than `width` (a
    terminal's), each row is its eval's line and its cells below it."""
    where = any(r.where for r in results)
    reused = any(r.reuse and r.reuse.reused for r in results)
    batched = any(r.batch for r in results)
    priced = bool(price or (batched and batch_price))
    header = ["eval", "status", "time", "tries"] + ["reused"] * reused
    header += ["batches"] * batched + ["tokens"]
    header += [f"cost ({tier})" if tier else "cost"] * priced
    header += ["where"] * where + ["metrics"]
    rows = []
    costs: list[float] = []
    for r in results:
        row = [
            r.command[2] if len(r.command) > 2 else " ".join(r.command),
            r.status,
            _duration(r.duration),
            str(r.attempts) if r.attempts else "-",
        ]
        row += [f"{r.reuse.reused}/{r.reuse.answers}" if r.reuse else "-"] * reused
        row += [_batches(r)] * batched
        row += [f"{r.usage.total_tokens:,}" if r.usage else "-"]
        cost = cost_of(r.usage, batch_price if r.batch else price)
        costs += [cost] if cost is not None else []
        row += [_money(cost)] * priced + [r.where or "-"] * where
        rows.append([*row, headline(r.metrics)])
    total = sum((r.usage for r in results if r.usage), Usage())
    this_run = sum((r.usage for r in results if r.usage and r.status == DONE), Usage())
    if total.total_tokens:
        row = ["total", "", "", ""] + [""] * reused + [""] * batched
        row += [f"{total.total_tokens:,}"]
        row += [_money(sum(costs) if costs else None)] * priced + [""] * where
        saved = sum(r.reuse.tokens for r in results if r.reuse and r.status == DONE)
        also = f", {saved:,} of them reused" if saved else ""
        rows.append([*row, f"(this run: {this_run.total_tokens:,} tokens{also})"])
    lines = align([header, *rows])
    if width is not None and max(len(line) for line in lines) > width:
        lines = _stacked(header, rows, width)
    return "\n".join(lines)


_UNLABELLED = ("status", "time", "metrics")  # their values say what they are


def _stacked(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """The table for a narrow terminal: each eval on a line of its own, then its cells,
    `tries 1  tokens 1,234`, as many to a line as fit."""
    import textwrap

    lines = []
    for row in rows:
        lines += textwrap.wrap(row[0], width) or [""]  # a long name breaks at its hyphens
        cells = [
            value if name in _UNLABELLED else f"{name} {value}"
            for name, value in zip(header[1:], row[1:])
            if value and not (name in _UNLABELLED and value == "-")
        ]
        line = ""
        for cell in cells:
            if line and len(line) + 2 + len(cell) > width:
                lines.append(line)
                line = ""
            line = f"{line}  {cell}" if line else f"  {cell}"
        if line:
            lines += textwrap.wrap(line, width, initial_indent="", subsequent_indent="  ")
    return lines


def _terminal_width(stream: Any) -> int | None:
    """The width of the terminal the stream is, or None: a file or pipe gets whole rows."""
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _money(value: float | None) -> str:
    return format_cost(value)


def json_report(
    model: str,
    eval_set: str,
    progress_file: Path,
    results: Sequence[Result],
    exit_code: int | None,
) -> dict[str, Any]:
    """The run summary for scripts."""
    evals = [r.as_dict() for r in results]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "eval_set": eval_set,
        "progress_file": str(progress_file),
        "state": "running" if exit_code is None else "ended",
        "exit_code": exit_code,
        "counts": counts,
        "usage": sum((r.usage for r in results if r.usage), Usage()).as_dict(),
        "usage_this_run": sum(
            (r.usage for r in results if r.usage and r.status == DONE), Usage()
        ).as_dict(),
        "answers_reused_this_run": _reuse_of(r.reuse for r in results if r.status == DONE),
        "evals": evals,
    }


def cache_line(folder: Path) -> str:
    """Where the answer cache is, and how much it holds (one file per eval)."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    size = 0
    for file in files:
        with contextlib.suppress(OSError):
            size += file.stat().st_size
    return f"answer cache: {folder} ({len(files)} eval(s), {size / 2**20:,.1f} MiB)"


def _reuse_of(reuses: Iterable[Reuse | None]) -> dict[str, int]:
    """Answers taken from answer journals, of all the answers, and the tokens they cost."""
    each = [r for r in reuses if r is not None]
    reused, answers, tokens = (sum(r[i] for r in each) for i in range(3))
    return Reuse(reused, answers, tokens).as_dict()


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False)


# -- one run's report file and closing lines ---------------------------------------------

PROG = "oaievalset"
FORMAT_VERSION = 1  # of report.json; raised when a field changes meaning or goes


def earlier_results(commands: Sequence[Command], progress: ProgressFile) -> list[Result]:
    """Results for the commands recorded before this run, from the state journal: each as
    the run that recorded it ran (its time, tries, metrics and tokens), whatever attempts
    came after it (a failed --no-resume run leaves the record, and its own state)."""
    from oaievalset.state.journal import as_recorded

    states = progress.state.states() if commands else {}
    results = []
    for command in commands:
        state, outcome = as_recorded(states.get(command_id(command), {}))
        log = Path(state["log"]) if state.get("log") else None
        result = Result(
            command=command,
            status=DONE_EARLIER,
            exit_code=state.get("exit_code"),
            attempts=state.get("attempts", 0),
            started=state.get("started"),
            ended=state.get("ended"),
            log=log,
            metrics=outcome.metrics,
            record=outcome.record,
            where=state.get("where"),
        )
        all_runs = state.get("usage_all_runs")
        result.usage_all_runs = Usage.of(all_runs) if all_runs else None
        result.reuse, result.batch = outcome.reuse, outcome.batch
        results.append(result)
    return results


def begin(
    model: str,
    eval_set: str,
    progress: ProgressFile,
    commands: Sequence[Command],
    run_id: str,
) -> None:
    """Write this run's report as it starts (every eval pending), so that report.json never
    describes another run, even if this one dies before it ends."""
    results = [Result(list(c), PENDING) for c in commands]
    _write(progress, run_id, json_report(model, eval_set, progress.path, results, None))


def conclude(
    model: str,
    eval_set: str,
    progress: ProgressFile,
    commands: Sequence[Command],
    results: Sequence[Result],
    exit_code: int,
    run_id: str,
    err_color: bool = False,
    prices: dict[str, tuple[float, float]] | None = None,
    last_line: str | None = None,
    tier: str | None = None,
) -> None:
    """The end of a run: the table on stderr (stdout keeps the original's lines), the JSON
    report and the report page, what a resume will do, and `last_line` (a spent budget)."""
    from oaievalset.present.console import alert

    err = sys.stderr
    by_command = {tuple(r.command): r for r in results}
    ordered = [by_command[tuple(c)] for c in commands if tuple(c) in by_command]
    print("", file=err)
    price = (prices or {}).get(model)
    width = _terminal_width(err)
    print(summary_table(ordered, price, width, tier, batch_price(prices, model)), file=err)
    path = _write(progress, run_id, json_report(model, eval_set, progress.path, ordered, exit_code))
    if path is not None:
        print(f"{PROG}: report: {path}", file=err)
    page = write_page(model, eval_set, progress, prices, commands)
    if page is not None:
        print(f"{PROG}: page: {page}", file=err)
    failed = [r for r in ordered if r.status in FAILURES]
    if exit_code == EXIT_INTERRUPTED:
        print(f"{PROG}: {interrupted_line(progress, commands)}", file=err)
    elif failed:
        print(f"{PROG}: {len(failed)} eval(s) failed:", file=err)
        for r in failed:
            print(alert(f"{' '.join(r.command)} ({_failure_reason(r)})", err_color), file=err)
        print(f"{PROG}: {failed_line(progress, commands)}", file=err)
    if last_line is not None:
        print(f"{PROG}: {last_line}", file=err)
    err.flush()


def write_page(
    model: str,
    eval_set: str,
    progress: ProgressFile,
    prices: dict[str, tuple[float, float]] | None,
    commands: Sequence[Command],
) -> Path | None:
    """report.html beside report.json, its samples in report_files/: this model's results
    on the set. Each record is read once (its summary is kept in the state folder), so a
    run that ran little spends little here. The page only informs: if it cannot be made,
    say so and go on."""
    from oaievalset import compare
    from oaievalset.present import page as htmlpage
    from oaievalset.state.progress import progress_dir

    path = progress.state_dir / "report.html"
    try:
        files = htmlpage.SampleFiles(path)
        # Exactly this run's commands: the page shows what the table and report.json show.
        grid = compare.compare(
            eval_set, Path(progress_dir()), [model], prices, commands, sink_for=files.sink_for
        )
        htmlpage.write(path, grid, f"{eval_set}: {model}", files)
    except (OSError, OaiEvalSetError) as exc:
        print(f"{PROG}: warning: could not write {path} ({exc})", file=sys.stderr)
        return None
    return path


def interrupted_line(progress: ProgressFile, commands: Sequence[Command]) -> str:
    """What an interrupt left, and what a resume (or running again) will do, truthfully."""
    from oaievalset.outcome import read_batches

    stopped = "interrupted; the running evals were stopped and not recorded."
    live = [c for c in commands if (read_batches(progress.state.answers_path(c)) or [0, 0])[1]]
    if live:  # the batches of a run through the Batch API go on at the server
        stopped += (
            f" The batches of {len(live)} eval(s) go on (they are paid for): the same "
            f"command takes their answers; --cancel-batches cancels them."
        )
    return f"{stopped} {what_a_resume_does(progress, commands)}"


def failed_line(progress: ProgressFile, commands: Sequence[Command]) -> str:
    """After failures: they are not recorded, and what a resume will do, truthfully."""
    return f"they are not recorded as completed. {what_a_resume_does(progress, commands)}"


def what_a_resume_does(progress: ProgressFile, commands: Sequence[Command]) -> str:
    """What the progress file now holds, and so what the same command (with or without
    --no-resume) will run: read from the file, not assumed."""
    from oaievalset.state.progress import recorded_set

    try:
        recorded = recorded_set(progress.read())
    except OaiEvalSetError:
        recorded = set()
    done = sum(tuple(c) in recorded for c in commands)
    left = len(commands) - done
    if not progress.fresh:
        return (
            f"{done} of {len(commands)} evals are recorded; "
            f"run the same command again to run the other {left}."
        )
    if progress.kept_earlier_record:
        # The fresh record replaces the old one at this run's first success only.
        return (
            f"This --no-resume run recorded nothing, so the progress file still holds the "
            f"record from before it ({done} of {len(commands)} evals): a resume (the command "
            f"without --no-resume) skips those and runs the other {left}; with --no-resume "
            f"it starts over."
        )
    return (
        f"{done} of {len(commands)} evals are recorded; to run the other {left}, "
        f"run the command without --no-resume (with it, everything runs again)."
    )


def _failure_reason(r: Result) -> str:
    from oaievalset.executors.base import describe_exit

    if r.reason is not None and r.exit_code is None:  # it never ran: it could not start
        return f"{r.status}: {r.reason}"
    if r.log is None:
        return f"{r.status}; another oaievalset process had it"
    why: str = r.status
    if r.reason is not None:  # what its executor said (a cluster's reason)
        why = f"{r.status}: {r.reason}"
    elif r.status == FAILED and r.exit_code is not None:
        why = f"{r.status}, {describe_exit(r.exit_code)}"
        error = read_error(r.log)  # the engine's own one line, when it wrote one
        if error:
            why += f": {error}"
    return f"{why}; log: {r.log}"


def _write(progress: ProgressFile, run_id: str, data: dict[str, Any]) -> Path | None:
    """reports/<run id>.json, then report.json as the latest report: each whole or not at
    all, so that two runs at once each keep their own."""
    from oaievalset.files import atomic_write

    data = {"run_id": run_id, "pid": os.getpid(), **data}
    text = dumps(data) + "\n"
    latest = progress.state.latest_report
    try:
        progress.state.reports.mkdir(parents=True, exist_ok=True)
        atomic_write(progress.state.reports / f"{run_id}.json", text)
        atomic_write(latest, text)
    except OSError as exc:
        print(f"{PROG}: warning: could not write {latest} ({exc.strerror})", file=sys.stderr)
        return None
    return latest
