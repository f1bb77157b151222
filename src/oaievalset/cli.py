"""The `oaievalset` command: the parser, `run`, and `main`, the one place that turns errors
into exit codes. Names and defaults follow openai/evals' `evals/cli/oaievalset.py`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from oaievalset.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OaiEvalSetError, UsageError
from oaievalset.present.console import LOST_NOTE, RUN_NOTE, GuardedStdout
from oaievalset.version import VersionAction

if TYPE_CHECKING:
    from oaievalset.executors.base import Executor
    from oaievalset.registry import Registry

# The registry, progress and runner modules are imported where they are used, so that
# `oaievalset --help` starts in a few tens of milliseconds.

__all__ = ["OaiEvalSetArguments", "get_parser", "main", "run"]

PROG = "oaievalset"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of dollars") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of dollars, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with only the line that matters for a bad argument (no usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def get_parser() -> argparse.ArgumentParser:
    """The original's parser, plus our own flags.

    No flag of ours may begin like a flag of oaieval (argparse accepts prefixes, so it
    would capture an argument meant for the eval), nor like `--re`, `--no`, `--exit`, so
    that the original's abbreviations keep their meaning.
    """
    parser = _Parser(
        prog=PROG,
        description="Run every eval of an eval set against one model, with resume.",
        epilog="Any other argument is passed, in order, to every oaieval command. "
        "`oaievalset --compare SET` compares the models that have run a set "
        "(`oaievalset --compare --help`).",
    )
    parser.add_argument("model", type=str, help="Name of a completion function or model.")
    parser.add_argument("eval_set", type=str, help="Name of an eval set. See the registry.")
    parser.add_argument(
        "--registry_path",
        type=str,
        default=None,
        action="append",
        help="An extra registry root (repeatable); forwarded to each oaieval.",
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Skip the evals recorded in the progress file.",
    )
    parser.add_argument(
        "--exit-on-error",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Stop at the first eval that fails.",
    )
    _add_our_flags(parser.add_argument_group("beyond the original"))
    from oaievalset import executors

    executors.add_arguments(parser, parser.add_argument_group("where the evals run"))
    return parser


def _add_our_flags(ours: argparse._ArgumentGroup) -> None:
    ours.add_argument("--version", action=VersionAction, help="Show the version and exit.")
    ours.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Run up to N evals at once (default 1; with ray, the cluster's CPUs).",
    )
    ours.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="Stop an eval that runs longer, and count it as failed (default: no limit).",
    )
    ours.add_argument(
        "--attempts",
        type=_positive_int,
        default=1,
        metavar="N",
        help="Run a failing eval up to N times in all, with a short backoff (default 1).",
    )
    ours.add_argument(
        "--plan",
        action="store_true",
        help="Show what would run and what is already done; run nothing.",
    )
    ours.add_argument(
        "--list",
        nargs="?",
        const="",
        default=None,
        metavar="SET",
        help="List the eval sets, or the evals that SET resolves to; run nothing.",
    )
    ours.add_argument("--json", action="store_true", help="With --plan or --list: print JSON.")
    ours.add_argument(
        "--max-cost",
        type=_dollars,
        default=None,
        metavar="DOLLARS",
        help="Stop when the answers of this run have cost this much (needs --prices): no "
        "new request is sent, the running evals stop unrecorded and keep their answers, "
        "exit 3. The same command with a higher cap goes on from there.",
    )
    ours.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Likewise, at N tokens (input and output) in the answers of this run.",
    )
    ours.add_argument(
        "--batch",
        action="store_true",
        help="Send each eval's chat requests through the OpenAI Batch API (half the price, "
        "answers within 24 hours; our oaieval only). The batches are kept in the run's "
        "state: after Ctrl-C or a crash the same command takes their answers, sending "
        "nothing twice.",
    )
    ours.add_argument(
        "--cancel-batches",
        action="store_true",
        help="Cancel the batches that runs with --batch left on the server for this set's "
        "evals, and run nothing. What they answered is kept: the next run with --batch "
        "sends only the rest.",
    )
    ours.add_argument(
        "--answer-cache",
        metavar="DIR",
        default=None,
        help="Reuse the answers of earlier runs to the same requests, kept in DIR (our "
        "oaieval only). Off by default: a model sampled at a temperature answers "
        "differently on purpose.",
    )
    ours.add_argument(
        "--prices",
        metavar="FILE",
        default=None,
        help="A YAML file of dollars per million input and output tokens per model "
        "(model: {input: N, output: N}): adds the cost to the table and report.",
    )


class OaiEvalSetArguments(argparse.Namespace):
    """The parsed arguments, as in the original module."""

    model: str
    eval_set: str
    registry_path: list[str] | None
    resume: bool
    exit_on_error: bool
    jobs: int
    timeout: float | None
    attempts: int
    plan: bool
    list: str | None
    json: bool


def _opt(args: argparse.Namespace, name: str, default: Any) -> Any:
    # run() also takes a Namespace built for the original, without our attributes.
    return getattr(args, name, default)


def run(
    args: OaiEvalSetArguments,
    unknown_args: list[str],
    registry: Registry | None = None,
    run_command: str = "oaieval",
    *,
    color: bool | None = None,
    executor: Executor | None = None,
) -> int:
    """Run every eval of `args.eval_set` against `args.model`; returns the exit code.

    Errors the user can fix raise an OaiEvalSetError before anything runs.
    """
    from oaievalset import executors
    from oaievalset.session import Settings, run_set

    if unknown_args:
        _check_passthrough(args, unknown_args, run_command)
    if _opt(args, "answer_cache", None):
        _check_answer_cache(run_command)
    for flag in ("max_cost", "max_tokens"):
        if _opt(args, flag, None) is not None:
            _check_budget_engine(run_command, "--" + flag.replace("_", "-"))
            if _opt(args, "batch", False):
                raise UsageError(
                    f"--batch cannot be capped with --{flag.replace('_', '-')}: a batch's "
                    f"cost is known only when it ends (--plan estimates it beforehand)"
                )
    if _opt(args, "batch", False) or _opt(args, "cancel_batches", False):
        _check_batch_engine(run_command)
    executor_name = _opt(args, "executor", executors.DEFAULT)
    backend = executors.backend(executor_name)
    settings = Settings(
        model=args.model,
        eval_set=args.eval_set,
        passthrough=list(unknown_args),
        registry_paths=args.registry_path,
        resume=args.resume,
        exit_on_error=args.exit_on_error,
        jobs=_opt(args, "jobs", None),
        timeout=_opt(args, "timeout", None),
        attempts=_opt(args, "attempts", 1),
        plan=_opt(args, "plan", False),
        json=_opt(args, "json", False),
        run_command=run_command,
        prices=_opt(args, "prices", None),
        answer_cache=_opt(args, "answer_cache", None),
        batch=_opt(args, "batch", False),
        cancel_batches=_opt(args, "cancel_batches", False),
        max_cost=_opt(args, "max_cost", None),
        max_tokens=_opt(args, "max_tokens", None),
        executor=executor_name,
        executor_options=backend.options(vars(args)),
    )
    return run_set(settings, registry, color=color, executor=executor)


def _check_answer_cache(run_command: str) -> None:
    """The answer cache is our oaieval's: another one ignores it, which is worth a line."""
    from oaievalset.engine.cli import is_this_oaieval
    from oaievalset.executors.base import find_executable

    found = find_executable(run_command)
    if found is not None and not is_this_oaieval(found):
        print(
            f"oaievalset: warning: --answer-cache is kept by this package's oaieval; "
            f"{found} is another one, which will ask every request",
            file=sys.stderr,
        )


