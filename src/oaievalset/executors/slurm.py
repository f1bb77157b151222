"""The Slurm executor: each eval is one batch job, handed to the cluster with `sbatch` and
watched through the files it leaves in the set's state folder (which the nodes must share)
and `squeue`/`scontrol`; stopped with `scancel`. No Python package is needed.

Each job runs the same oaieval command as a local run, with the driver's environment
(`sbatch --export=ALL`) and the variables set for the eval, appending its output to the
eval's log, and at the end writes its exit code and node to an exit file (written aside
and renamed, so it is whole). The driver stays the only writer of the progress file, the
journal and the report; the eval's answer journal is in the state folder too, so a job
requeued on another node goes on where the first stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from oaievalset.errors import LaunchError, UsageError
from oaievalset.executors.base import Defaults, Ended, JobSpec, find_executable

if TYPE_CHECKING:
    import argparse
    import subprocess
    from pathlib import Path

# Every run parses the flags of every backend: what only a Slurm run needs is imported
# where it is used, so that `oaievalset --help` stays fast.

POLL = 0.25  # seconds between looks at the exit files
QUEUE_POLL = 2.0  # seconds between asking squeue which jobs are still there
COMMAND_TIMEOUT = 30.0  # seconds a Slurm command may take


NAME = "slurm"
DESCRIPTION = "one Slurm batch job per eval"


class Options(NamedTuple):
    partition: str | None = None
    time_limit: str | None = None  # as sbatch --time takes it: minutes, or [D-]HH:MM:SS
    sbatch_args: tuple[str, ...] = ()
    shared: bool = False  # the user says the state folder is shared, even under /tmp


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--slurm-partition", metavar="NAME", help="sbatch --partition.")
    group.add_argument(
        "--slurm-time", metavar="LIMIT", help="sbatch --time (minutes, or D-HH:MM:SS)."
    )
    group.add_argument(
        "--slurm-arg",
        metavar="ARG",
        action="append",
        default=[],
        help="One more sbatch argument (repeatable), e.g. --slurm-arg=--mem=4G.",
    )
    group.add_argument(
        "--slurm-shared",
        action="store_true",
        help="The state folder is shared by the nodes, even under /tmp.",
    )


def options(values: Mapping[str, Any]) -> Options:
    """The options from parsed arguments (a run() Namespace may lack them: defaults)."""
    return Options(
        partition=values.get("slurm_partition"),
        time_limit=values.get("slurm_time"),
        sbatch_args=tuple(values.get("slurm_arg") or ()),
        shared=bool(values.get("slurm_shared")),
    )


def create(options: Options, state_dir: Path) -> SlurmExecutor:
    """The executor, once the cluster answers and the state folder can be shared."""
    executor = SlurmExecutor(state_dir / "slurm", options)
    executor.check_shared(state_dir)
    return executor


class SlurmJob:
    """One submitted eval."""

    def __init__(self, executor: SlurmExecutor, job_id: str, key: str, exit_file: Path) -> None:
        self.executor = executor
        self.job_id = job_id
        self.key = key  # the command's name in the folder
        self.exit_file = exit_file
        self.signalled = False

    @property
    def where(self) -> str:
        return f"slurm job {self.job_id}"

    def terminate(self) -> None:
        self.signalled = True
        self.executor.scancel("--signal=TERM", "--full", self.job_id)

    def kill(self) -> None:
        self.signalled = True
        self.executor.scancel(self.job_id)


class SlurmExecutor(Defaults):
    """Runs evals as Slurm jobs; `folder` (in the set's state folder) holds the job scripts,
    Slurm's own output of each job, and the exit files."""

    def __init__(self, folder: Path, options: Options) -> None:
        self.folder = folder
        self.options = options
        self._jobs: dict[str, SlurmJob] = {}  # by job id, while not reported ended
        self._queue_checked = 0.0
        self._found: dict[str, str | None] = {}
        import shutil

        for command in ("sbatch", "squeue", "scontrol", "scancel", "sinfo"):
            if shutil.which(command) is None:
                raise LaunchError(
                    f"'{command}' not found on PATH; --executor slurm needs the Slurm client "
                    f"commands (run oaievalset on a login node of the cluster)"
                )
        self.nodes = self._nodes()

    # -- the cluster -------------------------------------------------------------------

    def _slurm(self, *argv: str) -> subprocess.CompletedProcess[str]:
        import subprocess

        try:
            return subprocess.run(
                list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise LaunchError(
                f"'{' '.join(argv)}' did not answer in {COMMAND_TIMEOUT:.0f} s; is the Slurm "
                f"controller up?"
            ) from None

    def _nodes(self) -> list[str]:
        done = self._slurm("sinfo", "-h", "-N", "-o", "%N")
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no answer"])[-1]
            raise LaunchError(f"no Slurm controller answers (sinfo: {why}); check SLURM_CONF")
        return sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})

    def check_shared(self, state_dir: Path) -> None:
        """The nodes write into the state folder: on several nodes it must be shared."""
        place = os.path.realpath(state_dir)
        if len(self.nodes) > 1 and not self.options.shared and place.startswith("/tmp/"):
            raise UsageError(
                f"the state folder {state_dir} is under /tmp, which the {len(self.nodes)} "
                f"nodes of the cluster do not share; set OAIEVALSET_PROGRESS_DIR to a shared "
                f"folder, or pass --slurm-shared if /tmp is shared"
            )

    def scancel(self, *argv: str) -> None:
        self._slurm("scancel", *argv)

    # -- jobs --------------------------------------------------------------------------

    def start(self, spec: JobSpec) -> SlurmJob:
        import shlex

        from oaievalset.commands import command_id

        self.folder.mkdir(parents=True, exist_ok=True)
        key = f"{command_id(spec.command)}.{time.time_ns()}"
        script, exit_file = self.folder / f"{key}.sh", self.folder / f"{key}.exit"
        program = self._executable(spec.command[0])
        command = " ".join(shlex.quote(part) for part in [program, *spec.command[1:]])
        done_file, aside = shlex.quote(str(exit_file)), shlex.quote(f"{exit_file}.tmp")
        exports = "".join(
            f"export {name}={shlex.quote(value)}\n" for name, value in (spec.env or {}).items()
        )
        script.write_text(
            "#!/bin/sh\n"
            "# An eval of oaievalset: its output goes to the eval's log; its exit code and node\n"
            "# to the exit file, written aside and renamed.\n"
            f"cd {shlex.quote(os.getcwd())} || exit 1\n"
            f"{exports}"
            f"{command} >> {shlex.quote(str(spec.log))} 2>&1 < /dev/null\n"
            "code=$?\n"
            f'printf "%s %s\\n" "$code" "${{SLURMD_NODENAME:-?}}" > {aside}\n'
            f"mv -f {aside} {done_file}\n"
            'exit "$code"\n'
        )
        argv = ["sbatch", "--parsable", "--requeue", "--export=ALL", "--open-mode=append",
                f"--job-name=oaievalset:{spec.command[2] if len(spec.command) > 2 else 'eval'}",
                f"--output={self.folder / key}.out"]  # fmt: skip
        if self.options.partition:
            argv.append(f"--partition={self.options.partition}")
        if self.options.time_limit:
            argv.append(f"--time={self.options.time_limit}")
        argv += [*self.options.sbatch_args, str(script)]
        done = self._slurm(*argv)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
            raise LaunchError(f"sbatch refused the job of {' '.join(spec.command)}: {why}")
        job = SlurmJob(self, done.stdout.strip().split(";")[0], key, exit_file)
        (self.folder / f"{key}.job").write_text(job.job_id + "\n")
        self._jobs[job.job_id] = job
        return job

    def _executable(self, name: str) -> str:
        # The program as found here, so that the nodes (which share the file system) run
        # the same oaieval; else its name, looked up on the node's PATH.
        if name not in self._found:
            self._found[name] = find_executable(name)
        return self._found[name] or name

    def wait(self, timeout: float | None) -> list[Ended]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = [e for job in list(self._jobs.values()) if (e := self._exited(job))]
            if not ended and self._jobs and self._queue_due():
                ended = self._vanished()
            for outcome in ended:
                self._forget(outcome.job)  # type: ignore[arg-type]
            if ended or not self._jobs:
                return ended
            if deadline is not None and time.monotonic() >= deadline:
                return []
            left = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            time.sleep(left)

    def _exited(self, job: SlurmJob) -> Ended | None:
        try:
            text = job.exit_file.read_text(errors="replace").strip()
        except FileNotFoundError:
            return None
        code, _, node = text.partition(" ")
        where = f"{job.where} on {node}" if node and node != "?" else job.where
        try:
            return Ended(job, int(code), where=where)
        except ValueError:  # written aside and renamed, so whole: something else wrote it
            # The driver forgets the job now: it must not go on running unwatched.
            self.scancel(job.job_id)
            return Ended(job, 1, where=where, reason=f"its exit file {job.exit_file} holds "
                         f"{text[:40]!r}, not an exit code")  # fmt: skip

    def _queue_due(self) -> bool:
        signalled = any(job.signalled for job in self._jobs.values())
        if time.monotonic() - self._queue_checked >= (POLL if signalled else QUEUE_POLL):
            self._queue_checked = time.monotonic()
            return True
        return False

    def _vanished(self) -> list[Ended]:
        """Jobs that left the queue without an exit file: cancelled, out of memory, out of
        time, or their node failed for good; with Slurm's reason."""
        ids = ",".join(self._jobs)
        done = self._slurm("squeue", "-h", "-j", ids, "-o", "%i")
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            return []  # the controller is busy: look again later
        queued = {line.strip() for line in done.stdout.splitlines()}
        ended = []
        for job_id, job in list(self._jobs.items()):
            if job_id in queued:
                continue
            last = self._exited(job)  # it may have written the file meanwhile
            ended.append(last or Ended(job, *self._reason(job)))
        return ended

    def _reason(self, job: SlurmJob) -> tuple[int, None, str, str]:
        info = self._slurm("scontrol", "show", "job", "-o", job.job_id).stdout
        fields = dict(part.split("=", 1) for part in info.split() if "=" in part)
        state, reason = fields.get("JobState", "gone"), fields.get("Reason", "None")
        signal = fields.get("ExitCode", "0:0").partition(":")[2]
        code = -int(signal) if signal.isdigit() and int(signal) else 1
        why = f"Slurm job {job.job_id} ended {state} without an exit code"
        if reason not in ("None", ""):
            why += f" ({reason})"
        return code, None, job.where, why

    def _forget(self, job: SlurmJob) -> None:
        """The driver has the job's end: its files go (a leftover exit file is what a driver
        that died leaves, for the next one to find)."""
        self._jobs.pop(job.job_id, None)
        for suffix in (".job", ".exit"):
            (self.folder / f"{job.key}{suffix}").unlink(missing_ok=True)

    def adopt(self, spec: JobSpec) -> SlurmJob | None:
        """A job of this command that a driver which died left behind: still queued or
        running, or ended with an exit file. The newest one, if any."""
        from oaievalset.commands import command_id

        prefix = f"{command_id(spec.command)}."
        try:
            left = sorted(
                p for p in self.folder.iterdir() if p.name.startswith(prefix) and p.suffix == ".job"
            )
        except FileNotFoundError:
            return None
        for marker in reversed(left):
            key = marker.name[: -len(".job")]
            job = SlurmJob(self, marker.read_text().strip(), key, self.folder / f"{key}.exit")
            if job.exit_file.exists() or job.job_id in self._queued([job.job_id]):
                self._jobs[job.job_id] = job
                return job
            marker.unlink(missing_ok=True)
        return None

    def _queued(self, ids: Sequence[str]) -> set[str]:
        done = self._slurm("squeue", "-h", "-j", ",".join(ids), "-o", "%i")
        return {line.strip() for line in done.stdout.splitlines()}

    def close(self) -> None:
        """Cancel what is still tracked (nothing, after a run that ended normally)."""
        if self._jobs:
            self.scancel(*self._jobs)
            self._jobs.clear()
