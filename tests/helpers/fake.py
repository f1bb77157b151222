"""A fake `oaieval` on PATH that logs its starts and ends, the test registries, and the
installed `oaievalset` run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"
REG1 = DATA / "reg1"
REG2 = DATA / "reg2"

# A stand-in for oaieval: logs when it starts and ends, prints to both streams, sleeps
# and exits as the environment says, and writes a record of a given size. It is a real
# executable found on PATH.
FAKE_OAIEVAL = textwrap.dedent(
    """\
    #!{python}
    import json, os, signal, sys, time
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    argv = sys.argv[1:]
    key = argv[1] if len(argv) > 1 else ""
    log = os.environ.get("FAKE_OAIEVAL_LOG")
    def note(event):
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({{"event": event, "argv": argv, "pid": os.getpid(),
                    "job": os.environ.get("SLURM_JOB_ID"),
                    "node": os.environ.get("SLURMD_NODENAME")}}) + "\\n")
    earlier = 0
    if log and os.path.exists(log):
        with open(log) as f:
            events = [json.loads(line) for line in f if line.strip()]
        earlier = sum(1 for e in events if e["event"] == "start" and e["argv"][1:2] == [key])
    note("start")
    print("stdout of " + key, flush=True)
    print("stderr of " + key, file=sys.stderr, flush=True)
    def table(name):
        pairs = os.environ.get(name, "").split(",")
        return dict(p.rsplit("=", 1) for p in pairs if "=" in p)
    sleeps = table("FAKE_OAIEVAL_SLEEP_FOR")
    time.sleep(float(sleeps.get(key, os.environ.get("FAKE_OAIEVAL_SLEEP", "0"))))
    codes = table("FAKE_OAIEVAL_EXIT")
    code = int(codes.get(key, "0"))
    if earlier < int(table("FAKE_OAIEVAL_FAIL_TIMES").get(key, "0")):
        code = 1
    size = table("FAKE_OAIEVAL_RECORD_FOR").get(key)
    if code == 0 and size is not None:  # a record of that many bytes (sparse), and its line
        record = os.path.join(os.environ.get("FAKE_OAIEVAL_RECORD_DIR", "."), key + ".jsonl")
        if size != "elsewhere":  # else only its line, as if written on another machine
            with open(record, "wb") as f:
                f.truncate(int(size))
        print("Final report: {{'accuracy': 0.5}}. Logged to " + record, file=sys.stderr)
    if code == 0:
        print("[2026-01-01 00:00:00,000] [oaieval.py:1] Final report:", file=sys.stderr)
        print("[2026-01-01 00:00:00,000] [oaieval.py:2] accuracy: 0.5", file=sys.stderr)
    note("end")
    sys.exit(code)
    """
)


@dataclass
class Fake:
    """The fake oaieval's folder (first on PATH) and its log of starts and ends."""

    bin: Path
    log: Path

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def started(self) -> list[list[str]]:
        return [e["argv"] for e in self.events() if e["event"] == "start"]

    def keys(self) -> list[str]:
        return [argv[1] for argv in self.started()]


def install_fake(folder: Path) -> Path:
    """Write the fake `oaieval` into `folder` (made if need be); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "oaieval"
    script.write_text(FAKE_OAIEVAL.format(python=sys.executable))
    script.chmod(0o755)
    return script


def progress_file(progress_dir: Path, model: str, eval_set: str) -> Path:
    return progress_dir / f"{model}.{eval_set}.progress.txt"


def oaievalset_exe() -> str:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "oaievalset"
    return str(exe) if exe.exists() else "oaievalset"


def run_cli(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `oaievalset` in a real process."""
    return subprocess.run(
        [oaievalset_exe(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
