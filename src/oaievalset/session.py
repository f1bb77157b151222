"""One run of an eval set: resolve it, say what will run, run it, then reduce the results
to an exit code and a report (nox's run-then-reduce). The CLI converts its arguments to
`Settings` and calls `run_set`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from oaievalset.errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LaunchError,
    ProgressError,
    RegistryError,
    RunStopped,
    UsageError,
)
from oaievalset.present.console import highlight, use_color
from oaievalset.results import FAILURES, NOT_RUN, STOPPED, Result, new_run_id

if TYPE_CHECKING:
    from oaievalset import runner
    from oaievalset.commands import Command
    from oaievalset.executors.base import Executor
    from oaievalset.ledger import Budget
    from oaievalset.prices import Price
    from oaievalset.registry import Registry, SetResolution
    from oaievalset.state.progress import ProgressFile

PROG = "oaievalset"


class Settings(NamedTuple):
    """What a run of a set is asked to do, free of argparse."""

    model: str
    eval_set: str
    passthrough: list[str]  # arguments for every oaieval, in their order
    registry_paths: list[str] | None = None
    resume: bool = True
    exit_on_error: bool = True
    jobs: int | None = None  # None: 1, or with ray the cluster's CPUs
    timeout: float | None = None
    attempts: int = 1
    plan: bool = False
    json: bool = False
    run_command: str = "oaieval"
    prices: str | None = None  # a YAML file of prices per million tokens, per model
    answer_cache: str | None = None  # a folder of answers kept across runs, opted into
    batch: bool = False  # through the Batch API (engine/batch.py)
    cancel_batches: bool = False  # cancel the batches runs with `batch` left; run nothing
    max_cost: float | None = None  # dollars: a cap on what this run's answers cost
    max_tokens: int | None = None  # a cap on the tokens of this run's answers
    executor: str = "local"  # a name of executors.BACKENDS
    executor_options: Any = None  # that backend's Options; None: its defaults


def run_set(
    settings: Settings,
    registry: Registry | None = None,
    *,
    color: bool | None = None,
    executor: Executor | None = None,
) -> int:
    """Run every eval of the set against the model; returns the exit code. Errors the user
    can fix raise an OaiEvalSetError before anything runs; an error midway raises
    RunStopped once the table and the report are written."""
    from oaievalset.state.progress import ProgressFile, progress_path

    color = use_color(sys.stdout) if color is None else color
    prices = _prices(settings)
    _check_budget(settings, prices)
    every = _progress_every()  # a bad value fails before anything runs
    if registry is None:
        from oaievalset.registry import Registry

        registry = Registry()
    commands = _commands(settings, registry)
    progress = ProgressFile(
        progress_path(settings.model, settings.eval_set), fresh=not settings.resume
    )
    if settings.plan:
        return _show_plan(settings, commands, progress, prices, registry)
    if settings.cancel_batches:
        return _cancel_batches(settings, commands, progress)
    if not settings.batch:
        _check_no_batch_running(commands, progress, settings.resume)
    done = _announce(settings, commands, progress)
    todo = [c for c in commands if tuple(c) not in done]
    run_id = new_run_id()  # this run's name among the set's reports
    budget = _budget(settings, prices, progress, run_id) if todo else None
    try:
        results, interrupted, stopped = _run_todo(
            settings, commands, todo, progress, run_id, color, executor, budget,
            _live_price(settings, prices), every,
        )  # fmt: skip
        exit_code = _reduce(results, interrupted, stopped is not None, budget)
        if exit_code == EXIT_OK:
            print(highlight("All done!", color))
        sys.stdout.flush()
        spent = _spent_line(budget, results, commands, progress) if budget else None
        _conclude(settings, commands, done, progress, run_id, results, exit_code, prices, spent)
    finally:
        if budget is not None:
            with contextlib.suppress(OSError):
                os.unlink(budget.ledger)
    if stopped is not None:
        if not stopped.expected:
            raise stopped.error  # a bug: its traceback, now that the run has ended
        raise RunStopped(f"the run stopped midway: {stopped.reason}")
    return exit_code


def _live_price(settings: Settings, prices: dict[str, Price] | None) -> Price | None:
    """The price of what this run asks: through the Batch API, the batch price."""
    from oaievalset.prices import batch_price

    if settings.batch:
        return batch_price(prices, settings.model)
    return (prices or {}).get(settings.model)


def _priced_tier(settings: Settings, prices: dict[str, Price] | None) -> str | None:
    """The service tier the costs are of, when the prices file has the model's price for
    it (else the standard price is shown, as the warning said)."""
    from oaievalset.prices import service_tier, tier_key

    tier = service_tier(settings.passthrough)
    if tier is None or tier_key(settings.model, tier) not in (prices or {}):
        return None
    return tier


def _check_budget(settings: Settings, prices: dict[str, Price] | None) -> None:
    """A cap that could count nothing is refused before anything runs."""
    if settings.max_cost is None and settings.max_tokens is None:
        return
    if settings.max_cost is not None and settings.max_tokens is not None:
        raise UsageError("give --max-cost or --max-tokens, not both")
    if settings.executor == "ray":  # its nodes may not see the ledger in the state folder
        flag = "--max-cost" if settings.max_cost is not None else "--max-tokens"
        raise UsageError(
            f"{flag} is not kept on Ray: its nodes need not share the state folder, where "
            f"the evals count what they spend; run the set locally or on Slurm"
        )
    if settings.max_cost is not None and (prices is None or settings.model not in prices):
        where = f"{settings.prices} has none" if settings.prices else "give --prices FILE"
        raise UsageError(
            f"--max-cost needs the price of model '{settings.model}' ({where}): "
            f"without it the spend cannot be counted"
        )


def _budget(
    settings: Settings, prices: dict[str, Price] | None, progress: ProgressFile, run_id: str
) -> Budget | None:
    """This run's cap and its ledger at 0, in the state folder (which the nodes of a
    cluster share)."""
    from oaievalset.ledger import Budget, new_ledger

    if settings.max_cost is None and settings.max_tokens is None:
        return None
    ledger = str(progress.state_dir / "budget" / f"{run_id}.ledger")
    try:
        new_ledger(ledger)
    except OSError as exc:
        raise ProgressError(
            f"{ledger}: cannot write the budget's ledger ({exc.strerror})"
        ) from None
    if settings.max_cost is not None:
        price = (prices or {})[settings.model]
        return Budget(ledger, settings.max_cost, "dollars", dict(prices or {}), price)
    return Budget(ledger, float(settings.max_tokens or 0), "tokens")


def _spent_line(
    budget: Budget, results: list[Result], commands: list[Command], progress: ProgressFile
) -> str | None:
    """What a run that reached its cap says last."""
    if not _held_back(results, budget):
        return None
    recorded = sum(1 for c in commands if progress.is_recorded(c))
    return (
        f"the budget is spent: {budget.describe()} in the answers of this run; "
        f"{recorded} of {len(commands)} evals are recorded. Run the same command with a "
        f"higher {budget.flag} to go on: the answers received are kept, and only those "
        f"missing are asked"
    )


def _progress_every() -> float:
    """Seconds between progress lines when stdout is not a terminal (0: none), from
    OAIEVALSET_PROGRESS_EVERY."""
    from oaievalset.runner import PROGRESS_EVERY

    text = os.environ.get("OAIEVALSET_PROGRESS_EVERY")
    if not text:
        return PROGRESS_EVERY
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UsageError(f"OAIEVALSET_PROGRESS_EVERY must be a number of seconds, got '{text}'")
    return value


def _held_back(results: list[Result], budget: Budget | None) -> bool:
    """Whether the budget stopped evals, or kept some from starting."""
    if budget is None:
        return False
    return any(r.status == STOPPED for r in results) or (
        budget.is_spent() and any(r.status == NOT_RUN for r in results)
    )


def _prices(settings: Settings) -> dict[str, Price] | None:
    """The prices file, read before anything runs (a bad one fails here)."""
    if not settings.prices:
        return None
    from oaievalset.prices import load_prices, service_tier, tier_key

    prices = load_prices(settings.prices)
    if settings.model not in prices:
        _warn(f"{settings.prices} has no price for model '{settings.model}'; no cost shown")
        return prices
    tier = service_tier(settings.passthrough)
    if tier is not None:  # the requests are billed at that tier's prices
        tiered = prices.get(tier_key(settings.model, tier))
        if tiered is None:
            _warn(
                f"{settings.prices} has no '{tier}' price for model '{settings.model}' "
                f"(`{settings.model}: {{..., {tier}: {{input: N, output: N}}}}`); its "
                f"standard price is shown"
            )
        else:
            prices = {**prices, settings.model: tiered}
    return prices


def _conclude(
    settings: Settings,
    commands: list[Command],
    done: set[tuple[str, ...]],
    progress: ProgressFile,
    run_id: str,
    results: list[Result],
    exit_code: int,
    prices: dict[str, Price] | None,
    last_line: str | None = None,
) -> None:
    """The table, the report and the closing lines, for this run's results and the
    records of the evals done before it."""
    if not commands:
        return
    from oaievalset.present import report

    earlier = report.earlier_results([c for c in commands if tuple(c) in done], progress)
    report.conclude(
        settings.model,
        settings.eval_set,
        progress,
        commands,
        earlier + results,
        exit_code,
        run_id,
        err_color=use_color(sys.stderr),
        prices=prices,
        last_line=last_line,
        tier=_priced_tier(settings, prices),
    )
    if settings.answer_cache:
        print(f"oaievalset: {report.cache_line(Path(settings.answer_cache))}", file=sys.stderr)


def _reduce(
    results: list[Result], interrupted: bool, stopped: bool, budget: Budget | None = None
) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    if _held_back(results, budget):
        return EXIT_BUDGET
    if stopped or any(r.status in FAILURES for r in results):
        return EXIT_FAILED
    return EXIT_OK


def _commands(settings: Settings, registry: Registry | None) -> list[Command]:
    """The set resolved to its commands, with warnings about what looks wrong."""
    from oaievalset.commands import build_commands
    from oaievalset.registry import Registry

    registry = registry or Registry()
    if settings.registry_paths:
        registry.add_registry_paths(settings.registry_paths)
        _warn_about_registry_paths(settings.registry_paths)
    resolution = registry.resolve(settings.eval_set)
    if not resolution.evals:
        # The original runs nothing and exits 0: as an unknown set, that looks like success.
        raise RegistryError(_resolves_to_nothing(settings.eval_set, resolution, registry))
    for pattern in resolution.unmatched:
        # The original skips these silently; a typo in a set should at least be visible.
        _warn(
            f"eval set '{resolution.eval_set.key}' lists '{pattern}', which matches no eval; "
            f"skipped{_closest(registry, pattern)}"
        )
    commands = build_commands(
        settings.model,
        (spec.key for spec in resolution.evals),
        settings.passthrough,
        settings.registry_paths,
        settings.run_command,
    )
    _warn_about_record_path(settings.passthrough, len(commands))
    return commands


def _closest(registry: Registry, pattern: str) -> str:
    names = registry.closest_eval_names(pattern)
    return f" (closest: {', '.join(names)})" if names else ""


def _resolves_to_nothing(name: str, resolution: SetResolution, registry: Registry) -> str:
    """The error for a set without an eval to run: empty, or every entry matching nothing."""
    where = resolution.eval_set.file
    if not resolution.unmatched:
        return f"eval set '{name}' lists no evals ({where}); add some to its `evals` list"
    shown = [f"'{p}'{_closest(registry, p)}" for p in resolution.unmatched[:3]]
    if len(resolution.unmatched) > 3:
        shown.append(f"and {len(resolution.unmatched) - 3} more")
    return (
        f"eval set '{name}' matches no eval: {', '.join(shown)}; fix it in {where}, or pass "
        f"the --registry_path that defines its evals"
    )


def _announce(
    settings: Settings, commands: list[Command], progress: ProgressFile
) -> set[tuple[str, ...]]:
    """The original's opening lines; returns the commands recorded as done."""
    from oaievalset.state.progress import format_entry, recorded_set

    completed = progress.read() if settings.resume else []
    if completed:
        print(f"Loaded progress from {progress.path}")
        # As the original: the count is of entries in the file, whatever command they hold.
        print(f"{len(completed)}/{len(commands)} evals already completed:")
        for entry in completed:
            print("  " + format_entry(entry))
    done = recorded_set(completed)
    print("Going to run the following commands:")
    for command in commands:
        if tuple(command) not in done:
            print("  " + " ".join(command))
    sys.stdout.flush()
    return done