def _check_batch_engine(run_command: str) -> None:
    """Batches are sent by our oaieval: another one would ask directly, at full price."""
    from oaievalset.engine.cli import is_this_oaieval
    from oaievalset.executors.base import find_executable

    found = find_executable(run_command)
    if found is not None and not is_this_oaieval(found):
        raise UsageError(
            f"--batch is done by this package's oaieval; {found} is another one, which "
            f"would ask every request directly (put this package's oaieval first on PATH)"
        )


def _check_budget_engine(run_command: str, flag: str) -> None:
    """A cap is kept by our oaieval: with another one, it would count nothing."""
    from oaievalset.engine.cli import is_this_oaieval
    from oaievalset.executors.base import find_executable

    found = find_executable(run_command)
    if found is not None and not is_this_oaieval(found):
        raise UsageError(
            f"{flag} is kept by this package's oaieval; {found} is another one, which "
            f"would not stop at it (put this package's oaieval first on PATH)"
        )


def _check_passthrough(
    args: OaiEvalSetArguments, unknown_args: Sequence[str], run_command: str
) -> None:
    """When the oaieval to run is ours, refuse before anything runs the arguments it would
    refuse in every eval (`--max-samples`). Another oaieval gets them unchanged, as the
    original passes them."""
    from oaievalset.engine.cli import argument_problem, is_this_oaieval
    from oaievalset.executors.base import find_executable

    found = find_executable(run_command)
    if found is None or not is_this_oaieval(found):
        return
    registry = [a for p in args.registry_path or [] for a in ("--registry_path", p)]
    ours = [o for a in get_parser()._actions for o in a.option_strings if o.startswith("--")]
    problem = argument_problem([args.model, "EVAL", *unknown_args, *registry], ours)
    if problem is not None:
        raise UsageError(problem)


