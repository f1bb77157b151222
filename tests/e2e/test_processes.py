"""Real processes and real signals: Ctrl-C, SIGTERM, kill -9 and concurrent runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.fake import REG1, Fake, progress_file, run_cli
from helpers.processes import alive, recorded_keys, start, started_pids, wait_for

R1 = ["--registry_path", str(REG1)]


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-group", "sigint-to-parent", "sigterm-to-parent"],
)
def test_a_signal_stops_the_running_eval_and_exits_130(
    fake: Fake, isolated: Path, sig: signal.Signals, whole_group: bool
) -> None:
    env = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-a.dev.v0=30"}
    proc = start(["dummy", "zz-order", *R1], env, new_session=True)
    wait_for(lambda: bool(started_pids(fake, "zz-a.dev.v0")))
    child = started_pids(fake, "zz-a.dev.v0")[0]
    began = time.monotonic()
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - began < 5
    assert "Traceback" not in err and "interrupted" in err
    wait_for(lambda: not alive(child), timeout=5)
    path = progress_file(isolated, "dummy", "zz-order")
    assert recorded_keys(path) == ["zz-b.dev.v0"]
    state = (isolated / "dummy.zz-order.progress.d" / "state.jsonl").read_text()
    assert '"status": "interrupted"' in state


def test_kill_9_of_oaievalset_stops_its_child_and_resume_finishes(
    fake: Fake, isolated: Path
) -> None:
    env = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-a.dev.v0=30"}
    proc = start(["dummy", "zz-glob", *R1], env)
    wait_for(lambda: bool(started_pids(fake, "zz-a.dev.v0")))
    child = started_pids(fake, "zz-a.dev.v0")[0]
    proc.kill()
    proc.wait(timeout=10)
    # The child gets SIGTERM when its parent dies: no orphan keeps running.
    wait_for(lambda: not alive(child), timeout=5)
    path = progress_file(isolated, "dummy", "zz-glob")
    assert recorded_keys(path) == ["zz-b.dev.v0"]
    result = run_cli(["dummy", "zz-glob", *R1])
    assert result.returncode == 0, result.stderr
    assert recorded_keys(path) == ["zz-b.dev.v0", "zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]
    assert fake.keys().count("zz-b.dev.v0") == 1


def test_two_runs_of_one_set_share_the_work_and_lose_no_record(fake: Fake, isolated: Path) -> None:
    env = {"FAKE_OAIEVAL_SLEEP": "1"}
    first = start(["dummy", "zz-glob", *R1], env)
    time.sleep(0.3)
    second = start(["dummy", "zz-glob", *R1], env)
    _out1, err1 = first.communicate(timeout=60)
    _out2, err2 = second.communicate(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    keys = fake.keys()
    assert sorted(keys) == sorted(set(keys)), f"an eval ran twice: {keys}"
    assert len(keys) == 4
    recorded = recorded_keys(progress_file(isolated, "dummy", "zz-glob"))
    assert sorted(recorded) == ["zz-a.dev.v0", "zz-b.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]


def test_a_signal_with_several_evals_running_stops_them_all(fake: Fake, isolated: Path) -> None:
    env = {"FAKE_OAIEVAL_SLEEP": "30"}
    proc = start(["dummy", "zz-glob", *R1, "-j", "3"], env)
    wait_for(lambda: len(fake.started()) == 3)
    children = [int(e["pid"]) for e in fake.events() if e["event"] == "start"]
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - began < 5
    wait_for(lambda: not any(alive(child) for child in children), timeout=5)
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == []
    states = [
        json.loads(line)
        for line in (isolated / "dummy.zz-glob.progress.d" / "state.jsonl").read_text().splitlines()
    ]
    interrupted = {s["command"][2] for s in states if s["status"] == "interrupted"}
    assert len(interrupted) == 3


def test_the_installed_commands_run_test_basic_with_the_real_engine(isolated: Path) -> None:
    # No fake: the oaieval installed beside oaievalset runs the four evals offline.
    result = run_cli(["dummy", "test-basic"])
    assert result.returncode == 0, result.stderr
    logs = sorted((isolated / "dummy.test-basic.progress.d" / "logs").glob("*.log"))
    assert len(logs) == 4
    for log in logs:
        text = log.read_text()
        record = Path(text.split("Logged to ", 1)[1].split()[0])
        lines = record.read_text().splitlines()
        assert "spec" in json.loads(lines[0]) and "final_report" in json.loads(lines[-1])
    assert "accuracy=0" in result.stderr  # the summary read each final report


def test_the_installed_command_runs_a_set_end_to_end(fake: Fake, isolated: Path) -> None:
    result = run_cli(["dummy", "test-basic"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ">>> All done!"
    assert "Traceback" not in result.stderr


def test_an_eval_held_by_a_killed_process_is_reported_and_run_next_time(
    fake: Fake, isolated: Path
) -> None:
    # A takes zz-b (slow); B, started next, leaves zz-b to A and runs the rest. A is
    # killed: B reports zz-b as not completed, and the next run does only zz-b.
    env = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=30"}
    first = start(["dummy", "zz-glob", *R1], env)
    wait_for(lambda: bool(started_pids(fake, "zz-b.dev.v0")))
    second = start(["dummy", "zz-glob", *R1], {})
    wait_for(lambda: len(fake.started()) == 4)
    first.kill()
    first.communicate(timeout=10)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 1, err
    assert f"zz-b.dev.v0 --registry_path {REG1} is running in another oaievalset" in err
    assert "incomplete" in err
    path = progress_file(isolated, "dummy", "zz-glob")
    assert sorted(recorded_keys(path)) == ["zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]
    result = run_cli(["dummy", "zz-glob", *R1])
    assert result.returncode == 0, result.stderr
    assert fake.keys().count("zz-b.dev.v0") == 2 and len(fake.keys()) == 5


def test_the_signal_tests_hold_when_the_suite_runs_as_a_background_job() -> None:
    """`pytest &` from a shell starts with SIGINT ignored, which children inherit: the
    Ctrl-C tests run that way (in a pytest of their own) must still pass."""
    here = Path(__file__).resolve()
    root = here.parents[2]
    nested = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "os.execv(sys.executable, [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', "
        f"'{here}', '-k', 'ctrl-c-to-group or sigint-to-parent'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", nested], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
