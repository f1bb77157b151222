"""A real Slurm cluster of several nodes on this machine, for tests and benchmarks: Debian's
munged, slurmctld and one slurmd per node, each with its own ports and spool folder, all
under one folder and stopped by their pids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def available() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    missing = [
        d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()
    ]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing); .ci/run installs it"
    if os.geteuid() != 0:
        return "a Slurm cluster needs root here"
    return None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def alive(pid: int) -> bool:
    """Running, and not a zombie (kill -0 succeeds on those)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        return False
    return False


class Cluster:
    def __init__(self, folder: Path, nodes: int = 2) -> None:
        self.folder = folder
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.conf = folder / "slurm.conf"
        self.munge_socket = folder / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """What the Slurm commands need to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> Cluster:
        munge = self.folder / "munge"
        munge.mkdir(parents=True, mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for sub in ("state", *(f"spool-{n}" for n in self.nodes)):
            (self.folder / sub).mkdir()
        self._write_conf()
        self._spawn(
            "munged",
            [_exe("munged"), "-F", "-f", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--log-file={munge / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
             f"--seed-file={munge / 'munged.seed'}"],
        )  # fmt: skip
        self._wait(lambda: self.munge_socket.exists(), "munged")
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
        for node in self.nodes:
            self._spawn(f"slurmd-{node}", [_exe("slurmd"), "-D", "-N", node, "-f", str(self.conf)])
        self._wait(self._all_idle, "the nodes to be idle", timeout=60)
        return self

    def _write_conf(self) -> None:
        f = self.folder
        lines = [
            "ClusterName=oaievalsettest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={f / 'state'}",
            f"SlurmdSpoolDir={f}/spool-%n",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}",
            f"SlurmdPidFile={f}/slurmd-%n.pid",
            f"SlurmctldLogFile={f / 'slurmctld.log'}",
            f"SlurmdLogFile={f}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SchedulerParameters=batch_sched_delay=0",
            "ReturnToService=2",
            "SlurmdTimeout=10",
            "JobRequeue=1",
            "KillWait=2",
            "MinJobAge=300",
            "MpiDefault=none",
        ]
        for node in self.nodes:
            lines.append(
                f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={_port()} "
                f"CPUs=1 State=UNKNOWN"
            )
        lines.append(f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES "
                     f"MaxTime=INFINITE State=UP")  # fmt: skip
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - the daemon's for its life
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        log.close()

    def _wait(self, ready: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    out = (self.folder / f"{name}.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited ({proc.returncode}): {out}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), capture_output=True, text=True, env={**os.environ, **self.env}, timeout=30
        )

    def _all_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-N", "-o", "%N %t")
        states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
        return done.returncode == 0 and all(
            states.get(n, "").startswith("idle") for n in self.nodes
        )

    def queue(self) -> list[str]:
        """The ids of the jobs in the queue."""
        done = self.run("squeue", "-h", "-o", "%i")
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def crash(self, node: str) -> None:
        """A node dies: its slurmd, and the job steps of the jobs it runs with all their
        processes, are killed."""
        jobs = self.run("squeue", "-h", "-w", node, "-o", "%i").stdout.split()
        proc = self.procs[f"slurmd-{node}"]
        proc.kill()
        proc.wait()
        for pid in _steps_of(jobs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, node: str) -> None:
        self._spawn(f"slurmd-{node}", [_exe("slurmd"), "-D", "-N", node, "-f", str(self.conf)])

    def stop(self) -> None:
        """Cancel every job, then stop the daemons by their pids."""
        steps: list[int] = []
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            steps = _steps_of(self.queue())
            self.run("scancel", "--full", "-u", "root")
            deadline = time.monotonic() + 15
            while self.queue() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in [n for n in self.procs if n.startswith("slurmd-")] + ["slurmctld", "munged"]:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pid in steps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _steps_of(jobs: list[str]) -> list[int]:
    """The slurmstepd processes of the given jobs (`slurmstepd: [ID.batch]`), and every
    process under them."""
    if not jobs:
        return []
    marks = tuple(f"[{job}." for job in jobs)
    children: dict[int, list[int]] = {}
    steps = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        if cmdline.startswith("slurmstepd") and any(mark in cmdline for mark in marks):
            steps.append(int(entry))
    found, queue = list(steps), list(steps)
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
