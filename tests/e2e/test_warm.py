"""The warm engine: the evals of our oaieval forked from one engine started for the run, with
real processes, a loopback server spoken to through the real `openai` package, and real
signals. Everything a fresh process gives must hold: the records, the logs, the environment,
Ctrl-C, kill -9, timeouts; and a lost engine costs nothing but the eval it was running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import progress_file, run_cli
from helpers.processes import alive, recorded_keys, start, wait_for

EVALS = ["w1.dev.v0", "w2.dev.v0", "w3.dev.v0"]
SAMPLES = 4


@pytest.fixture
def registry(tmp_path: Path) -> list[str]:
    """Three Match evals of SAMPLES samples, in set `warm`."""
    root = tmp_path / "registry"
    for folder in ("evals", "eval_sets", "data/w"):
        (root / folder).mkdir(parents=True)
    entries = ""
    for name in EVALS:
        base = name.split(".")[0]
        entries += (
            f"{name}:\n  class: evals.elsuite.basic.match:Match\n"
            f"  args:\n    samples_jsonl: w/{base}.jsonl\n"
        )
        with open(root / "data" / "w" / f"{base}.jsonl", "w") as f:
            for i in range(SAMPLES):
                ideal = "yes" if i % 2 else "no"
                sample = {"input": [{"role": "user", "content": f"{base} {i}"}], "ideal": ideal}
                f.write(json.dumps(sample) + "\n")
    (root / "evals" / "w.yaml").write_text(entries)
    (root / "eval_sets" / "w.yaml").write_text('warm:\n  evals: ["w*"]\n')
    return ["--registry_path", str(root)]


def env_for(server: ChatServer, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # our oaieval
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": server.base_url,
        **extra,
    }


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def collect_children(pid: int, found: set[int]) -> None:
    """Add the children of `pid` to `found` until it has ended."""
    while alive(pid):
        found.update(children(pid))
        time.sleep(0.005)


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def is_engine(pid: int) -> bool:
    """Whether the process was started as a warm engine (by its environment)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(v.startswith(b"OAIEVAL_WARM_SOCKET=") for v in f.read().split(b"\0"))
    except OSError:
        return False


def engine_of(driver: int) -> int:
    """The driver's warm engine, once it has forked a child (the spare for the first eval)."""
    found: list[int] = []

    def forked() -> bool:
        found[:] = [c for c in children(driver) if is_engine(c) and children(c)]
        return bool(found)

    wait_for(forked)
    return found[0]


def events(record: Path) -> list[dict[str, Any]]:
    """A record's per-sample events and final report, without what differs between runs."""
    kept = []
    for line in record.read_text().splitlines():
        event = json.loads(line)
        if "final_report" in event:
            kept.append({"final_report": event["final_report"]})
        elif "type" in event:
            kept.append({k: event[k] for k in ("sample_id", "type", "data")})
    return sorted(kept, key=json.dumps)


def records(progress: Path) -> dict[str, Path]:
    report = json.loads((progress / "m.warm.progress.d" / "report.json").read_text())
    return {e["eval"]: Path(e["record"]) for e in report["evals"]}


def test_forked_evals_record_what_fresh_processes_record(
    isolated: Path, registry: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.2, models=("m",)).start()
    try:
        proc = start(["m", "warm", *registry], env_for(server))
        engine = engine_of(proc.pid)  # an eval runs as the engine's child, not the driver's
        assert not set(children(engine)) & set(children(proc.pid))
        forked: set[int] = set()  # every child of the engine, the spare left at the end too
        watching = threading.Thread(target=collect_children, args=(engine, forked), daemon=True)
        watching.start()
        _out, err = proc.communicate(timeout=60)
        watching.join(timeout=10)
        assert proc.returncode == 0, err
        warm = records(isolated)
        fresh_run = run_cli(["m", "warm", *registry, "--no-resume"],
                            env_for(server, OAIEVALSET_WARM="0"))  # fmt: skip
        assert fresh_run.returncode == 0, fresh_run.stderr
        fresh = records(isolated)
    finally:
        server.stop()
    assert sorted(warm) == sorted(fresh) == EVALS
    for name in EVALS:
        assert warm[name] != fresh[name]
        assert events(warm[name]) == events(fresh[name]), name
    # The logs as a fresh process writes them: the final report, after the answers.
    table = err.split("\n\n")[-1]
    assert all(f"{name}  done" in table for name in EVALS), table
    assert not alive(engine), "the engine goes with the run"
    assert len(forked) > len(EVALS), "a spare is forked ahead of each eval"
    assert not any(alive(pid) for pid in forked), "and so do its children, the spare among them"


def test_a_lost_spare_costs_nothing(isolated: Path, registry: list[str]) -> None:
    # The engine keeps a child forked ahead for the next eval. Killed while the first eval
    # waits for its first answer, the next eval is forked when it comes, from the engine.
    slow = {0, SAMPLES}  # the first request of the first two evals
    server = ChatServer(
        answer_fn=lambda r: "yes", latency_fn=lambda n: 1.0 if n in slow else 0, models=("m",)
    ).start()
    try:
        proc = start(["m", "warm", *registry], env_for(server))
        engine = engine_of(proc.pid)
        wait_for(lambda: len(server.requests) == 1 and len(children(engine)) == 2)
        (spare,) = [pid for pid in children(engine) if threads(pid) == 1]  # the eval has more
        os.kill(spare, signal.SIGKILL)
        wait_for(lambda: len(server.requests) == SAMPLES + 1)
        wait_for(lambda: len(children(engine)) == 2)  # the second eval, and a new spare
        assert spare not in children(engine)
        _out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, err
    assert "warm engine" not in err
    assert sorted(recorded_keys(progress_file(isolated, "m", "warm"))) == EVALS
    assert len(server.requests) == 3 * SAMPLES


