"""Run the commands of a set through an executor: up to N at once, skipping what is done,
recording what completes as soon as it does, and collecting one result per command.

The life of one eval is explicit: a `_Slot` moves through the phases below, and every
move happens in one method of `_Run`. The loop itself only starts, waits and dispatches;
what the terminal shows is `View`'s business.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from oaievalset.commands import Command, command_id, eval_key
from oaievalset.errors import EXIT_BUDGET, OaiEvalSetError
from oaievalset.executors.base import STOP_GRACE, Ended, JobSpec, describe_exit
from oaievalset.metrics import finite
from oaievalset.outcome import (
    ANSWER_CACHE,
    ANSWER_JOURNAL,
    BATCH,
    BATCH_SET,
    BUDGET,
    read_outcome,
)
from oaievalset.present.view import View
from oaievalset.records import Usage
from oaievalset.results import (
    DONE,
    DONE_ELSEWHERE,
    FAILED,
    INCOMPLETE,
    INTERRUPTED,
    NOT_RUN,
    STOPPED,
    TIMEOUT,
    Phase,
    Result,
    Status,
)
from oaievalset.state.journal import CommandState
from oaievalset.state.progress import ProgressFile
from oaievalset.watch import Watch

if TYPE_CHECKING:
    from oaievalset.executors.base import Executor, Job
    from oaievalset.ledger import Budget
    from oaievalset.prices import Price

# Result is the runner's product: tests and the Python API take it from here.
__all__ = ["Aborted", "Interrupted", "Result", "RunOptions", "execute"]

BACKOFF_BASE = 1.0  # seconds before the first retry; doubled each time, capped below
BACKOFF_MAX = 10.0
LIVE_EVERY = 0.5  # seconds between redraws of the live line's progress
PROGRESS_EVERY = 30.0  # seconds between progress lines on a stream that is not a terminal


PENDING, RUNNING, WAITING, HELD, ENDED = Phase


class RunOptions(NamedTuple):
    jobs: int = 1
    timeout: float | None = None
    attempts: int = 1
    exit_on_error: bool = True
    color: bool = False  # colour on stdout
    live: bool = False  # a status line that redraws itself; only on a terminal
    err_color: bool = False  # colour on stderr, decided for that stream
    answer_cache: str | None = None  # the folder of answers kept across runs, if opted into
    batch: str | None = None  # through the Batch API: the set's name, for the batches' metadata
    budget: Budget | None = None  # --max-cost or --max-tokens: the run's ledger and limit
    price: Price | None = None  # of the model, for the cost so far
    progress_every: float = PROGRESS_EVERY  # seconds between progress lines when not live


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the running evals were stopped and not recorded."""

    def __init__(self, results: list[Result]) -> None:
        super().__init__("interrupted")
        self.results = results


class Aborted(Exception):
    """An error stopped the run midway (an eval that could not be started, a state file
    that could not be written): the running evals were stopped and not recorded, and the
    eval it happened to failed with it as the reason."""

    def __init__(self, results: list[Result], error: Exception) -> None:
        super().__init__(str(error))
        self.results = results
        self.error = error

    @property
    def reason(self) -> str:
        return _error_text(self.error)

    @property
    def expected(self) -> bool:
        """An error the user can act on (one line); else a bug, whose traceback matters."""
        return isinstance(self.error, (OaiEvalSetError, OSError))


class _Slot:
    """A command in the run loop: its phase, its result so far, and its timers."""

    def __init__(self, command: Command, index: int) -> None:
        self.command = command
        self.index = index  # for the `(i/N)` counter
        self.result = Result(command, NOT_RUN)
        self.phase = PENDING
        self.job: Job | None = None
        self.deadline: float | None = None  # the per-eval timeout
        self.kill_at: float | None = None  # SIGKILL if still running by then
        self.timed_out = False
        self.not_before = 0.0  # retry backoff

    @property
    def name(self) -> str:
        return " ".join(self.command)


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
    slots = [_Slot(list(c), first_index + i + 1) for i, c in enumerate(commands)]
    view = View(
        out,
        err,
        options.color,
        options.err_color,
        options.live,
        slots_of=lambda: slots,
        show_log_tails=options.jobs > 1,  # at -j 1 the child's stderr was shown live
    )
    run = _Run(slots, progress, options, executor, view, total)
    try:
        run.loop()
        run.settle_held()
    except KeyboardInterrupt:
        view.clear()
        run.stop_all()
        raise Interrupted([s.result for s in slots]) from None
    except Exception as exc:
        # One way out for every error, a bug's too: the eval it struck fails with it, the
        # others stop.
        view.clear()
        run.abort(exc)
        raise Aborted([s.result for s in slots], exc) from None
    view.clear()
    return [s.result for s in slots]


