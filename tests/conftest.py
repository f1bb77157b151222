"""Shared fixtures: an isolated progress folder and home, and a fake `oaieval` on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
REG1 = DATA / "reg1"
REG2 = DATA / "reg2"

# A stand-in for oaieval: logs when it starts and ends, prints to both streams, sleeps
# and exits as the environment says. It is a real executable found on PATH.
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
    if code == 0:
        print("[2026-01-01 00:00:00,000] [oaieval.py:1] Final report:", file=sys.stderr)
        print("[2026-01-01 00:00:00,000] [oaieval.py:2] accuracy: 0.5", file=sys.stderr)
    note("end")
    sys.exit(code)
    """
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Progress files, records, caches, ~/.evals and colour settings of the test's own: every
    file a test makes is under its temporary folder."""
    progress = tmp_path / "progress"
    monkeypatch.setenv("OAIEVALSET_PROGRESS_DIR", str(progress))
    monkeypatch.setenv("OAIEVAL_RECORD_DIR", str(tmp_path / "evallogs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "NO_COLOR",
        "FORCE_COLOR",
        "FAKE_OAIEVAL_EXIT",
        "FAKE_OAIEVAL_SLEEP",
        "FAKE_OAIEVAL_SLEEP_FOR",
        "FAKE_OAIEVAL_FAIL_TIMES",
        "FAKE_OAIEVAL_LOG",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "EVALS_THREADS",
        "OAIEVAL_RETRY_BUDGET",
        "OAIEVAL_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(var, raising=False)
    return progress


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where downloads of the session go (the openai/evals wheel, the original's venv): a
    temporary folder, or OAIEVALSET_TEST_CACHE to keep them between runs."""
    kept = os.environ.get("OAIEVALSET_TEST_CACHE")
    return Path(kept) if kept else tmp_path_factory.mktemp("downloads")


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


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "oaieval"
    script.write_text(FAKE_OAIEVAL.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "fake-oaieval.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OAIEVAL_LOG", str(log))
    return Fake(bin=bin_dir, log=log)


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


@pytest.fixture
def reg1() -> Iterator[str]:
    yield str(REG1)