def running_evals(engine: int) -> list[int]:
    """The engine's children that run an eval: the spare waits with one thread, an eval
    has its requests' threads too."""
    found = []
    for pid in children(engine):
        with contextlib.suppress(OSError):  # ended since
            if threads(pid) > 1:
                found.append(pid)
    return found


def test_evals_at_once_are_each_forked_from_the_engine(isolated: Path, registry: list[str]) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.5, models=("m",)).start()
    try:
        proc = start(["m", "warm", *registry, "-j", "3"], env_for(server))
        engine = engine_of(proc.pid)
        wait_for(lambda: len(running_evals(engine)) == 3)  # all three, side by side
        _out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, err
    assert sorted(recorded_keys(progress_file(isolated, "m", "warm"))) == EVALS
    assert len(server.requests) == 3 * SAMPLES
    for name, record in records(isolated).items():
        (report,) = [e["final_report"] for e in events(record) if "final_report" in e]
        assert report["accuracy"] == 0.5, name  # "yes" to each, right for half


def test_ctrl_c_stops_a_forked_eval_and_leaves_no_process(
    isolated: Path, registry: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=30, models=("m",)).start()
    try:
        proc = start(["m", "warm", *registry], env_for(server), new_session=True)
        engine = engine_of(proc.pid)
        wait_for(lambda: bool(server.requests))
        left = [proc.pid, *descendants(proc.pid)]
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does
        _out, err = proc.communicate(timeout=20)
        took = time.monotonic() - began
    finally:
        server.stop()
    assert proc.returncode == 130, err
    assert took < 5 and "interrupted" in err and "Traceback" not in err
    assert engine in left
    wait_for(lambda: not any(alive(pid) for pid in left), timeout=5)
    assert recorded_keys(progress_file(isolated, "m", "warm")) == []


def test_kill_9_of_oaievalset_leaves_no_forked_eval_running(
    isolated: Path, registry: list[str]
) -> None:
    slow = ChatServer(answer_fn=lambda r: "yes", latency=30, models=("m",)).start()
    try:
        proc = start(["m", "warm", *registry], env_for(slow))
        engine = engine_of(proc.pid)
        wait_for(lambda: bool(slow.requests))
        evals = children(engine)
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in [engine, *evals]), timeout=8)
    finally:
        slow.stop()
    server = ChatServer(answer_fn=lambda r: "yes", models=("m",)).start()
    try:
        again = run_cli(["m", "warm", *registry], env_for(server))
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr
    assert sorted(recorded_keys(progress_file(isolated, "m", "warm"))) == EVALS


def test_a_forked_eval_past_its_timeout_is_stopped(isolated: Path, registry: list[str]) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=30, models=("m",)).start()
    try:
        began = time.monotonic()
        result = run_cli(["m", "warm", *registry, "--timeout", "2"], env_for(server))
        took = time.monotonic() - began
    finally:
        server.stop()
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("timed out") >= 3 and took < 30, result.stderr
    assert recorded_keys(progress_file(isolated, "m", "warm")) == []


def test_a_lost_engine_fails_its_eval_and_the_others_start_fresh(
    isolated: Path, registry: list[str]
) -> None:
    # The first request hangs (an eval sends no other until its first is answered); every
    # later one is answered at once. The eval the engine was running fails with it, and its
    # retry runs as a fresh process.
    server = ChatServer(
        answer_fn=lambda r: "yes", latency_fn=lambda n: 30 if n == 0 else 0, models=("m",)
    ).start()
    try:
        proc = start(["m", "warm", *registry, "--attempts", "2"], env_for(server))
        engine = engine_of(proc.pid)
        wait_for(lambda: bool(server.requests))
        forked = children(engine)  # the eval, and the spare forked for the next one
        os.kill(engine, signal.SIGKILL)
        _out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, err
    wait_for(lambda: not any(alive(pid) for pid in forked), timeout=5)
    assert "the warm engine that started it ended" in err
    assert sorted(recorded_keys(progress_file(isolated, "m", "warm"))) == EVALS
    assert len(server.requests) == 1 + 3 * SAMPLES, "the lost eval's one request, then all"


def test_another_oaieval_on_path_is_run_as_it_is(tmp_path: Path) -> None:
    from oaievalset.executors.local import SubprocessExecutor

    theirs = tmp_path / "oaieval"
    theirs.write_text("#!/bin/sh\nexit 0\n")
    theirs.chmod(0o755)
    executor = SubprocessExecutor()
    try:
        assert executor._engine(str(theirs), "m") is None
        ours = Path(sys.executable).parent / "oaieval"
        assert executor._engine(str(ours), "m") is not None
    finally:
        executor.close()