def _run_todo(
    settings: Settings,
    commands: list[Command],
    todo: list[Command],
    progress: ProgressFile,
    run_id: str,
    color: bool,
    executor: Executor | None,
    budget: Budget | None = None,
    price: Price | None = None,
    progress_every: float | None = None,
) -> tuple[list[Result], bool, runner.Aborted | None]:
    """Run what is left; returns the results, whether the run was interrupted, and the
    error that stopped it midway, if one did."""
    if not todo:
        return [], False, None
    from oaievalset import runner
    from oaievalset.executors.base import check_executable
    from oaievalset.present import report

    first = len(commands) - len(todo)
    if executor is None and settings.executor == "local":
        try:
            check_executable(todo[0])
        except LaunchError:
            # As the original, which fails at the first eval: its line comes first.
            counter = f"({first + 1}/{len(commands)})"
            print(highlight(f"Running command: {' '.join(todo[0])} {counter}", color))
            raise
    own = _make_executor(settings, progress) if executor is None else None
    progress.prepare()
    # From here on, report.json describes this run, even if the process dies mid-way.
    report.begin(settings.model, settings.eval_set, progress, commands, run_id)
    jobs = settings.jobs or 1
    if settings.jobs is None and own is not None:
        jobs = own.default_jobs(len(todo))  # a cluster: as many at once as it has CPUs
    options = runner.RunOptions(
        jobs=jobs,
        timeout=settings.timeout,
        attempts=settings.attempts,
        exit_on_error=settings.exit_on_error,
        color=color,
        live=jobs > 1 and sys.stdout.isatty(),
        err_color=use_color(sys.stderr),
        answer_cache=os.path.abspath(settings.answer_cache) if settings.answer_cache else None,
        batch=settings.eval_set if settings.batch else None,
        budget=budget,
        price=price,
        progress_every=runner.PROGRESS_EVERY if progress_every is None else progress_every,
    )
    try:
        results = runner.execute(
            todo,
            progress,
            options,
            executor or own,  # type: ignore[arg-type]  # one of the two is set
            first_index=first,
            total=len(commands),
            out=sys.stdout,
            err=sys.stderr,
        )
    except runner.Interrupted as stop:
        return stop.results, True, None
    except runner.Aborted as stop:
        return stop.results, False, stop
    finally:
        progress.close()
        if own is not None:
            own.close()
    return results, False, None