def _list_main(argv: Sequence[str]) -> int:
    """`oaievalset --list [SET] [--registry_path P]... [--json]`, or `--list` added to a
    run's command (`oaievalset MODEL SET ... --list`): the evals of its set."""
    from oaievalset import plan
    from oaievalset.present import plan as show
    from oaievalset.registry import Registry

    parser = _Parser(prog=f"{PROG} --list", allow_abbrev=False)
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)  # MODEL SET of a run
    parser.add_argument("--list", nargs="?", const="", default="")
    parser.add_argument("--registry_path", action="append", default=None)
    parser.add_argument("--json", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if rest and not args.names:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # The rest of a run's command (its flags and arguments for oaieval) lists nothing.
    if not args.list and args.names:
        args.list = args.names[1] if len(args.names) > 1 else args.names[0]
    registry = Registry()
    if args.registry_path:
        registry.add_registry_paths(args.registry_path)
    if not args.list:
        sets = plan.list_sets(registry)
        print(json.dumps(sets, indent=2) if args.json else show.list_sets_text(sets))
        return EXIT_OK
    resolution = registry.resolve(args.list)
    if args.json:
        print(
            json.dumps(
                {
                    "eval_set": resolution.eval_set.key,
                    "file": str(resolution.eval_set.file),
                    "entries": list(resolution.eval_set.evals),
                    "evals": [
                        {"key": s.key, "class": s.cls, "file": str(s.file)}
                        for s in resolution.evals
                    ],
                    "unmatched": list(resolution.unmatched),
                },
                indent=2,
            )
        )
    else:
        for spec in resolution.evals:
            print(spec.key)
        for pattern in resolution.unmatched:
            close = registry.closest_eval_names(pattern)
            hint = f" (closest: {', '.join(close)})" if close else ""
            print(f"{PROG}: warning: '{pattern}' matches no eval{hint}", file=sys.stderr)
    return EXIT_OK


def _compare_main(argv: Sequence[str]) -> int:
    """`oaievalset --compare SET [--models A,B] [--json | --format F] [--prices FILE]`."""
    from pathlib import Path

    from oaievalset import compare
    from oaievalset.present import compare as show
    from oaievalset.present import page as htmlpage
    from oaievalset.prices import load_prices
    from oaievalset.state.progress import ProgressFile, progress_dir, progress_path

    parser = _Parser(
        prog=f"{PROG} --compare",
        allow_abbrev=False,
        description="Compare the models that have run an eval set: a grid of eval by "
        "model, as text (or JSON, CSV, Markdown), and an HTML page.",
    )
    parser.add_argument("--compare", metavar="SET", required=True)
    parser.add_argument("--models", help="Models to compare, comma-separated (default: all).")
    parser.add_argument("--json", action="store_true", help="The same as --format json.")
    parser.add_argument("--format", choices=("text", "json", "csv", "markdown"), default=None)
    parser.add_argument("--prices", metavar="FILE", help="Prices per million tokens, per model.")
    parser.add_argument("--html", metavar="PATH", help="Where to write the page.")
    args = parser.parse_args(argv)
    if args.json and args.format not in (None, "json"):
        parser.error(f"--json and --format {args.format} ask for two formats; give one of them")
    prices = load_prices(args.prices) if args.prices else None
    models = [m for m in (args.models or "").split(",") if m]
    base = Path(progress_dir())
    page = Path(args.html) if args.html else base / f"{args.compare}.compare.html"
    if page.is_dir():  # the page's scripts would go beside the folder, the page nowhere
        raise UsageError(
            f"--html {args.html} is a folder; give the page's file, e.g. "
            f"--html {Path(args.html) / (args.compare + '.html')}"
        )
    files = htmlpage.SampleFiles(page)
    grid = compare.compare(args.compare, base, models, prices, sink_for=files.sink_for)
    # The samples' scripts the runs' own pages have: shared, not made again.
    files.sources = [
        htmlpage.SampleFiles(
            ProgressFile(progress_path(m, args.compare, str(base))).state_dir / "report.html"
        ).folder
        for m in grid.models
    ]
    if not grid.cells:  # a page and a grid of nothing would look like a result
        raise UsageError(compare.nothing_to_compare(args.compare, base, models))
    if not models and len(grid.models) > 1:
        print(
            f"{PROG}: comparing every model that has run {args.compare} "
            f"({', '.join(grid.models)}); to leave one out, name the others: "
            f"--models {','.join(grid.models[1:])}",
            file=sys.stderr,
        )
    form = "json" if args.json else args.format or "text"
    writers = {
        "text": show.as_text,
        "json": show.as_json,
        "csv": show.as_csv,
        "markdown": show.as_markdown,
    }
    print(writers[form](grid))
    try:
        htmlpage.write(page, grid, f"{args.compare}: {', '.join(grid.models)}", files)
        print(f"{PROG}: page: {page}", file=sys.stderr)
    except OSError as exc:
        print(f"{PROG}: warning: could not write {page} ({exc.strerror})", file=sys.stderr)
    return EXIT_OK


def _wants(option: str, argv: Sequence[str]) -> bool:
    """Whether the option is given in full (never as an abbreviation, which may be one of
    oaieval's: `--comp` is --completion_args)."""
    for token in argv:
        if token == "--":
            return False
        if token == option or token.startswith(option + "="):
            return True
    return False


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: stop the children, record nothing more, exit 130."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """The `oaievalset` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # A closed stdout (`oaievalset ... | head -1`, or `>&-`) must not cost the evals under way.
    stdout = sys.stdout
    guarded = GuardedStdout(stdout, PROG, LOST_NOTE)
    sys.stdout = guarded
    try:
        if _wants("--list", argv):
            return _list_main(argv)
        if _wants("--compare", argv):
            return _compare_main(argv)
        parser = get_parser()
        args, unknown = parser.parse_known_args(argv, namespace=OaiEvalSetArguments())
        if args.list is not None:
            return _list_main(argv)
        if args.json and not args.plan:
            parser.error("--json goes with --plan or --list")
        if not args.plan:
            guarded.note = RUN_NOTE
        return run(args, unknown)
    except OaiEvalSetError as exc:
        sys.stdout.flush()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Before or after the runner (which handles its own children): nothing to stop.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
