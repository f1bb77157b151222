"""The run loop with a recording fake executor: order, skipping, stopping, parallelism,
timeouts and retries, without spawning anything."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from oaievalset import runner
from oaievalset.errors import LaunchError
from oaievalset.executors.base import Defaults, Ended, JobSpec
from oaievalset.runner import RunOptions, execute
from oaievalset.state.progress import ProgressFile


class FakeJob:
    where: str | None = None

    def __init__(self, executor: FakeExecutor, command: list[str]) -> None:
        self.executor = executor
        self.command = command
        self.signals: list[str] = []

    def terminate(self) -> None:
        self.signals.append("TERM")
        self.executor.ended.append(Ended(self, -15))

    def kill(self) -> None:
        self.signals.append("KILL")


class FakeExecutor(Defaults):
    """Records what it starts; each command ends at once with the next of its exit codes,
    except those listed as hanging, which end only when terminated."""

    def __init__(self, codes: dict[str, list[int]] | None = None, hang: Sequence[str] = ()):
        self.codes = codes or {}
        self.hang = set(hang)
        self.started: list[str] = []
        self.ended: list[Ended] = []
        self.running_peak = 0
        self._running = 0

    def start(self, spec: JobSpec) -> FakeJob:
        command = spec.command
        key = command[2]
        self.started.append(key)
        job = FakeJob(self, list(command))
        self._running += 1
        self.running_peak = max(self.running_peak, self._running)
        if key not in self.hang:
            codes = self.codes.get(key, [0])
            self.ended.append(Ended(job, codes.pop(0) if len(codes) > 1 else codes[0]))
        return job

    def wait(self, timeout: float | None) -> list[Ended]:
        if not self.ended:
            time.sleep(min(timeout if timeout is not None else 0.01, 0.01))
            return []
        ended, self.ended = self.ended, []
        self._running -= len(ended)
        return ended

    def close(self) -> None:
        pass


def commands(*keys: str) -> list[list[str]]:
    return [["oaieval", "dummy", key] for key in keys]


@pytest.fixture
def progress(tmp_path: Path) -> ProgressFile:
    p = ProgressFile(tmp_path / "m.s.progress.txt")
    p.prepare()
    return p


def run(
    progress: ProgressFile, executor: FakeExecutor, keys: Sequence[str], **options: object
) -> list[runner.Result]:
    return execute(
        commands(*keys),
        progress,
        RunOptions(**options),  # type: ignore[arg-type]
        executor,
        first_index=0,
        total=len(keys),
        out=io.StringIO(),
        err=io.StringIO(),
    )


def recorded(progress: ProgressFile) -> list[str]:
    return [entry[2] for entry in progress.read()]


def test_commands_run_in_order_and_each_success_is_recorded(progress: ProgressFile) -> None:
    fake = FakeExecutor()
    results = run(progress, fake, ["a", "b", "c"])
    assert fake.started == ["a", "b", "c"]
    assert [r.status for r in results] == ["done"] * 3
    assert recorded(progress) == ["a", "b", "c"]


def test_a_failure_stops_the_run_when_exit_on_error(progress: ProgressFile) -> None:
    fake = FakeExecutor(codes={"b": [2]})
    results = run(progress, fake, ["a", "b", "c"])
    assert fake.started == ["a", "b"]
    assert [r.status for r in results] == ["done", "failed", "not run"]
    assert results[1].exit_code == 2
    assert recorded(progress) == ["a"]


def test_without_exit_on_error_the_run_goes_on(progress: ProgressFile) -> None:
    fake = FakeExecutor(codes={"b": [2]})
    results = run(progress, fake, ["a", "b", "c"], exit_on_error=False)
    assert fake.started == ["a", "b", "c"]
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert recorded(progress) == ["a", "c"]


def test_jobs_start_several_before_waiting(progress: ProgressFile) -> None:
    fake = FakeExecutor(hang=["a", "b", "c"])
    results = run(progress, fake, ["a", "b", "c"], jobs=3, timeout=0.05, exit_on_error=False)
    assert fake.running_peak == 3
    assert all(r.status == "timed out" for r in results)


def test_a_timeout_terminates_and_counts_as_failed(progress: ProgressFile) -> None:
    fake = FakeExecutor(hang=["a"])
    results = run(progress, fake, ["a", "b"], timeout=0.05)
    assert results[0].status == "timed out" and results[1].status == "not run"
    assert recorded(progress) == []


def test_attempts_retry_until_success(
    progress: ProgressFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "BACKOFF_BASE", 0.01)
    fake = FakeExecutor(codes={"a": [1, 1, 0]})
    results = run(progress, fake, ["a"], attempts=3)
    assert fake.started == ["a", "a", "a"]
    assert results[0].status == "done" and results[0].attempts == 3


def test_a_command_recorded_meanwhile_by_another_process_is_not_run(
    progress: ProgressFile,
) -> None:
    other = ProgressFile(progress.path)
    other.record(["oaieval", "dummy", "b"])
    fake = FakeExecutor()
    results = run(progress, fake, ["a", "b"])
    assert fake.started == ["a"]
    assert results[1].status == "done elsewhere"


class BrokenExecutor(FakeExecutor):
    """Starts commands until it meets `broken`, where it raises `error`; stopping a job
    fails too when `stop_fails` (a cluster that no longer answers)."""

    def __init__(self, hang: Sequence[str], broken: str, error: Exception, stop_fails: bool):
        super().__init__(hang=hang)
        self.broken = broken
        self.error = error
        self.stop_fails = stop_fails
        self.jobs: list[FakeJob] = []

    def start(self, spec: JobSpec) -> FakeJob:
        if spec.command[2] == self.broken:
            raise self.error
        job = super().start(spec)
        self.jobs.append(job)
        if self.stop_fails:
            job.terminate = self.refuse  # type: ignore[method-assign]
        return job

    def refuse(self) -> None:
        raise LaunchError("'scancel' did not answer in 30 s; is the Slurm controller up?")


@pytest.mark.parametrize(
    ("error", "stop_fails"),
    [
        (RuntimeError("a bug in the executor"), False),  # not one of ours: a bug
        (LaunchError("sbatch refused the job"), True),  # and stopping the others fails too
    ],
)
def test_any_error_mid_run_stops_the_running_and_fails_the_eval_it_struck(
    progress: ProgressFile, error: Exception, stop_fails: bool
) -> None:
    broken = BrokenExecutor(hang=["b"], broken="c", error=error, stop_fails=stop_fails)
    with pytest.raises(runner.Aborted) as aborted:
        run(progress, broken, ["a", "b", "c", "d"], jobs=2)
    assert aborted.value.error is error
    assert aborted.value.expected == isinstance(error, LaunchError)
    results = aborted.value.results
    assert [r.status for r in results] == ["done", "interrupted", "failed", "not run"]
    assert results[2].reason == str(error)
    if not stop_fails:
        assert broken.jobs[1].signals == ["TERM"]  # b, which was running, was stopped
    assert recorded(progress) == ["a"]
    states = sorted(state["status"] for state in progress.state.states().values())
    assert states == ["done", "failed", "interrupted"]
