"""The protocol every executor backend implements, the types that cross it, and the helpers
the backends share. A backend is a module of this folder that `executors.BACKENDS` names."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from oaievalset.errors import LaunchError

if TYPE_CHECKING:
    from pathlib import Path

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a child must stop


class JobSpec(NamedTuple):
    """One eval to run, with all an executor needs to run it here or elsewhere."""

    command: Sequence[str]
    log: Path  # where its stdout and stderr end up, on this machine
    echo_stderr: bool = False  # also show its stderr live on ours (one eval at a time)
    env: Mapping[str, str] | None = None  # set for it, over this process's environment


class Ended(NamedTuple):
    """What comes back from an eval: its exit code, and where its record is when the
    executor moved it (else the log says, as `oaieval` logs it), where it ran, why it
    ended when its exit code cannot say (a cluster's reason), and a warning line for the
    user (a record left on the node)."""

    job: Job
    exit_code: int
    record: str | None = None
    where: str | None = None
    reason: str | None = None
    warning: str | None = None


# The protocols are for the type checker alone: building Protocol classes at every start
# would cost `oaievalset --help` a millisecond or two, and nothing checks them at run time.
if TYPE_CHECKING:

    class Job(Protocol):
        """A started eval."""

        @property
        def where(self) -> str | None:
            """The node or job that runs it, when the executor can say; else None."""
            ...

        def terminate(self) -> None: ...

        def kill(self) -> None: ...

    class Executor(Protocol):
        """Starts evals and reports those that have ended.

        This is the seam where another engine (a cluster, a queue) takes over: the runner only
        starts jobs, waits for endings and asks for a stop. Whatever runs the eval, its output
        must reach `spec.log`, which the runner reads for the final report.
        """

        def start(self, spec: JobSpec) -> Job:
            """Start an eval."""
            ...

        def wait(self, timeout: float | None) -> list[Ended]:
            """The jobs that ended; [] if none did within timeout."""
            ...

        def close(self) -> None:
            """Release what the executor holds; called when no job runs any more."""
            ...

        def adopt(self, spec: JobSpec) -> Job | None:
            """A job of this eval that a driver which died left running or ended (a cluster
            keeps it), to wait for instead of starting the eval again; None if there is none."""
            ...

        def default_jobs(self, evals: int) -> int:
            """How many evals run at once when -j is not given, for `evals` evals to run."""
            ...


class Defaults:
    """The optional members of Executor, for a backend to inherit: no adoption, one eval at
    a time, nothing to release."""

    def adopt(self, spec: JobSpec) -> Job | None:
        return None

    def default_jobs(self, evals: int) -> int:
        return 1

    def close(self) -> None:
        return None


def describe_exit(code: int) -> str:
    """`exit code 2`, or `killed by SIGKILL` for a negative code (Popen's way of saying a
    signal ended the process)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def find_executable(name: str) -> str | None:
    """The program to start for `name`: on PATH, or else beside the Python running us (so
    that a virtual environment works without being activated)."""
    import shutil

    if os.sep in name:
        return name if os.path.exists(name) else None
    found = shutil.which(name)
    if found is None:
        sibling = os.path.join(os.path.dirname(sys.executable), name)
        if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
            found = sibling
    return found


def check_executable(command: Sequence[str]) -> None:
    """Fail before anything is written when the eval command cannot be found."""
    if find_executable(command[0]) is None:
        raise not_found(command[0])


def not_found(name: str) -> LaunchError:
    return LaunchError(
        f"'{name}' not found on PATH; install oaievalset (it provides oaieval) "
        f"or put an oaieval on PATH"
    )
