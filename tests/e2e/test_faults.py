"""The fault suite: kill -9 at random moments, truncated progress files, broken registries."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.fake import REG1, Fake, progress_file, run_cli
from helpers.processes import alive, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oaievalset.cli import main

R1 = ["--registry_path", str(REG1)]
GLOB = ["zz-b.dev.v0", "zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]


def recorded(path: Path) -> list[str]:
    """The recorded eval keys; fails the test if the file does not parse."""
    if not path.exists():
        return []
    return [json.loads(line)[2] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing(
    fake: Fake, isolated: Path, jobs: str
) -> None:
    rng = random.Random(20260101 + int(jobs))
    path = progress_file(isolated, "dummy", "zz-glob")
    env = {"FAKE_OAIEVAL_SLEEP": "0.15"}
    done_before_kill: set[str] = set()
    for _ in range(12):
        before = len(fake.events())
        proc = start(["dummy", "zz-glob", *R1, "-j", jobs], env)
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()
        proc.communicate(timeout=20)
        # Nothing recorded earlier ran again in this attempt.
        new = fake.events()[before:]
        again = {e["argv"][1] for e in new if e["event"] == "start"} & done_before_kill
        assert not again, f"recorded evals ran again: {again}"
        # No child outlives its killed parent.
        pids = [e["pid"] for e in new if e["event"] == "start"]
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(p) for p in pids), "an oaieval outlived its oaievalset"
        keys = recorded(path)  # always parses
        assert len(keys) == len(set(keys))
        done_before_kill = set(keys)
        if done_before_kill == set(GLOB):
            break
    result = run_cli(["dummy", "zz-glob", *R1, "-j", jobs])
    assert result.returncode == 0, result.stderr
    assert sorted(recorded(path)) == sorted(GLOB)
    # A second resume runs nothing at all.
    starts = len(fake.started())
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    assert len(fake.started()) == starts


def test_a_progress_file_cut_at_any_byte_is_resumed_right_or_refused(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps(["oaieval", "dummy", key, "--registry_path", str(REG1)]) + "\n"
        for key in GLOB[:3]
    ]
    whole = "".join(lines)
    path = progress_file(isolated, "dummy", "zz-glob")
    path.parent.mkdir(parents=True, exist_ok=True)
    for cut in range(len(whole) + 1):
        text = whole[:cut]
        path.write_text(text)
        code = main(["dummy", "zz-glob", *R1, "--plan", "--json"])
        out, err = capsys.readouterr()
        assert path.read_text() == text, "the file was changed"
        complete = [
            json.loads(line)[2] for line in text.splitlines() if line.endswith("]")
        ]  # a line cut after its closing bracket is still whole
        if code == 0:
            plan = json.loads(out)
            done = [c["eval"] for c in plan["commands"] if c["status"] == "done"]
            assert sorted(done) == sorted(complete), cut
        else:
            assert code == 2, cut
            assert len(err.strip().splitlines()) == 1 and f"{path}:" in err, err
            assert "corrupt progress line" in err


def test_a_cut_progress_file_is_refused_by_a_real_resume(fake: Fake, isolated: Path) -> None:
    path = progress_file(isolated, "dummy", "zz-glob")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(["oaieval", "dummy", "zz-b.dev.v0"]) + "\n" + '["oaieval", "dum'
    path.write_text(text)
    result = run_cli(["dummy", "zz-glob", *R1])
    assert result.returncode == 2
    assert f"{path}:2: corrupt progress line" in result.stderr
    assert path.read_text() == text and fake.started() == []


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging, if the block takes longer."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


NAMES = st.sampled_from(["a", "b", "c", "a.dev", "b.dev.v0", "s", "t", "*", "a*", "[x]"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), NAMES, st.text(max_size=5))
# Typed apart: an older hypothesis (the newest for Python 3.9) cannot infer it inline.
CLASS_SPEC: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"class": st.one_of(st.just("m:C"), SCALARS)},
    optional={"args": st.one_of(st.dictionaries(NAMES, SCALARS, max_size=2), SCALARS)},
)
EVAL_SPEC = st.one_of(
    SCALARS,
    st.fixed_dictionaries({"id": st.one_of(NAMES, SCALARS)}),
    CLASS_SPEC,
    st.lists(SCALARS, max_size=3),
)
SET_SPEC = st.one_of(
    SCALARS,
    st.fixed_dictionaries({"id": st.one_of(NAMES, SCALARS)}),
    st.fixed_dictionaries(
        {"evals": st.one_of(st.lists(st.one_of(NAMES, SCALARS), max_size=4), SCALARS)}
    ),
    st.dictionaries(NAMES, SCALARS, max_size=2),
)
RAW = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["a: [", "a: {b", "- x\n- y", "a: b: c", "\t- x", "a: &x\nb: *y", "'a"]),
)


def _file(spec: Any, raw: Any) -> st.SearchStrategy[str]:
    return st.one_of(st.dictionaries(NAMES, spec, max_size=5).map(yaml.safe_dump), raw)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    evals=st.lists(_file(EVAL_SPEC, RAW), min_size=0, max_size=3),
    sets=st.lists(_file(SET_SPEC, RAW), min_size=0, max_size=2),
    target=NAMES,
)
def test_broken_registries_give_one_line_never_a_traceback_or_a_hang(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    evals: list[str],
    sets: list[str],
    target: str,
) -> None:
    root = tmp_path_factory.mktemp("reg")
    (root / "evals").mkdir()
    (root / "eval_sets").mkdir()
    for i, text in enumerate(evals):
        (root / "evals" / f"e{i}.yaml").write_text(text)
    for i, text in enumerate(sets):
        (root / "eval_sets" / f"s{i}.yaml").write_text(text)
    with deadline(20):
        code = main(["dummy", target, "--registry_path", str(root), "--plan"])
    out, err = capsys.readouterr()
    assert code in (0, 2)
    errors = [line for line in err.splitlines() if "error:" in line]
    if code == 2:
        assert len(errors) == 1 and errors[0].startswith("oaievalset: error: ")
    else:
        assert not errors and out.startswith("Plan for")


def test_an_unwritable_progress_folder_is_a_clear_error(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OAIEVALSET_PROGRESS_DIR", str(blocker / "sub"))
    assert main(["dummy", "zz-chain", *R1]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oaievalset: error: cannot create")
    assert fake.started() == []


def test_a_held_lock_times_out_with_a_clear_error(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = isolated / "dummy.zz-chain.progress.d"
    state_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            str(state_dir / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("oaievalset.state.progress.LOCK_TIMEOUT", 0.5)
        assert main(["dummy", "zz-chain", *R1]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"could not lock {state_dir / 'lock'}" in err
    assert not progress_file(isolated, "dummy", "zz-chain").exists()
    assert fake.started() == []


def test_a_record_waits_for_a_filelock_holder_and_then_lands(tmp_path: Path) -> None:
    """The lock is taken with a bare flock when free; a holder that took it through filelock
    (another tool, or our own slow path) still excludes the record until it lets go."""
    from oaievalset.state.progress import ProgressFile

    progress = ProgressFile(tmp_path / "dummy.set.progress.txt")
    progress.prepare()
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib, filelock\n"
            "with filelock.FileLock(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(0.5)\n"
            "    pathlib.Path(sys.argv[2]).write_text('')\n",
            str(progress.state_dir / "lock"),
            str(released),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        progress.record(["oaieval", "dummy", "a.dev.v0"])
        # The record could only start once the holder had finished its critical section.
        assert released.exists()
    finally:
        holder.kill()
        holder.wait()
    assert recorded(progress.path) == ["a.dev.v0"]


# -- an error mid-run ends the run through its ending -----------------------------------------


def test_a_lock_that_times_out_mid_run_fails_that_eval_and_ends_the_run(
    fake: Fake,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Another process takes the progress lock while the first eval runs, and keeps it: that
    # eval cannot be recorded.
    state = isolated / "dummy.zz-order.progress.d"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
            "f = open(sys.argv[2], 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(60)\n",
            str(fake.log),
            str(state / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setattr("oaievalset.state.progress.LOCK_TIMEOUT", 0.5)
    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP", "1")
    try:
        assert main(["dummy", "zz-order", *R1]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("oaievalset: error:")]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    assert errors[0].startswith(
        f"oaievalset: error: the run stopped midway: could not lock {state / 'lock'} within 0 s"
    )
    assert "Traceback" not in err
    ran, *others = fake.keys()
    assert others == [], "nothing started after the error"
    rows = {line.split()[0]: line.split()[1] for line in err.splitlines() if line.startswith("zz-")}
    assert rows == {
        "zz-a.dev.v0": "failed" if ran == "zz-a.dev.v0" else "not",  # not run
        "zz-b.dev.v0": "failed" if ran == "zz-b.dev.v0" else "not",
    }
    report = json.loads((state / "report.json").read_text())
    assert report["state"] == "ended" and report["exit_code"] == 1
    first, second = report["evals"]
    assert first["eval"] == ran and first["status"] == "failed"
    assert first["reason"].startswith("could not lock")
    assert second["status"] == "not run"
    assert not progress_file(isolated, "dummy", "zz-order").exists()
