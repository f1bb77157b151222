"""Run the commands of a set through an executor: up to N at once, skipping what is done,
recording what completes as soon as it does, and collecting one result per command."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from oaievalset.commands import Command
from oaievalset.console import alert, highlight
from oaievalset.executor import STOP_GRACE, Executor, Job
from oaievalset.progress import ProgressFile
from oaievalset.report import read_final_report

BACKOFF_BASE = 1.0  # seconds before the first retry; doubled each time, capped below
BACKOFF_MAX = 10.0


# -- results ----------------------------------------------------------------------------

DONE = "done"  # completed in this run
DONE_EARLIER = "done earlier"  # recorded before this run started
DONE_ELSEWHERE = "done elsewhere"  # completed by another oaievalset process during this run
FAILED = "failed"
TIMEOUT = "timed out"
INTERRUPTED = "interrupted"
NOT_RUN = "not run"  # never started (an earlier failure stopped the run)
INCOMPLETE = "incomplete"  # another process had it and did not complete it

FAILURES = (FAILED, TIMEOUT, INCOMPLETE)


class Result:
    """What happened to one command."""

    def __init__(
        self,
        command: Command,
        status: str,
        exit_code: int | None = None,
        attempts: int = 0,
        started: float | None = None,
        ended: float | None = None,
        log: Path | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.status = status
        self.exit_code = exit_code
        self.attempts = attempts
        self.started = started
        self.ended = ended
        self.log = log
        self.metrics: dict[str, Any] = metrics if metrics is not None else {}

    def __repr__(self) -> str:
        return f"Result({self.command!r}, {self.status!r}, exit_code={self.exit_code!r})"

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


class RunOptions(NamedTuple):
    jobs: int = 1
    timeout: float | None = None
    attempts: int = 1
    exit_on_error: bool = True
    color: bool = False
    live: bool = False  # a status line that redraws itself; only on a terminal


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the running evals were stopped and not recorded."""

    def __init__(self, results: list[Result]) -> None:
        super().__init__("interrupted")
        self.results = results


class _Slot:
    """A command in the run loop, with its timers."""

    def __init__(self, command: Command, index: int, result: Result) -> None:
        self.command = command
        self.index = index
        self.result = result
        self.job: Job | None = None
        self.deadline: float | None = None  # the per-eval timeout
        self.kill_at: float | None = None  # SIGKILL if still running by then
        self.timed_out = False
        self.not_before = 0.0  # retry backoff