def _make_executor(settings: Settings, progress: ProgressFile) -> Executor:
    """The executor the settings ask for; a cluster that cannot be reached fails here,
    before anything runs."""
    from oaievalset import executors

    backend = executors.backend(settings.executor)
    options = settings.executor_options
    return backend.create(options if options is not None else backend.Options(), progress.state_dir)  # type: ignore[no-any-return]


def _show_plan(
    settings: Settings,
    commands: list[Command],
    progress: ProgressFile,
    prices: dict[str, Price] | None = None,
    registry: Registry | None = None,
) -> int:
    from oaievalset import plan
    from oaievalset.engine.cli import is_this_oaieval
    from oaievalset.executors.base import find_executable
    from oaievalset.present import plan as show

    entries = plan.plan_entries(commands, progress, settings.resume)
    found = find_executable(settings.run_command)
    if found is not None and is_this_oaieval(found):  # the engine that will ask them
        # The commands' registry roots are the set's: its registry is read already.
        read = {tuple(settings.registry_paths or ()): registry} if registry else {}
        plan.add_estimates(entries, progress, read)
    price = _live_price(settings, prices)
    render = show.plan_json if settings.json else show.plan_text
    print(render(settings.model, settings.eval_set, progress, entries, price, settings.batch))
    return EXIT_OK


