"""The Ray executor: each eval is one Ray task that runs the same oaieval command on a worker
node (found on the worker's PATH) and brings back its exit code, its output (into the
driver's log of the eval) and its record (into the driver's state folder). The driver stays
the only writer of the progress file, the journal and the report.

`ray` is an optional extra: `pip install 'oaievalset[ray]'`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from oaievalset.errors import LaunchError
from oaievalset.executors.base import Defaults, Ended, JobSpec

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

# Every run parses the flags of every backend: what only a Ray run needs is imported where
# it is used, so that `oaievalset --help` stays fast.

# The environment a task takes from the driver: the model's server and key, and the
# engine's settings. The rest (PATH first) is the worker's own.
PASSED_ON = ("OPENAI_", "EVALS_", "OAIEVAL_", "AZURE_OPENAI_")
RECORD_LIMIT = 512 * 1024 * 1024  # bytes of a record brought back
LOSS_LIMIT = 3  # times a task lost with its node is submitted again
NODE_DEATH_WAIT = 10.0  # seconds to learn whether an eval killed by SIGKILL lost its node
LOST_WITH_A_NODE = ("LocalRayletDiedError", "NodeDiedError", "WorkerCrashedError")

NAME = "ray"
DESCRIPTION = "one Ray task per eval"


class Options(NamedTuple):
    address: str | None = None  # None: RAY_ADDRESS, else the cluster on this machine


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="The cluster (default: RAY_ADDRESS, else the one on this machine); "
        "'local' starts one here.",
    )


def options(values: Mapping[str, Any]) -> Options:
    return Options(address=values.get("ray_address"))


def create(options: Options, state_dir: Path) -> RayExecutor:
    return RayExecutor(state_dir, options.address)


def run_eval(command: list[str], env: dict[str, str], cwd: str) -> dict[str, Any]:
    """On a worker: run the eval, and return its exit code, output, record and node. Its
    process dies with the worker's (a cancelled or lost task leaves no eval running)."""
    import ctypes
    import signal
    import subprocess

    import ray

    from oaievalset.executors.base import find_executable
    from oaievalset.outcome import record_path_in

    libc = ctypes.CDLL(None, use_errno=True)

    def die_with_the_worker() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    proc = subprocess.Popen(
        command,
        # On the worker's PATH, or beside its Python (a virtual environment), as locally.
        executable=find_executable(command[0]) or command[0],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        cwd=cwd if os.path.isdir(cwd) else None,
        preexec_fn=die_with_the_worker,
    )
    try:
        output, _ = proc.communicate()
    except BaseException:  # a cancelled task: stop the eval first
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    path = record_path_in(output.decode("utf-8", "replace").splitlines())
    context = ray.get_runtime_context()
    return {
        "code": proc.returncode,
        "output": output,
        **take_record(path),
        "node": context.get_node_id(),
    }


def take_record(path: str | None, limit: int = RECORD_LIMIT) -> dict[str, Any]:
    """On a worker: the record the eval wrote, to bring back, if there is one and it is not
    over `limit` bytes; its path and size in any case (for the driver to say where it is)."""
    record = size = None
    if path is not None and os.path.isfile(path):
        size = os.path.getsize(path)
        if size <= limit:
            with open(path, "rb") as f:
                record = f.read()
    name = os.path.basename(path) if path else None
    return {"record": record, "record_name": name, "record_path": path, "record_size": size}


def bring_back(
    result: Mapping[str, Any], command: Sequence[str], records: Path, limit: int = RECORD_LIMIT
) -> tuple[str | None, str | None]:
    """On the driver: where the record a task brought back is now (in `records`), and a
    warning when it was too large to bring back (it stays on the worker)."""
    from oaievalset.commands import command_id

    if result.get("record") is not None:
        records.mkdir(parents=True, exist_ok=True)
        path = records / f"{command_id(command)[:8]}.{result['record_name']}"
        path.write_bytes(result["record"])
        return str(path), None
    size = result.get("record_size")
    if size is None or size <= limit:
        return None, None  # no record (a failed eval, a dry run), or one gone meanwhile
    name = command[2] if len(command) > 2 else " ".join(command)
    node = str(result.get("node") or "?")[:8]
    return None, (
        f"oaievalset: warning: the record of {name} is {size / 2**20:,.0f} MiB, over the "
        f"{limit / 2**20:,.0f} MiB a Ray task brings back; it stays on ray node {node} at "
        f"{result.get('record_path')}"
    )