def execute(
    commands: Sequence[Command],
    progress: ProgressFile,
    options: RunOptions,
    executor: Executor,
    first_index: int,
    total: int,
    out: IO[str],
    err: IO[str],
) -> list[Result]:
    """Run the commands, `options.jobs` at a time, recording each success as it ends.

    `first_index` is how many of `total` were already done, for the `(i/N)` counter.
    Raises Interrupted on Ctrl-C or SIGTERM, after stopping every running child.
    """
    slots = [
        _Slot(command=list(c), index=first_index + i + 1, result=Result(list(c), NOT_RUN))
        for i, c in enumerate(commands)
    ]
    pending: deque[_Slot] = deque(slots)
    running: dict[int, _Slot] = {}
    deferred: list[_Slot] = []  # held by another oaievalset process
    stopping = False

    def clear_live() -> None:
        if options.live:
            out.write("\r\033[K")

    def draw_live() -> None:
        if options.live:
            ended = [s.result.status for s in slots]
            out.write(
                f"[{ended.count(DONE)} done, {sum(x in FAILURES for x in ended)} failed, "
                f"{len(running)} running, {len(pending)} pending]"
            )
            out.flush()

    def say(line: str) -> None:
        clear_live()
        print(line, file=out, flush=True)
        draw_live()

    def warn(line: str) -> None:
        clear_live()
        out.flush()
        print(line, file=err, flush=True)
        draw_live()

    def start(slot: _Slot) -> None:
        slot.result.attempts += 1
        log = progress.log_path(slot.command)
        if slot.result.attempts == 1:  # a new run starts a new log; retries append to it
            with contextlib.suppress(FileNotFoundError):
                os.truncate(log, 0)
        slot.result.log = log
        slot.result.started = slot.result.started or time.time()
        slot.timed_out = False
        say(
            highlight(
                f"Running command: {' '.join(slot.command)} ({slot.index}/{total})", options.color
            )
        )
        slot.job = executor.start(slot.command, log, echo_stderr=options.jobs == 1)
        now = time.monotonic()
        slot.deadline = now + options.timeout if options.timeout else None
        slot.kill_at = None
        running[id(slot.job)] = slot
        progress.update_state(
            slot.command,
            status="running",
            pid=os.getpid(),
            started=slot.result.started,
            attempts=slot.result.attempts,
            log=str(log),
        )

    def end(slot: _Slot, code: int) -> None:
        result = slot.result
        result.exit_code = code
        result.ended = time.time()
        if code == 0 and not slot.timed_out:
            progress.record(slot.command)
            progress.release(slot.command)
            result.status = DONE
            result.metrics = read_final_report(result.log)
            progress.update_state(
                slot.command, status=DONE, exit_code=0, ended=result.ended, attempts=result.attempts
            )
            saved = f"Saved progress to {progress.path}"
            if options.jobs > 1:  # several run at once: say which one ended
                saved += f" (done: {' '.join(slot.command)})"
            say(highlight(saved, options.color))
            return
        why = "timed out" if slot.timed_out else f"exit code {code}"
        if result.attempts < options.attempts and not stopping:
            delay = min(BACKOFF_BASE * 2 ** (result.attempts - 1), BACKOFF_MAX)
            warn(
                f"oaievalset: {' '.join(slot.command)} failed ({why}); "
                f"retrying in {delay:g} s (attempt {result.attempts + 1}/{options.attempts})"
            )
            slot.not_before = time.monotonic() + delay
            pending.appendleft(slot)
            return
        result.status = TIMEOUT if slot.timed_out else FAILED
        result.metrics = {}
        progress.release(slot.command)
        progress.update_state(
            slot.command,
            status=result.status,
            exit_code=code,
            ended=result.ended,
            attempts=result.attempts,
        )
        warn(alert(f"Failed: {' '.join(slot.command)} ({why}); log: {result.log}", options.color))

    try:
        while pending or running:
            now = time.monotonic()
            # Start what may start: up to `jobs` at once, nothing new once stopping.
            while pending and not stopping and len(running) < options.jobs:
                slot = pending[0]
                if slot.not_before > now:
                    break
                pending.popleft()
                if slot.result.attempts == 0:
                    if not progress.try_claim(slot.command):
                        warn(
                            f"oaievalset: {' '.join(slot.command)} is running in another "
                            f"oaievalset process; leaving it to that one"
                        )
                        deferred.append(slot)
                        continue
                    if progress.is_recorded(slot.command):
                        progress.release(slot.command)
                        slot.result.status = DONE_ELSEWHERE
                        continue
                start(slot)
            if stopping and not running:
                break
            if not running:
                if not pending:
                    break
                time.sleep(max(0.0, min(s.not_before for s in pending) - time.monotonic()))
                continue
            # Wait for a child to end, or for the next deadline.
            wake = [s.deadline for s in running.values() if s.deadline and not s.timed_out]
            wake += [s.kill_at for s in running.values() if s.kill_at]
            if pending and not stopping and len(running) < options.jobs:
                wake.append(min(s.not_before for s in pending))
            wait = max(0.0, min(wake) - time.monotonic()) if wake else None
            ended = executor.wait(wait)
            now = time.monotonic()
            for slot in running.values():
                assert slot.job is not None
                if slot.deadline and not slot.timed_out and now >= slot.deadline:
                    slot.timed_out = True
                    slot.kill_at = now + STOP_GRACE
                    slot.job.terminate()
                elif slot.kill_at and now >= slot.kill_at:
                    slot.kill_at = None
                    slot.job.kill()
            for job, code in ended:
                slot = running.pop(id(job))
                end(slot, code)
                if slot.result.status in FAILURES and options.exit_on_error:
                    stopping = True
        # Evals another process held: wait for it to let go, then see if it completed them.
        for slot in deferred:
            progress.wait_claim(slot.command)
            progress.release(slot.command)
            slot.result.status = (
                DONE_ELSEWHERE if progress.is_recorded(slot.command) else INCOMPLETE
            )
    except KeyboardInterrupt:
        clear_live()
        _stop_all(running, executor, progress)
        raise Interrupted([s.result for s in slots]) from None
    clear_live()
    return [s.result for s in slots]


def _stop_all(running: dict[int, _Slot], executor: Executor, progress: ProgressFile) -> None:
    """Stop every running child: SIGTERM, then SIGKILL after a grace period. Nothing is
    recorded as completed; the state says interrupted."""
    # A second Ctrl-C while we stop the children must not leave them running.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for slot in running.values():
            if slot.job is not None:
                slot.job.terminate()
        left = dict(running)
        for grace, stop in ((STOP_GRACE, "kill"), (STOP_GRACE, None)):
            deadline = time.monotonic() + grace
            while left and time.monotonic() < deadline:
                for job, code in executor.wait(max(0.0, deadline - time.monotonic())):
                    if id(job) in left:
                        left.pop(id(job)).result.exit_code = code
            if stop == "kill":
                for slot in left.values():
                    if slot.job is not None:
                        slot.job.kill()
        for slot in running.values():
            slot.result.status = INTERRUPTED
            slot.result.ended = time.time()
            progress.release(slot.command)
            # The state only informs; never let it hide the interrupt.
            with contextlib.suppress(Exception):
                progress.update_state(
                    slot.command,
                    status=INTERRUPTED,
                    exit_code=slot.result.exit_code,
                    ended=slot.result.ended,
                    attempts=slot.result.attempts,
                )
    finally:
        signal.signal(signal.SIGINT, previous)
