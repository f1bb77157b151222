"""The `oaieval` command: run one eval against one completion function, write its record.

The options are those of openai/evals' `oaieval`; the ones that make no sense here are
accepted and ignored (`--cache`, `--visible`, `--local-run`, `--dry-run-logging`) or
refused (`--http-run` and its settings).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from oaievalset.engine.errors import EngineError
from oaievalset.errors import EXIT_INTERRUPTED, EXIT_OK, OaiEvalSetError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from oaievalset.engine.answers import Answers

PROG = "oaieval"
WARM_ENV = "OAIEVAL_WARM_SOCKET"  # engine/warm.py's, not imported by a plain oaieval
logger = logging.getLogger("oaieval")


def get_parser() -> argparse.ArgumentParser:
    from oaievalset.version import VersionAction

    parser = argparse.ArgumentParser(prog=PROG, description="Run one eval against a model.")
    parser.add_argument(
        "completion_fn",
        help="'dummy' (offline), or a chat model name on the OpenAI-compatible server at "
        "OPENAI_BASE_URL; several may be separated by commas where the eval supports it.",
    )
    parser.add_argument("eval", help="Name of an eval. See the registry.")
    parser.add_argument("--extra_eval_params", type=str, default="", metavar="K=V,...")
    parser.add_argument("--completion_args", type=str, default="", metavar="K=V,...")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Accepted for compatibility; no effect.",
    )
    parser.add_argument(
        "--visible",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Accepted for compatibility; only noted in the record.",
    )
    parser.add_argument("--seed", type=int, default=20220722)
    parser.add_argument("--user", type=str, default="", help="Written as created_by.")
    parser.add_argument("--record_path", type=str, default=None)
    parser.add_argument(
        "--log_to_file",
        type=str,
        default=None,
        help="Write the log to this file instead of stderr.",
    )
    parser.add_argument("--registry_path", type=str, default=None, action="append")
    parser.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--local-run",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Accepted for compatibility; records are always local.",
    )
    parser.add_argument(
        "--http-run", action=argparse.BooleanOptionalAction, default=False, help="Not supported."
    )
    parser.add_argument("--http-run-url", type=str, default=None, help="Not supported.")
    parser.add_argument("--http-batch-size", type=int, default=100, help="Not supported.")
    parser.add_argument("--http-fail-percent-threshold", type=int, default=5, help="Not supported.")
    parser.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Run the eval but write no record.",
    )
    parser.add_argument(
        "--dry-run-logging",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Accepted for compatibility; no effect.",
    )
    parser.add_argument("--version", action=VersionAction, help="Show the version and exit.")
    return parser


def is_this_oaieval(executable: str) -> bool:
    """Whether a program is the `oaieval` console script of this package (its opening
    imports this module's main), whose arguments this parser may then check."""
    try:
        with open(executable, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and b"from oaievalset.engine.cli import main" in head


class _Refused(Exception):
    pass


def _refuse(message: str) -> NoReturn:
    raise _Refused(message)


def argument_problem(argv: Sequence[str], also: Sequence[str] = ()) -> str | None:
    """What this oaieval would refuse in `argv` (its arguments, the program left out), as
    one line that names the closest option (of ours, or of `also`), or None."""
    parser = get_parser()
    parser.error = _refuse  # type: ignore[method-assign]  # a line, not an exit
    try:
        _, extra = parser.parse_known_args(list(argv))
    except _Refused as exc:
        return f"oaieval would refuse its arguments: {exc}"
    if not extra:
        return None
    if not extra[0].startswith("-") or extra[0] == "--":
        return f"oaieval would refuse its arguments: unrecognized arguments: {' '.join(extra)}"
    import difflib  # only for a message

    flag = extra[0].split("=", 1)[0]
    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    same = [o for o in known if _spelt(o) == _spelt(flag)]  # `--max-samples`, `--Seed`
    close = same or difflib.get_close_matches(flag, [*known, *also], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{flag} is not an option of oaievalset, nor of the oaieval it is passed to{hint}"


def _spelt(option: str) -> str:
    return option.lstrip("-").replace("-", "_").lower()


DEFAULT_RECORD_DIR = "/tmp/evallogs"  # as the original


def record_dir() -> str:
    """Where records go without --record_path: /tmp/evallogs, unless OAIEVAL_RECORD_DIR says."""
    return os.environ.get("OAIEVAL_RECORD_DIR") or DEFAULT_RECORD_DIR


def parse_pairs(text: str, option: str) -> dict[str, str | int | float]:
    """`k1=v1,k2=v2` as a dict, numbers as numbers (as the original)."""
    from oaievalset.outcome import parse_number

    pairs: dict[str, str | int | float] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EngineError(f"{option}: '{item}' is not key=value; write k1=v1,k2=v2")
        if "=" in value:  # the original fails on it with a ValueError
            raise EngineError(
                f"{option}: '{item}' has more than one '='; a value cannot hold '=' "
                f"(write k1=v1,k2=v2)"
            )
        pairs[key] = parse_number(value)
    return pairs


def run(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """Run the eval (`argv`, the arguments it was parsed from, go into the record); returns
    the run id."""
    from oaievalset.engine.batch import batch_mode
    from oaievalset.engine.completions import make_completion_fn
    from oaievalset.engine.evals import eval_class, make_eval
    from oaievalset.engine.recorder import Recorder, add_token_usage, new_run_id
    from oaievalset.engine.spend import spend_from_env
    from oaievalset.outcome import ANSWER_JOURNAL, BATCH, final_report_lines
    from oaievalset.registry import Registry

    if args.http_run or args.http_run_url:
        raise EngineError(
            "--http-run is not supported by this oaieval; records are written to a local "
            "file (--record_path)"
        )
    registry = Registry()
    if args.registry_path:
        registry.add_registry_paths(args.registry_path)
    spec = registry.require_eval(args.eval)
    extra = parse_pairs(args.extra_eval_params, "--extra_eval_params")
    completion_args = parse_pairs(args.completion_args, "--completion_args")

    cls = eval_class(spec.cls, spec.key)
    names = args.completion_fn.split(",")
    eval_args: dict[str, Any] = {**spec.args, **extra}
    mode = batch_mode()
    with _answers(args, spec, names, eval_args, completion_args, mode is not None) as answers:
        spend = spend_from_env()
        batcher = None if answers is None or mode is None else _batcher(answers, spec)
        fns = [
            make_completion_fn(name, registry, answers, spend, batcher, **completion_args)
            for name in names
        ]

        def make() -> Any:
            return make_eval(
                cls,
                fns,
                spec.key,
                {**eval_args, "registry_path": spec.registry_path, "seed": args.seed},
                registry,
            )

        evaluation = make()

        now = datetime.now(timezone.utc)
        run_id = new_run_id(now)
        run_spec = _run_spec(args, argv, spec, names, eval_args, run_id, now)
        record_path = Path(
            args.record_path
            if args.record_path is not None
            else f"{record_dir()}/{run_id}_{args.completion_fn}_{args.eval}.jsonl"
        )
        logger.info(f"Run started: {run_id}")
        if batcher is not None and mode == "cancel":
            cancelled = batcher.cancel()
            journal = batcher.answers.journal()
            if not batcher.parts and journal.created:  # nothing to keep: leave nothing
                _forget(journal.path)
            logger.info(
                f"cancelled {cancelled} batch(es) of this eval; no record written (what "
                f"they answered is kept: the next run with {BATCH}=1 sends only the rest)"
            )
            return run_id
        if batcher is None:
            recorder = Recorder(run_id=run_id, created_by=args.user)
            result = evaluation.run(recorder, args.max_samples)
        else:
            evaluations = [evaluation]

            def attempt() -> tuple[Recorder, dict[str, Any]]:
                # Each round runs a fresh eval (the first is the one made above).
                recorder = Recorder(run_id=run_id, created_by=args.user)
                one = evaluations.pop() if evaluations else make()
                return recorder, one.run(recorder, args.max_samples)

            recorder, result = batcher.run(attempt)
        add_token_usage(result, recorder)
        if answers is not None:
            logger.info(answers.summary())  # before the final report, as the driver reads it
    # Numbers are shown as Python shows them (NaN as nan) on every line; the record has null.
    if not args.dry_run:
        try:
            recorder.write(record_path, run_spec, result)
        except OSError as exc:
            raise EngineError(
                f"cannot write the record to {record_path} ({exc.strerror})"
            ) from None
    for line in final_report_lines(result, None if args.dry_run else str(record_path)):
        logger.info(line)
    if batcher is not None and not os.environ.get(ANSWER_JOURNAL):
        _forget(batcher.answers.journal().path)  # the run's own journal: its answers are recorded
    return run_id


def _forget(journal: Path) -> None:
    """Remove a journal of this engine's own choosing and its batches' state, once the
    eval has ended (a journal the driver names is the driver's to remove)."""
    import contextlib

    from oaievalset.outcome import BATCHES_SUFFIX

    for path in (journal, journal.with_name(journal.name + BATCHES_SUFFIX)):
        with contextlib.suppress(OSError):
            path.unlink()


def _answers(
    args: argparse.Namespace,
    spec: Any,
    names: list[str],
    eval_args: dict[str, Any],
    completion_args: dict[str, Any],
    batch: bool = False,
) -> AbstractContextManager[Answers | None]:
    """Where the run keeps and finds answers: the answer journal OAIEVAL_ANSWER_JOURNAL
    names, for exactly this run (the eval, its arguments and data, the seed, the sample
    count, the models), and the answer cache of OAIEVAL_ANSWER_CACHE; None without both.
    A run through the Batch API (`batch`) always has a journal: without the variable, one
    under the user's cache folder, named by what the run is for."""
    import contextlib
    import re

    from oaievalset.engine.answers import CACHE_ENV, ENV, AnswerJournal, Answers, data_digest

    path, cache = os.environ.get(ENV), os.environ.get(CACHE_ENV)
    if not path and not cache and not batch:
        return contextlib.nullcontext()
    stores = []
    if cache:
        name = re.sub(r"[^\w.-]", "_", spec.key)
        stores.append(AnswerJournal(Path(cache) / f"{name}.jsonl", None))
    if not path and not batch:
        return Answers(stores)
    data = {}
    for name, value in eval_args.items():
        if isinstance(value, str) and (name.endswith("jsonl") or ".jsonl" in value):
            found = Path(value) if os.path.isfile(value) else spec.registry_path / "data" / value
            if found.exists():
                data[name] = found
    identity = {
        "eval": spec.key,
        "class": spec.cls,
        "args": eval_args,
        "seed": args.seed,
        "max_samples": args.max_samples,
        "completion_fns": names,
        "completion_args": completion_args,
        "data": data_digest(data),
    }
    if not path:
        path = str(_batch_journal(identity))
    return Answers([AnswerJournal(Path(path), identity), *stores])


def _batch_journal(identity: dict[str, Any]) -> Path:
    """The journal of a run through the Batch API that no OAIEVAL_ANSWER_JOURNAL names:
    the same run (eval, arguments, data, models) finds it again."""
    import hashlib
    import json

    from oaievalset.yamlio import cache_dir

    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    base = cache_dir() or Path(os.path.expanduser("~")) / ".cache" / "oaievalset"
    name = f"{identity['eval']}.{digest.hexdigest()[:16]}.jsonl"
    return base / "batches" / name


def _batcher(answers: Answers, spec: Any) -> Any:
    """The batches of this run, kept beside its journal."""
    from oaievalset.engine.batch import Batcher, run_label
    from oaievalset.outcome import BATCH_SET, BATCHES_SUFFIX

    journal = answers.journal()
    labels = {"eval": spec.key, "set": os.environ.get(BATCH_SET, "")[:500]}
    assert journal.identity is not None
    run = run_label(journal.path, journal.identity)
    state = journal.path.with_name(journal.path.name + BATCHES_SUFFIX)
    return Batcher(answers, state, run, labels)


def _run_spec(
    args: argparse.Namespace,
    argv: Sequence[str],
    spec: Any,
    names: list[str],
    eval_args: dict[str, Any],
    run_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The record's first line, with the original's fields."""
    visible = args.visible if args.visible is not None else args.max_samples is None
    eval_spec = {
        "cls": spec.cls,
        "registry_path": str(spec.registry_path),
        "args": eval_args,
        "key": spec.key,
        "group": spec.group,
    }
    parts = spec.key.split(".")
    return {
        "completion_fns": names,
        "eval_name": spec.key,
        "base_eval": parts[0],
        "split": parts[1] if len(parts) > 1 else "",
        "run_config": {
            "completion_fns": names,
            "eval_spec": eval_spec,
            "seed": args.seed,
            "max_samples": args.max_samples,
            "command": " ".join(shlex.quote(a) for a in [PROG, *argv]),
            "initial_settings": {"visible": visible},
        },
        "created_by": args.user,
        "run_id": run_id,
        "created_at": str(now),
    }


def _configure_logging(log_to_file: str | None, debug: bool) -> None:
    logging.basicConfig(
        format="[%(asctime)s] [%(filename)s:%(lineno)d] %(message)s",
        level=logging.DEBUG if debug else logging.INFO,
        filename=log_to_file,
        force=True,  # main() is the entry point: its settings win, also when called twice
    )
    if not debug:
        # The HTTP client logs every request at INFO, under a name that depends on the
        # package openai uses (httpx, httpx2, ...): keep only the eval's own lines, and
        # warnings from anywhere.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_about_the_eval)


def _about_the_eval(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name in ("oaieval", "root")


def main(argv: Sequence[str] | None = None) -> int:
    """The `oaieval` command; returns the exit code."""
    warm = os.environ.pop(WARM_ENV, None) if argv is None else None
    if warm is not None:  # oaievalset's warm engine: this returns in each eval's child
        from oaievalset.engine.warm import exit_now, serve

        child_argv = serve(warm)
        exit_now(_main(child_argv))
    return _main(sys.argv[1:] if argv is None else argv)


def _main(argv: Sequence[str]) -> int:
    args_list: list[str] = list(argv)
    args = get_parser().parse_args(args_list)
    _configure_logging(args.log_to_file, args.debug)
    try:
        run(args, args_list)
    except OaiEvalSetError as exc:
        from oaievalset.outcome import ERROR_PREFIX  # read back by the orchestrator

        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no record written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