class _Run:
    """One pass over the slots: every change of phase is a method here."""

    def __init__(
        self,
        slots: list[_Slot],
        progress: ProgressFile,
        options: RunOptions,
        executor: Executor,
        view: View,
        total: int,
    ) -> None:
        self.slots = slots
        self.progress = progress
        self.state = progress.state
        self.options = options
        self.executor = executor
        self.view = view
        self.total = total
        self.queue: deque[_Slot] = deque(slots)  # pending, in registry order
        self.retries: list[_Slot] = []  # waiting for a retry, each until its not_before
        self.running: dict[int, _Slot] = {}  # by id() of the job
        self.stopping = False  # an eval failed with --exit-on-error: start nothing new
        self.busy: _Slot | None = None  # the slot being started or ended, if an error strikes
        self._earlier: dict[str, CommandState] | None = None  # the journal, read once
        self.watch = Watch()  # the progress inside the running evals
        self.next_look = time.monotonic() + self.look_every()

    # -- the loop ----------------------------------------------------------------------

    def loop(self) -> None:
        while self.queue or self.retries or self.running:
            self.start_what_may_start()
            if self.stopping and not self.running:
                self.give_up_waiting()
                return
            if not self.running:
                if not self.retries:  # nothing could start, nothing will
                    return
                time.sleep(max(0.0, self.next_retry() - time.monotonic()))
                continue
            ended = self.executor.wait(self.wait_time())
            self.enforce_timeouts()
            self.look_inside()
            for outcome in ended:
                self.end(self.running.pop(id(outcome.job)), outcome)

    def look_every(self) -> float:
        return LIVE_EVERY if self.options.live else self.options.progress_every

    def look_inside(self) -> None:
        """Now and then, what the running evals have done so far, for the user."""
        now = time.monotonic()
        if now < self.next_look or not self.look_every():
            return
        self.next_look = now + self.look_every()
        self.watch.update()
        progress = self.watch.progress()
        if progress.samples or progress.answers:  # an engine that tells
            self.view.show_progress(progress.describe(self.options.price), self.each_running())

    def each_running(self) -> list[str]:
        """`eval 40/100` for each running eval whose engine tells, in the order they began."""
        parts = []
        for slot in sorted(self.running.values(), key=lambda s: s.index):
            answered = self.watch.answered(command_id(slot.command))
            if answered is not None:
                parts.append(f"{eval_key(slot.command)} {answered}")
        return parts

    def start_what_may_start(self) -> None:
        """Up to `jobs` at once, nothing new once stopping: first the retries whose time
        has come, then the pending evals; a retry still waiting holds back none of them."""
        budget = self.options.budget
        if budget is not None and not self.stopping and budget.is_spent():
            self.stopping = True  # nothing new starts; the running evals stop by themselves
        now = time.monotonic()
        due = sorted((s for s in self.retries if s.not_before <= now), key=lambda s: s.not_before)
        for slot in due:
            if self.stopping or len(self.running) >= self.options.jobs:
                return
            self.retries.remove(slot)
            self.start(slot)
        while self.queue and not self.stopping and len(self.running) < self.options.jobs:
            slot = self.queue.popleft()
            if self.claim(slot):
                self.start(slot)

    def wait_time(self) -> float | None:
        """Until the next deadline: a timeout, a kill after a timeout, or a retry that a
        free slot could start."""
        wake = [s.deadline for s in self.running.values() if s.deadline and not s.timed_out]
        wake += [s.kill_at for s in self.running.values() if s.kill_at]
        if self.look_every():
            wake.append(self.next_look)
        if self.retries and not self.stopping and len(self.running) < self.options.jobs:
            wake.append(self.next_retry())
        return max(0.0, min(wake) - time.monotonic()) if wake else None

    def next_retry(self) -> float:
        return min(s.not_before for s in self.retries)

    # -- transitions -------------------------------------------------------------------

    def claim(self, slot: _Slot) -> bool:
        """pending -> held (another process has it), ended (it recorded it), or claimed."""
        if not self.state.try_claim(slot.command):
            self.view.warn(
                f"oaievalset: {slot.name} is running in another oaievalset process; "
                f"leaving it to that one"
            )
            slot.phase = HELD
            return False
        if self.progress.is_recorded(slot.command):
            self.state.release(slot.command)
            self.finish(slot, DONE_ELSEWHERE)
            return False
        return True

    def start(self, slot: _Slot) -> None:
        """pending or waiting -> running."""
        result = slot.result
        result.attempts += 1
        log = self.state.log_path(slot.command)
        # Its answers are kept as they arrive, so that a retry or a resume asks only what
        # has no answer yet (our oaieval does; another ignores the variable).
        answers = {ANSWER_JOURNAL: str(self.state.answers_path(slot.command))}
        if self.options.answer_cache:
            answers[ANSWER_CACHE] = self.options.answer_cache
        if self.options.budget is not None:
            answers[BUDGET] = self.options.budget.env()
        if self.options.batch is not None:
            answers.update({BATCH: "1", BATCH_SET: self.options.batch})
        # At -j 1 the child's stderr is shown live, as the original shows it.
        spec = JobSpec(slot.command, log, self.options.jobs == 1, answers)
        # A job that a driver which died left running (on a cluster) is taken over.
        adopted = self.executor.adopt(spec) if result.attempts == 1 else None
        if result.attempts == 1 and adopted is None:  # a new run starts a new log
            with contextlib.suppress(FileNotFoundError):
                os.truncate(log, 0)
            if self.progress.fresh:  # --no-resume: its answers too
                self.state.forget_answers(slot.command)
        self.watch.begin(command_id(slot.command), self.state.answers_path(slot.command), log)
        result.log = log
        result.started = result.started or time.time()
        slot.timed_out = False
        slot.phase = RUNNING  # before the line is drawn, so that the live line counts it
        self.view.say(f"Running command: {slot.name} ({slot.index}/{self.total})")
        self.busy = slot
        slot.job = adopted or self.executor.start(spec)
        self.busy = None
        result.where = slot.job.where
        slot.deadline = time.monotonic() + self.options.timeout if self.options.timeout else None
        slot.kill_at = None
        self.running[id(slot.job)] = slot
        self.state.note(
            slot.command,
            status="running",
            pid=os.getpid(),
            started=result.started,
            ended=None,
            exit_code=None,
            attempts=result.attempts,
            log=str(log),
            where=result.where,
        )

    def end(self, slot: _Slot, outcome: Ended) -> None:
        """running -> ended (done, failed, timed out) or waiting (for a retry)."""
        self.watch.finish(command_id(slot.command))  # its last answers, before they go
        if self.view.progress:
            self.view.progress = self.watch.progress().describe(self.options.price)
            self.view.each = self.each_running()  # without this one, popped before
        result = slot.result
        code = result.exit_code = outcome.exit_code
        result.ended = time.time()
        result.where = outcome.where or result.where
        result.reason = outcome.reason
        if outcome.warning:
            self.view.warn(outcome.warning)
        if code == 0 and not slot.timed_out:
            self.busy = slot  # recording it may fail (the progress lock, a full disk)
            self.succeed(slot, outcome.record)
            self.busy = None
            return
        budget = self.options.budget
        if code == EXIT_BUDGET and budget is not None and budget.is_spent():
            self.state.release(slot.command)  # its answers stay for the next run
            self.finish(slot, STOPPED)
            self.stopping = True
            return
        why = "timed out" if slot.timed_out else outcome.reason or describe_exit(code)
        if result.attempts < self.options.attempts and not self.stopping:
            delay = min(BACKOFF_BASE * 2 ** (result.attempts - 1), BACKOFF_MAX)
            self.view.warn(
                f"oaievalset: {slot.name} failed ({why}); "
                f"retrying in {delay:g} s (attempt {result.attempts + 1}/{self.options.attempts})"
            )
            slot.phase = WAITING
            slot.not_before = time.monotonic() + delay
            self.retries.append(slot)
            return
        self.fail(slot, TIMEOUT if slot.timed_out else FAILED)
        self.view.failure(f"Failed: {slot.name} ({why}); log: {result.log}", result.log)

    def succeed(self, slot: _Slot, record: str | None) -> None:
        result = slot.result
        self.progress.record(slot.command)
        with contextlib.suppress(OSError):  # recorded: its answers are in the record
            self.state.forget_answers(slot.command)
        self.state.release(slot.command)
        outcome = read_outcome(result.log)
        result.metrics, result.record = outcome.metrics, record or outcome.record
        result.reuse, result.batch = outcome.reuse, outcome.batch
        if result.record and not os.path.exists(result.record):
            result.record = None  # written where it ran (a node's own disk): not here
        if result.usage is not None:  # tokens spent on it so far, resumes and retries included
            before = Usage.of(self.earlier_state(slot.command).get("usage_all_runs"))
            result.usage_all_runs = result.usage + (before or Usage())
        self.finish(slot, DONE)
        saved = f"Saved progress to {self.progress.path}"
        if self.options.jobs > 1:  # several run at once: say which one ended
            saved += f" (done: {slot.name})"
        self.view.say(saved)

    def fail(self, slot: _Slot, status: Status) -> None:
        slot.result.metrics = {}
        self.state.release(slot.command)
        self.finish(slot, status)
        if self.options.exit_on_error:
            self.stopping = True

    def finish(self, slot: _Slot, status: Status) -> None:
        """Any phase -> ended, with the state journal told."""
        result = slot.result
        slot.phase = ENDED
        result.status = status
        if result.attempts:
            extra: dict[str, Any] = {}
            if status == DONE and result.record:
                extra["record"] = result.record  # where it is now (an executor may move it)
            if status == DONE:  # kept apart: a later failed attempt must not stand for it
                extra["done"] = {
                    "started": result.started,
                    "ended": result.ended,
                    "attempts": result.attempts,
                    "metrics": {k: finite(v) for k, v in result.metrics.items()},
                    "record": result.record,
                    "where": result.where,
                    "reuse": result.reuse.as_dict() if result.reuse else None,
                    "batch": result.batch.as_dict() if result.batch else None,
                }
            if result.usage_all_runs is not None:
                extra["usage_all_runs"] = result.usage_all_runs.as_dict()
            self.state.note(
                slot.command,
                status=status,
                exit_code=result.exit_code,
                started=result.started,
                ended=result.ended,
                attempts=result.attempts,
                where=result.where,
                **extra,
            )

    def earlier_state(self, command: Command) -> CommandState:
        """What the journal said of a command when this run first needed it."""
        if self._earlier is None:
            self._earlier = self.state.states()
        return self._earlier.get(command_id(command), {})

    def enforce_timeouts(self) -> None:
        """running past its deadline: SIGTERM, then SIGKILL after a grace period."""
        now = time.monotonic()
        for slot in self.running.values():
            assert slot.job is not None
            if slot.deadline and not slot.timed_out and now >= slot.deadline:
                slot.timed_out = True
                slot.kill_at = now + STOP_GRACE
                slot.job.terminate()
            elif slot.kill_at and now >= slot.kill_at:
                slot.kill_at = None
                slot.job.kill()

    def give_up_waiting(self) -> None:
        """Stopping: an eval waiting for its retry ends as its last attempt did."""
        for slot in self.retries:
            self.finish(slot, TIMEOUT if slot.timed_out else FAILED)
        self.retries.clear()
        self.queue.clear()

    def settle_held(self) -> None:
        """Evals another process held: wait for it to let go, then see if it completed them."""
        for slot in self.slots:
            if slot.phase == HELD:
                self.state.wait_claim(slot.command)
                self.state.release(slot.command)
                recorded = self.progress.is_recorded(slot.command)
                self.finish(slot, DONE_ELSEWHERE if recorded else INCOMPLETE)

    def abort(self, error: Exception) -> None:
        """An error midway: the eval it struck fails with it as the reason (not recorded),
        the running ones are stopped, the waiting ones give up."""
        slot, self.busy = self.busy, None
        if slot is not None and slot.phase != ENDED:
            self.running = {k: s for k, s in self.running.items() if s is not slot}
            slot.result.ended = slot.result.ended or time.time()
            slot.result.reason = _error_text(error)
            with contextlib.suppress(Exception):  # the state only informs
                self.state.release(slot.command)
            with contextlib.suppress(Exception):
                self.finish(slot, FAILED)
            slot.phase, slot.result.status = ENDED, FAILED
        # The error is what the user must see, not one in stopping (a cluster that no
        # longer answers): the executor's close() cancels what is left.
        with contextlib.suppress(Exception):
            self.stop_all()

    def stop_all(self) -> None:
        """Interrupted: stop every running child (SIGTERM, then SIGKILL after a grace
        period); nothing more is recorded. Running and waiting evals end interrupted."""
        # A second Ctrl-C while we stop the children must not leave them running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stop_children()
        finally:  # even if stopping failed (a cluster that no longer answers)
            for slot in self.slots:
                if slot.phase in (RUNNING, WAITING):
                    slot.result.ended = time.time()
                    self.state.release(slot.command)
                    # The state only informs; never let it hide the interrupt.
                    with contextlib.suppress(Exception):
                        self.finish(slot, INTERRUPTED)
                    slot.phase = ENDED
                    slot.result.status = INTERRUPTED
            signal.signal(signal.SIGINT, previous)

    def _stop_children(self) -> None:
        for slot in self.running.values():
            if slot.job is not None:
                slot.job.terminate()
        left = dict(self.running)
        for then_kill in (True, False):
            deadline = time.monotonic() + STOP_GRACE
            while left and time.monotonic() < deadline:
                for outcome in self.executor.wait(max(0.0, deadline - time.monotonic())):
                    if id(outcome.job) in left:
                        left.pop(id(outcome.job)).result.exit_code = outcome.exit_code
            if then_kill:
                for slot in left.values():
                    if slot.job is not None:
                        slot.job.kill()


def _error_text(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error)