def _check_no_batch_running(commands: list[Command], progress: ProgressFile, resume: bool) -> None:
    """A run without --batch would ask directly what batches of an earlier run with it are
    still answering (and paid for): refused, saying how to take their answers or cancel."""
    from oaievalset.outcome import BATCHES_SUFFIX, read_batches
    from oaievalset.state.progress import recorded_set

    folder = progress.state.answers_path(commands[0]).parent if commands else None
    if folder is None or not any(folder.glob(f"*{BATCHES_SUFFIX}")):
        return  # no eval has batches: one look at the folder, not one per eval
    done = recorded_set(progress.read()) if resume else set()
    running = []
    for command in commands:
        batches = read_batches(progress.state.answers_path(command))
        if tuple(command) not in done and batches is not None and batches.running:
            running.append(command[2])
    if running:
        raise UsageError(
            f"{', '.join(running)}: batches of an earlier run with --batch are still running "
            f"(and paid for); add --batch to take their answers, or run with "
            f"--cancel-batches first to cancel them"
        )


def _cancel_batches(settings: Settings, commands: list[Command], progress: ProgressFile) -> int:
    """Cancel the batches still running of the set's evals not yet recorded: each eval's
    engine is run in cancel mode with the journal a run gives it, so that it finds its
    batches in their state file, or on the server by their metadata if that was lost.
    EXIT_FAILED if one could not be."""
    import re
    import subprocess

    from oaievalset.outcome import ANSWER_JOURNAL, BATCH, BATCH_SET
    from oaievalset.state.progress import recorded_set

    done = recorded_set(progress.read())
    said = re.compile(r"cancelled (\d+) batch\(es\)")
    failed = 0
    for command in commands:
        if tuple(command) in done:
            continue
        journal = progress.state.answers_path(command)
        env = {**os.environ, ANSWER_JOURNAL: str(journal), BATCH: "cancel"}
        env[BATCH_SET] = settings.eval_set
        try:
            ran = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise UsageError(f"cannot run {command[0]} ({exc.strerror})") from None
        found = said.search(ran.stderr + ran.stdout)
        if ran.returncode == 0 and found:
            count = int(found[1])
            print(
                f"{command[2]}: "
                + (f"cancelled {count} batch(es)" if count else "no batch running")
            )
            continue
        failed += 1
        lines = [line for line in ran.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {ran.returncode}"
        print(f"{command[2]}: could not cancel its batches: {why}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _warn_about_registry_paths(paths: Sequence[str]) -> None:
    """A root that is not a folder is still forwarded (as the original does), but said."""
    for path in paths:
        full = os.path.expanduser(path)
        if not os.path.exists(full):
            _warn(f"--registry_path {path} does not exist; it is still passed to oaieval")
        elif not os.path.isdir(full):
            _warn(
                f"--registry_path {path} is a file, not a registry folder; "
                f"it is still passed to oaieval"
            )


def _warn_about_record_path(passthrough: Sequence[str], evals: int) -> None:
    """Every eval of the set given one --record_path writes, each over the last, one file."""
    if evals < 2:
        return
    for token in passthrough:
        if token == "--":
            return
        name = token.split("=", 1)[0]
        # oaieval's argparse takes any unambiguous prefix: `--rec` is --record_path too.
        if len(name) >= len("--rec") and "--record_path".startswith(name):
            _warn(
                f"{token} is passed to each of the {evals} evals: each one's record replaces "
                f"the last; leave it out to get one record per eval"
            )
            return