def _reachable(address: str) -> None:
    """A `host:port` (or `ray://host:port`) that accepts no connection is a one-line error."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # auto, local, or a form Ray itself resolves
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise LaunchError(
            f"no Ray cluster at {address} ({exc.strerror or exc}); start one "
            f"(ray start --head), set RAY_ADDRESS, or pass --ray-address local"
        ) from None


class RayJob:
    def __init__(self, executor: RayExecutor, ref: Any, spec: JobSpec) -> None:
        self.executor = executor
        self.ref = ref
        self.spec = spec
        self.where = "ray task"
        self.losses = 0  # times its task was lost with a node and submitted again

    def terminate(self) -> None:
        self.executor.ray.cancel(self.ref, force=False)

    def kill(self) -> None:
        self.executor.ray.cancel(self.ref, force=True)


class RayExecutor(Defaults):
    """Evals as Ray tasks on the cluster at `address` (else RAY_ADDRESS, else the one
    `ray start` left on this machine); `local` starts a cluster of this machine alone."""

    def __init__(self, state_dir: Path, address: str | None = None) -> None:
        import logging

        try:
            import ray
        except ImportError:
            raise LaunchError(
                "--executor ray needs the ray package: pip install 'oaievalset[ray]'"
            ) from None
        self.ray = ray
        self.records = state_dir / "records"
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        _reachable(where)  # ray.init would keep trying an address nobody answers at
        try:
            if where == "local":
                ray.init(logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(address=where, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LaunchError(
                f"no Ray cluster at {where} ({str(exc).splitlines()[0][:120]}); start one "
                f"(ray start --head), set RAY_ADDRESS, or pass --ray-address local"
            ) from None
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call,unused-ignore]
        self.cpus = max(1, int(resources.get("CPU", 1)))
        # A task lost with its node is run again elsewhere; a failing eval is not (its exit
        # code comes back, and --attempts decides).
        self._task = ray.remote(max_retries=3, retry_exceptions=False)(run_eval)
        self._lost: tuple[type[BaseException], ...] = tuple(
            getattr(ray.exceptions, name)
            for name in LOST_WITH_A_NODE
            if hasattr(ray.exceptions, name)
        )
        self._jobs: dict[Any, RayJob] = {}  # by object ref
        self._nodes: dict[str, str] = {}

    def default_jobs(self, evals: int) -> int:
        return max(1, min(self.cpus, evals))  # as many at once as the cluster has CPUs

    def start(self, spec: JobSpec) -> RayJob:
        job = RayJob(self, self._submit(spec), spec)
        self._jobs[job.ref] = job
        return job

    def _submit(self, spec: JobSpec) -> Any:
        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}
        env.update(spec.env or {})
        return self._task.options(scheduling_strategy="SPREAD").remote(
            list(spec.command), env, os.getcwd()
        )

    def wait(self, timeout: float | None) -> list[Ended]:
        if not self._jobs:
            return []
        ready, _ = self.ray.wait(list(self._jobs), num_returns=1, timeout=timeout)
        if ready:  # and any others that are done by now
            ready, _ = self.ray.wait(list(self._jobs), num_returns=len(self._jobs), timeout=0)
        ended = (self._ended(self._jobs.pop(ref)) for ref in ready)
        return [end for end in ended if end is not None]

    def _ended(self, job: RayJob) -> Ended | None:
        """How the job's task ended; None when it was lost with its node and is submitted
        again (Ray retries most such tasks itself, but not all: a task whose raylet died
        as it was handed over fails with LocalRayletDiedError)."""
        ray = self.ray
        try:
            result = ray.get(job.ref)
        except ray.exceptions.TaskCancelledError:
            return Ended(job, -15, reason="its Ray task was cancelled")
        except self._lost as exc:
            if job.losses >= LOSS_LIMIT:
                return Ended(job, 1, reason=f"its Ray task was lost {job.losses + 1} times "
                             f"({type(exc).__name__})")  # fmt: skip
            self._again(job, type(exc).__name__)
            return None
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            return Ended(job, 1, reason=f"its Ray task failed ({type(exc).__name__}: {first})")
        if result["code"] == -9 and job.losses < LOSS_LIMIT and self._node_died(result["node"]):
            # Killed as its node went down, before the task itself was lost with it.
            self._again(job, "its node died")
            return None
        with open(job.spec.log, "ab") as log:
            log.write(result["output"])
        record, warning = bring_back(result, job.spec.command, self.records)
        where = f"ray node {result['node'][:8]}"
        return Ended(job, result["code"], record=record, where=where, warning=warning)

    def _again(self, job: RayJob, why: str) -> None:
        """Submit a job lost with its node again, saying so in its log."""
        job.losses += 1
        with open(job.spec.log, "a", encoding="utf-8") as log:
            log.write(f"oaievalset: its Ray task was lost ({why}); submitted again\n")
        job.ref = self._submit(job.spec)
        self._jobs[job.ref] = job

    def _node_died(self, node: str) -> bool:
        """Whether the node is, or within NODE_DEATH_WAIT seconds is, known dead."""
        deadline = time.monotonic() + NODE_DEATH_WAIT
        while True:
            try:
                nodes = self.ray.nodes()  # type: ignore[no-untyped-call,unused-ignore]
            except Exception:  # a cluster that does not answer: not a reason to rerun
                return False
            if any(n.get("NodeID") == node and not n.get("Alive", True) for n in nodes):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def close(self) -> None:
        for ref in list(self._jobs):
            self.ray.cancel(ref, force=True)
        self._jobs.clear()
        self.ray.shutdown()
