"""What a new user hit at the edges, each with real processes: concurrent --no-resume runs,
the closing lines after an interrupt, the live line, colours per stream, retries cut short,
a closed stdout, and the report of each run."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.fake import DATA, REG1, Fake, oaievalset_exe, progress_file, run_cli
from helpers.processes import drain, recorded_keys, run_on_pty, start, started_pids, wait_for

from oaievalset.present.view import status_line

R1 = ["--registry_path", str(REG1)]
R3 = ["--registry_path", str(DATA / "reg3")]
EIGHT = [f"ee-{i}.dev.v0" for i in range(1, 9)]


LIVE = re.compile(r"\[(\d+) done, (\d+) failed, (\d+) running, (\d+) pending\]")


# -- 1. concurrent --no-resume -------------------------------------------------------------


@pytest.mark.parametrize("earlier", ["no file", "an older record"])
@pytest.mark.parametrize("round", range(3))
def test_a_no_resume_run_keeps_what_a_concurrent_resume_records(
    fake: Fake, isolated: Path, earlier: str, round: int
) -> None:
    path = progress_file(isolated, "dummy", "ee-eight")
    if earlier == "an older record":
        # What an earlier run with other arguments left: the fresh record drops it.
        path.parent.mkdir(parents=True, exist_ok=True)
        old = [["oaieval", "dummy", key, "--seed", "1", *R3] for key in EIGHT[:3]]
        path.write_text("".join(json.dumps(c) + "\n" for c in old))
    env = {"FAKE_OAIEVAL_SLEEP_FOR": f"{EIGHT[0]}=2", "FAKE_OAIEVAL_SLEEP": "0.05"}
    fresh = start(["dummy", "ee-eight", *R3, "--no-resume"], env)
    wait_for(lambda: bool(started_pids(fake, EIGHT[0])))
    resume = start(["dummy", "ee-eight", *R3], env)
    _, err_fresh = fresh.communicate(timeout=60)
    _, err_resume = resume.communicate(timeout=60)
    assert (fresh.returncode, resume.returncode) == (0, 0), err_fresh + err_resume
    assert sorted(fake.keys()) == EIGHT, "each eval runs once in all"
    assert sorted(recorded_keys(path)) == EIGHT, "every record is kept, the older one dropped"
    assert all("--seed" not in line for line in path.read_text().splitlines())


# -- 2. what a resume will do, after an interrupt ------------------------------------------


def interrupt_when_started(fake: Fake, args: list[str], key: str, env: dict[str, str]) -> str:
    before = len(started_pids(fake, key))
    proc = start(args, env)
    wait_for(lambda: len(started_pids(fake, key)) > before)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    return err


def test_an_interrupted_no_resume_run_that_recorded_nothing_says_the_old_record_is_kept(
    fake: Fake, isolated: Path
) -> None:
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    slow = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=30"}
    err = interrupt_when_started(
        fake, ["dummy", "zz-glob", *R1, "--no-resume"], "zz-b.dev.v0", slow
    )
    assert "Run the same command again" not in err
    assert "recorded nothing" in err and "4 of 4 evals" in err and "runs the other 0" in err
    # The line told the truth: a plain resume runs nothing.
    before = len(fake.started())
    again = run_cli(["dummy", "zz-glob", *R1])
    assert again.returncode == 0 and len(fake.started()) == before


def test_an_interrupted_no_resume_run_says_how_to_finish_without_starting_over(
    fake: Fake, isolated: Path
) -> None:
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    slow = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-a.dev.v0=30"}
    err = interrupt_when_started(
        fake, ["dummy", "zz-glob", *R1, "--no-resume"], "zz-a.dev.v0", slow
    )
    assert "1 of 4 evals are recorded" in err and "without --no-resume" in err
    again = run_cli(["dummy", "zz-glob", *R1])
    assert again.returncode == 0
    assert fake.keys()[-3:] == ["zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]


def test_an_interrupted_resume_says_how_many_are_left(fake: Fake, isolated: Path) -> None:
    slow = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-a.dev.v0=30"}
    err = interrupt_when_started(fake, ["dummy", "zz-glob", *R1], "zz-a.dev.v0", slow)
    assert "1 of 4 evals are recorded; run the same command again to run the other 3." in err


# -- 3. the live line ------------------------------------------------------------------------


def test_the_live_line_accounts_for_every_eval_at_every_redraw(fake: Fake) -> None:
    code, screen, err = run_on_pty(
        ["dummy", "zz-glob", *R1, "-j", "2"],
        {"NO_COLOR": "1", "FAKE_OAIEVAL_SLEEP": "0.3", "FAKE_OAIEVAL_EXIT": "zz-c.dev.v0=1"},
    )
    assert code == 1, err
    counts = [tuple(map(int, m)) for m in LIVE.findall(screen)]
    assert counts, screen
    assert all(sum(c) == 4 for c in counts), counts
    assert max(c[2] for c in counts) == 2, "both slots show as running"
    assert counts[-1] == (3, 1, 0, 0)


def test_the_live_line_fits_a_narrow_terminal(fake: Fake) -> None:
    code, screen, err = run_on_pty(
        ["dummy", "zz-glob", *R1, "-j", "2"], {"NO_COLOR": "1", "FAKE_OAIEVAL_SLEEP": "0.2"}, 30
    )
    assert code == 0, err
    # Each drawing of the line is cleared (CR, erase line) before anything else is written.
    lines = re.findall(r"(?:^|\n)(\[[^\r\n]*)\r\x1b\[K", screen)
    assert lines and all(len(line) < 30 for line in lines), lines


@pytest.mark.parametrize("width", [10, 20, 30, 45, 80, 200])
def test_the_status_line_is_always_narrower_than_the_terminal(width: int) -> None:
    line = status_line(120, 3, 8, 1000, width)
    assert len(line) < width
    assert status_line(1, 0, 1, 2, 200) == "[1 done, 0 failed, 1 running, 2 pending]"


# -- 4. durations ---------------------------------------------------------------------------


def test_a_duration_is_never_negative_when_another_run_started_the_eval_again(
    fake: Fake, isolated: Path
) -> None:
    assert run_cli(["dummy", "zz-order", *R1]).returncode == 0
    # A --no-resume run that dies (kill -9) while running zz-b: the journal says it started
    # after the recorded run had ended.
    proc = start(
        ["dummy", "zz-order", *R1, "--no-resume"], {"FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=30"}
    )
    wait_for(lambda: len(started_pids(fake, "zz-b.dev.v0")) == 2)
    proc.kill()
    proc.wait(timeout=10)
    result = run_cli(["dummy", "zz-order", *R1])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stderr.splitlines() if line.startswith("zz-")]
    assert rows and all(not row[3].startswith("-") or row[3] == "-" for row in rows), rows
    report = json.loads((isolated / "dummy.zz-order.progress.d" / "report.json").read_text())
    assert all(e["duration"] is None or e["duration"] >= 0 for e in report["evals"])


# -- 5. colour per stream -------------------------------------------------------------------


def test_stderr_decides_its_colour_for_itself(fake: Fake) -> None:
    # stdout on a terminal, stderr a pipe: colour on stdout only.
    code, screen, err = run_on_pty(
        ["dummy", "zz-order", *R1, "--no-exit-on-error"], {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=2"}
    )
    assert code == 1
    assert "\x1b[1;32m>>> Running command" in screen
    assert "\x1b[" not in err and ">>> Failed: oaieval dummy zz-a.dev.v0" in err
    # stdout a pipe, stderr a terminal: colour on stderr only.
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [oaievalset_exe(), "dummy", "zz-order", *R1, "--no-resume", "--no-exit-on-error"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=2"},
    )
    os.close(follower)
    screen = drain(leader)
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=30)
    os.close(leader)
    assert "\x1b[" not in out and ">>> Running command" in out
    assert "\x1b[1;31m>>> Failed: oaieval dummy zz-a.dev.v0" in screen


# -- 6. an interrupt during the retry backoff -----------------------------------------------


def test_an_eval_interrupted_while_waiting_for_its_retry_is_shown_interrupted(
    fake: Fake, isolated: Path
) -> None:
    proc = start(
        ["dummy", "zz-order", *R1, "--attempts", "3"], {"FAKE_OAIEVAL_EXIT": "zz-b.dev.v0=1"}
    )
    assert proc.stderr is not None
    seen = ""
    while "attempt 3/3" not in seen:  # the second attempt failed: waiting 2 s for the third
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    row = next(line.split() for line in err.splitlines() if line.startswith("zz-b.dev.v0"))
    assert row[1] == "interrupted" and row[3] == "2", row
    report = json.loads((isolated / "dummy.zz-order.progress.d" / "report.json").read_text())
    by_eval = {e["eval"]: e for e in report["evals"]}
    assert by_eval["zz-b.dev.v0"]["status"] == "interrupted"
    assert by_eval["zz-b.dev.v0"]["exit_code"] == 1


# -- 7. a closed stdout ----------------------------------------------------------------------


def test_a_closed_stdout_lets_the_run_finish_and_says_so(fake: Fake, isolated: Path) -> None:
    state_dir = isolated / "dummy.zz-glob.progress.d"
    state_dir.mkdir(parents=True)
    (state_dir / "report.json").write_text('{"run_id": "an-older-run"}\n')
    proc = subprocess.Popen(
        [oaievalset_exe(), "dummy", "zz-glob", *R1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "FAKE_OAIEVAL_SLEEP": "0.2"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # `| head -1`: one line, then the reader leaves
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "standard output was closed; the evals go on" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == [
        "zz-b.dev.v0",
        "zz-a.dev.v0",
        "zz-c.dev.v0",
        "zz-x1.v0",
    ]
    report = json.loads((state_dir / "report.json").read_text())
    assert report["run_id"] != "an-older-run" and report["pid"] == proc.pid
    assert report["counts"] == {"done": 4}


# -- rough edges -------------------------------------------------------------------------


def test_at_several_jobs_a_failure_shows_the_end_of_its_log(fake: Fake) -> None:
    result = run_cli(
        ["dummy", "zz-glob", *R1, "-j", "2", "--no-exit-on-error"],
        {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=2"},
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith(">>> Failed:"))
    assert "exit code 2" in lines[failed]
    assert "    stderr of zz-a.dev.v0" in lines[failed + 1 : failed + 4]


def test_a_registry_path_that_is_not_a_folder_is_warned_about_and_still_forwarded(
    fake: Fake, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = run_cli(
        ["dummy", "zz-order", *R1, "--registry_path", str(missing), "--registry_path", str(a_file)]
    )
    assert result.returncode == 0, result.stderr
    assert f"warning: --registry_path {missing} does not exist" in result.stderr
    assert f"warning: --registry_path {a_file} is a file" in result.stderr
    assert fake.started()[0][-4:] == [
        "--registry_path",
        str(missing),
        "--registry_path",
        str(a_file),
    ]


def test_a_record_path_given_to_every_eval_is_warned_about_once(fake: Fake, tmp_path: Path) -> None:
    result = run_cli(["dummy", "zz-glob", *R1, "--rec", str(tmp_path / "r.jsonl")])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("each one's record replaces the last") == 1
    single = run_cli(["dummy", "zz-chain", *R1, "--record_path", str(tmp_path / "r.jsonl")])
    assert "record replaces" not in single.stderr


@pytest.mark.parametrize("command", ["oaievalset", "oaieval"])
def test_both_commands_tell_their_version(command: str) -> None:
    from importlib.metadata import version

    exe = Path(sys.executable).parent / command
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"{command} {version('oaievalset')}"


def test_an_eval_killed_by_a_signal_is_reported_by_the_signal_name(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "killbin"
    bin_dir.mkdir()
    script = bin_dir / "oaieval"
    script.write_text(
        f"#!{sys.executable}\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run_cli(["dummy", "zz-order", *R1, "-j", "2", "--no-exit-on-error"])
    assert result.returncode == 1
    assert "killed by SIGKILL" in result.stderr and "exit code -9" not in result.stderr


def test_two_runs_at_once_each_keep_their_own_report(fake: Fake, isolated: Path) -> None:
    env = {"FAKE_OAIEVAL_SLEEP": "0.5"}
    first = start(["dummy", "zz-glob", *R1], env)
    time.sleep(0.3)
    second = start(["dummy", "zz-glob", *R1], env)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    reports = sorted((isolated / "dummy.zz-glob.progress.d" / "reports").glob("*.json"))
    runs = [json.loads(p.read_text()) for p in reports]
    assert sorted(r["pid"] for r in runs) == sorted([first.pid, second.pid])
    latest = json.loads((isolated / "dummy.zz-glob.progress.d" / "report.json").read_text())
    assert latest in runs


# -- a closed stdout, a read-only state folder, empty comparisons and sets -------------------


def run_with_stdout_closed(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run oaievalset as `oaievalset ARGS >&-`: its stdout is not a pipe nobody reads, it
    is no descriptor at all."""
    return subprocess.run(
        ["sh", "-c", '"$0" "$@" >&-', oaievalset_exe(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_a_run_with_stdout_closed_runs_every_eval_and_says_so_once(
    fake: Fake, isolated: Path
) -> None:
    result = run_with_stdout_closed(["dummy", "zz-glob", *R1])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    closed = [line for line in result.stderr.splitlines() if "standard output was closed" in line]
    assert closed == [
        "oaievalset: standard output was closed; the evals go on, and the summary still goes "
        "to stderr and to report.json"
    ]
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == [
        "zz-b.dev.v0",
        "zz-a.dev.v0",
        "zz-c.dev.v0",
        "zz-x1.v0",
    ]
    assert re.search(r"^zz-x1\.v0\s+done", result.stderr, re.M), result.stderr  # the table
    report = json.loads((isolated / "dummy.zz-glob.progress.d" / "report.json").read_text())
    assert report["counts"] == {"done": 4}


def test_a_failing_run_with_stdout_closed_keeps_its_exit_code(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    result = run_with_stdout_closed(["dummy", "zz-glob", *R1])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--list"], ["--list", "zz-glob", *R1], ["--version"], ["--compare", "zz-glob", "--json"]],
)
def test_the_other_commands_with_stdout_closed_exit_0_with_one_line(
    fake: Fake, args: list[str]
) -> None:
    if args[0] == "--compare":
        assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    result = run_with_stdout_closed(args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("standard output was closed") == 1, result.stderr


@functools.lru_cache(maxsize=1)
def read_only_mounts() -> str | None:
    """Why a folder cannot be made read-only for a child here, or None: root ignores
    permission bits, so the child sees the folder through a read-only bind mount in a mount
    namespace of its own (unshare -m, as root)."""
    import shutil
    import tempfile

    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare is not installed"
    with tempfile.TemporaryDirectory() as folder:
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
        probe = subprocess.run([unshare, "-m", "sh", "-c", script, folder], capture_output=True)
    if probe.returncode:
        return "a read-only bind mount needs a mount namespace (unshare -m, as root)"
    return None


def run_in_read_only(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """oaievalset ARGS, with `folder` read-only to it (and writable to everyone else)."""
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97; '
        'if touch "$1/.probe" 2>/dev/null; then exit 98; fi; '
        'shift; exec "$0" "$@"'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, oaievalset_exe(), str(folder), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(read_only_mounts() is not None, reason=str(read_only_mounts()))
def test_the_plan_of_a_read_only_state_folder_reads_it_and_writes_nothing(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oaievalset.commands import command_id

    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3,zz-x1.v0=3")
    assert run_cli(["dummy", "zz-glob", *R1, "--no-exit-on-error"]).returncode == 1
    monkeypatch.delenv("FAKE_OAIEVAL_EXIT")
    state_dir = isolated / "dummy.zz-glob.progress.d"
    claim = state_dir / "claims" / f"{command_id(['oaieval', 'dummy', 'zz-x1.v0', *R1])}.lock"
    # Another process runs zz-x1.v0 again: it holds its claim.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            str(claim),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = sorted((p, p.stat().st_mtime_ns) for p in isolated.rglob("*"))
        result = run_in_read_only(isolated, ["dummy", "zz-glob", *R1, "--plan"])
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert f"  done     oaieval dummy zz-b.dev.v0 {' '.join(R1)}" in lines
    assert f"  failed   oaieval dummy zz-a.dev.v0 {' '.join(R1)}" in lines
    assert f"  running  oaieval dummy zz-x1.v0 {' '.join(R1)}" in lines
    assert lines[-1] == "2 of 4 to run."
    assert sorted((p, p.stat().st_mtime_ns) for p in isolated.rglob("*")) == before


def test_comparing_models_that_never_ran_the_set_is_a_one_line_error_and_no_page(
    fake: Fake, isolated: Path
) -> None:
    page = isolated / "zz-order.compare.html"
    nobody = run_cli(["--compare", "zz-order", "--models", "gpt-4"])
    assert nobody.returncode == 2
    assert nobody.stderr.splitlines() == [
        f"oaievalset: error: model gpt-4 has not run eval set 'zz-order' (nothing of it in "
        f"{isolated}); run it first"
    ]
    assert run_cli(["dummy", "zz-order", *R1]).returncode == 0
    others = run_cli(["--compare", "zz-order", "--models", "gpt-4,gpt-4o", "--json"])
    assert others.returncode == 2 and others.stdout == ""
    assert others.stderr.splitlines() == [
        f"oaievalset: error: none of gpt-4, gpt-4o has run eval set 'zz-order' (nothing of it "
        f"in {isolated}); these have: dummy"
    ]
    assert not page.exists()
    assert run_cli(["--compare", "zz-order", "--models", "dummy"]).returncode == 0
    assert page.exists()


def test_the_comparison_lists_models_in_order_and_says_how_to_leave_one_out(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-b.dev.v0=1")
    # b-model recorded nothing: it has a state folder and no progress file.
    assert run_cli(["b-model", "zz-order", *R1]).returncode == 1
    monkeypatch.delenv("FAKE_OAIEVAL_EXIT")
    for model in ("c-model", "a-model"):
        assert run_cli([model, "zz-order", *R1]).returncode == 0
    done = run_cli(["--compare", "zz-order", "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"] == ["a-model", "b-model", "c-model"]
    assert (
        "oaievalset: comparing every model that has run zz-order (a-model, b-model, c-model); "
        "to leave one out, name the others: --models b-model,c-model"
    ) in done.stderr.splitlines()
    chosen = run_cli(["--compare", "zz-order", "--models", "c-model,a-model", "--json"])
    assert json.loads(chosen.stdout)["models"] == ["c-model", "a-model"]
    assert "to leave one out" not in chosen.stderr


# -- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dummy", "zz-order", "-j", "0"], "argument -j/--jobs: must be 1 or more, got 0"),
        (
            ["dummy", "zz-order", "--timeout", "-1"],
            "argument --timeout: must be a positive number of seconds, got -1",
        ),
        (["dummy"], "the following arguments are required: eval_set"),
    ],
)
def test_an_argument_error_is_one_line_with_a_hint_to_help(
    fake: Fake, args: list[str], message: str
) -> None:
    result = run_cli(args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"oaievalset: error: {message}; see 'oaievalset --help'"]
    assert result.stdout == "" and fake.started() == []


def test_json_and_another_format_of_a_comparison_is_an_error(fake: Fake) -> None:
    assert run_cli(["dummy", "zz-order", *R1]).returncode == 0
    result = run_cli(["--compare", "zz-order", "--json", "--format", "csv"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "oaievalset --compare: error: --json and --format csv ask for two formats; give one of "
        "them; see 'oaievalset --compare --help'"
    ]
    both = run_cli(["--compare", "zz-order", "--json", "--format", "json"])
    assert both.returncode == 0 and json.loads(both.stdout)["models"] == ["dummy"]


# -- arguments meant for oaieval -------------------------------------------------------------


def ours_first_on_path() -> dict[str, str]:
    """An environment in which the `oaieval` found is this package's console script."""
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            ["--max-samples", "2"],
            "--max-samples is not an option of oaievalset, nor of the oaieval it is passed to; "
            "did you mean --max_samples?",
        ),
        (
            ["--time-out", "5"],
            "--time-out is not an option of oaievalset, nor of the oaieval it is passed to; "
            "did you mean --timeout?",
        ),
        (
            ["--max_samples", "two"],
            "oaieval would refuse its arguments: argument --max_samples: invalid int value: 'two'",
        ),
    ],
)
def test_arguments_our_oaieval_would_refuse_are_refused_before_anything_runs(
    isolated: Path, flag: list[str], message: str
) -> None:
    result = run_cli(["dummy", "test-basic", *flag], ours_first_on_path())
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"oaievalset: error: {message}"]
    assert result.stdout == "" and not isolated.exists()


def test_arguments_our_oaieval_takes_still_run(isolated: Path) -> None:
    result = run_cli(
        ["dummy", "test-basic", "--max_samples", "2", "--seed", "3"], ours_first_on_path()
    )
    assert result.returncode == 0, result.stderr
    assert len(recorded_keys(progress_file(isolated, "dummy", "test-basic"))) == 4


def test_another_oaieval_gets_any_argument_unchanged(fake: Fake) -> None:
    result = run_cli(["dummy", "zz-order", *R1, "--max-samples", "2", "--time-out", "5"])
    assert result.returncode == 0, result.stderr
    assert fake.started()[0] == [
        "dummy",
        "zz-b.dev.v0",
        "--max-samples",
        "2",
        "--time-out",
        "5",
        *R1,
    ]


# -- why an eval failed ----------------------------------------------------------------------


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(">>> oaieval ")]


def test_a_misspelt_dummy_is_asked_about_and_the_failure_says_why(isolated: Path) -> None:
    result = run_cli(["dumy", "test-basic"], ours_first_on_path())
    assert result.returncode == 1
    why = (
        "did you mean 'dummy'? Model 'dumy' is not the offline model, so it is a chat model, "
        "which needs OPENAI_API_KEY (it is not set)"
    )
    assert failure_lines(result.stderr) == [
        f">>> oaieval dumy test-match.s1.simple-v0 (failed, exit code 2: {why}; log: "
        f"{next((isolated / 'dumy.test-basic.progress.d' / 'logs').glob('test-match*'))})"
    ]
    plan = run_cli(["dumy", "test-basic", "--plan"], ours_first_on_path())
    assert plan.returncode == 0, plan.stderr
    assert f"           last exit code 2: {why}; log: " in plan.stdout
    entries = json.loads(run_cli(["dumy", "test-basic", "--plan", "--json"]).stdout)["commands"]
    assert [e.get("reason") for e in entries] == [why, None, None, None]


def test_a_refused_api_key_is_the_reason_given_for_the_failure(isolated: Path) -> None:
    from helpers.chat_server import ChatServer

    server = ChatServer(fail_status=401).start()
    base_url = server.base_url
    try:
        env = {**ours_first_on_path(), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "x"}
        result = run_cli(["test-model", "zz-order", *R1, "--no-exit-on-error"], env)
    finally:
        server.stop()
    assert result.returncode == 1
    lines = failure_lines(result.stderr)
    assert len(lines) == 2
    for line in lines:
        assert (
            f"(failed, exit code 1: the server at {base_url}/ refused the API key "
            f"(HTTP 401: the server failed); check OPENAI_API_KEY; log: "
        ) in line


def test_a_model_the_server_does_not_know_that_looks_like_dummy_is_asked_about(
    isolated: Path,
) -> None:
    from helpers.chat_server import ChatServer

    server = ChatServer().start()
    try:
        env = {**ours_first_on_path(), "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "x"}
        result = run_cli(["dumy", "zz-chain", *R1], env)
    finally:
        server.stop()
    assert result.returncode == 1
    [line] = failure_lines(result.stderr)
    assert "does not know model 'dumy' (HTTP 404: The model `dumy` does not exist); " in line
    assert "did you mean 'dummy'?; log: " in line


def test_the_failure_of_another_oaieval_gives_the_exception_of_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "tracebin"
    bin_dir.mkdir()
    script = bin_dir / "oaieval"
    # As the original's oaieval fails: a traceback, then its logging goes on.
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "print('[2026-01-01 00:00:00,000] [oaieval.py:1] Run started', file=sys.stderr)\n"
        "print('Traceback (most recent call last):', file=sys.stderr)\n"
        "print('  File \"oaieval.py\", line 2, in <module>', file=sys.stderr)\n"
        "print('openai.AuthenticationError: Error code: 401', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run_cli(["gpt-4", "zz-chain", *R1])
    assert result.returncode == 1
    [line] = failure_lines(result.stderr)
    assert "(failed, exit code 1: openai.AuthenticationError: Error code: 401; log: " in line


# -- prices ----------------------------------------------------------------------------------


def test_a_cost_too_small_for_four_decimals_is_shown_with_its_digits(
    isolated: Path, tmp_path: Path
) -> None:
    from helpers.chat_server import ChatServer

    prices = tmp_path / "prices.yaml"
    prices.write_text("test-model: {input: 1, output: 1}\n")  # $1 per million tokens
    server = ChatServer().start()
    base_url = server.base_url
    try:
        env = {**ours_first_on_path(), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "x"}
        result = run_cli(["test-model", "zz-chain", *R1, "--prices", str(prices)], env)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    # One sample, one answer of 2 tokens, at $0.000001 each: $0.000002, not "$0.0000".
    row = next(line.split() for line in result.stderr.splitlines() if line.startswith("zz-c."))
    assert row[4:6] == ["2", "$0.0000020"], row
    grid = run_cli(["--compare", "zz-chain", "--prices", str(prices)])
    assert "/ 2 $0.0000020" in grid.stdout  # the model's totals
    assert re.search(r"zz-c\.dev\.v0\s+done\s+1\s+\S+\s+2\s+\$0\.0000020$", grid.stdout, re.M)
    assert "$0.0000" not in result.stderr.replace("$0.0000020", "")


@pytest.mark.parametrize("entry", ["{input: -1, output: 10}", "{input: 1, output: .nan}"])
def test_a_negative_price_is_refused_naming_the_file_and_model(
    fake: Fake, tmp_path: Path, isolated: Path, entry: str
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"dummy: {{input: 1, output: 1}}\ngpt-4o: {entry}\n")
    result = run_cli(["dummy", "zz-order", *R1, "--prices", str(prices)])
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"oaievalset: error: {prices}: model 'gpt-4o' has a price below 0 ")
    assert fake.started() == [] and not isolated.exists()


def test_a_run_whose_model_has_no_price_says_so_once(fake: Fake, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o: {input: 2.5, output: 10}\n")
    result = run_cli(["dummy", "zz-order", *R1, "--prices", str(prices)])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"oaievalset: warning: {prices} has no price for model 'dummy'; no cost shown"
    ]


def test_the_comparisons_totals_say_dash_for_a_model_that_reports_no_tokens(
    isolated: Path,
) -> None:
    assert run_cli(["dummy", "zz-order", *R1], ours_first_on_path()).returncode == 0
    grid = run_cli(["--compare", "zz-order"])
    assert grid.returncode == 0, grid.stderr
    totals = next(line for line in grid.stdout.splitlines() if line.startswith("mean / tokens"))
    assert totals.split() == ["mean", "/", "tokens", "0.000", "/", "-"]
    for line in ("--format", "markdown"), ("--format", "text"):
        assert "/ 0" not in run_cli(["--compare", "zz-order", *line]).stdout


# -- the end-of-run table on a narrow terminal -------------------------------------------------


def run_with_stderr_on_pty(
    args: list[str], columns: int, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run oaievalset with stderr on a pseudo-terminal of the given width; returns the exit
    code and what the terminal shows (stdout goes to a pipe)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [oaievalset_exe(), *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, **(env or {})},
    )
    os.close(follower)
    screen = drain(leader)
    assert proc.stdout is not None
    proc.stdout.read()
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, screen.replace("\r\n", "\n")


def table_of(screen: str) -> list[str]:
    """The end-of-run table: the lines between the blank line and the report's path."""
    lines = screen.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("oaievalset: report:"))
    start = max(i for i in range(end) if not lines[i].strip())
    return lines[start + 1 : end]


def test_the_end_of_run_table_fits_a_40_column_terminal(fake: Fake) -> None:
    long_names = ["dummy", "test-basic", "--no-exit-on-error"]
    code, screen = run_with_stderr_on_pty(
        long_names, 40, {"FAKE_OAIEVAL_EXIT": "test-includes.s1.simple-v0=2"}
    )
    assert code == 1
    table = table_of(screen)
    assert table and all(len(line) <= 40 for line in table), table
    assert table[0] == "test-match.s1.simple-v0"
    assert re.fullmatch(r"  done  \d+\.\ds  tries 1  tokens -", table[1]), table
    assert table[2] == "  accuracy=0.5"
    assert "test-includes-ignore-case.s1.simple-v0" in table
    failed = table[table.index("test-includes.s1.simple-v0") + 1]
    assert re.fullmatch(r"  failed  \d+\.\ds  tries 1  tokens -", failed), table
    # A wide terminal, and a pipe, get the aligned table, a row per eval.
    code, screen = run_with_stderr_on_pty(long_names, 120, {"FAKE_OAIEVAL_EXIT": ""})
    assert table_of(screen)[0].split() == ["eval", "status", "time", "tries", "tokens", "metrics"]
    piped = run_cli(["dummy", "test-basic"], {"COLUMNS": "40"})
    assert table_of(piped.stderr)[0].split()[0] == "eval"


# -- waiting retries (issue: the backoff spun and held back the queue) -----------------------


def test_a_waiting_retry_costs_no_cpu_and_holds_back_no_other_eval(
    fake: Fake, isolated: Path
) -> None:
    import resource

    env = {
        **os.environ,
        "FAKE_OAIEVAL_FAIL_TIMES": "zz-b.dev.v0=2",  # fails at once, twice: 1 s + 2 s of backoff
        "FAKE_OAIEVAL_SLEEP": "0.4",
        "FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=0",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    done = subprocess.run(
        [oaievalset_exe(), "dummy", "zz-glob", *R1, "-j", "2", "--attempts", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # The driver and its seven short children; a loop spinning on the backoff burns a core.
    assert cpu < 0.4 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s"
    starts = [e["argv"][1] for e in fake.events() if e["event"] == "start"]
    assert starts.count("zz-b.dev.v0") == 3
    second_try = [i for i, k in enumerate(starts) if k == "zz-b.dev.v0"][1]
    # zz-c and zz-x1 took the free slot while zz-b waited for its retry.
    assert starts.index("zz-c.dev.v0") < second_try
    assert starts.index("zz-x1.v0") < second_try
    assert sorted(recorded_keys(progress_file(isolated, "dummy", "zz-glob"))) == sorted(set(starts))


# -- one way out of a run (issue: an error midway skipped the ending) ---------------------


def test_a_launch_that_fails_midway_ends_the_run_through_its_ending(
    fake: Fake, isolated: Path
) -> None:
    from helpers.processes import alive

    env = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=0.5,zz-a.dev.v0=30"}
    proc = start(["dummy", "zz-glob", *R1, "-j", "2"], env)
    wait_for(lambda: len(fake.started()) == 2)  # zz-b (short) and zz-a (long) run
    (fake.bin / "oaieval").chmod(0o644)  # so the next launch, zz-c's, fails for real
    began = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert time.monotonic() - began < 10, "the running eval was stopped, not waited for"
    long_running = started_pids(fake, "zz-a.dev.v0")[0]
    wait_for(lambda: not alive(long_running), timeout=5)
    lines = err.strip().splitlines()
    assert lines[-1] == (
        "oaievalset: error: the run stopped midway: 'oaieval' is not executable; "
        "check its permissions"
    ), err
    assert "Traceback" not in err
    assert re.search(r"^zz-b\.dev\.v0\s+done", err, re.M), err  # the table is there
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == ["zz-b.dev.v0"]
    report = json.loads((isolated / "dummy.zz-glob.progress.d" / "report.json").read_text())
    assert report["state"] == "ended" and report["exit_code"] == 1
    status = {e["eval"]: e["status"] for e in report["evals"]}
    assert status == {
        "zz-b.dev.v0": "done",
        "zz-a.dev.v0": "interrupted",
        "zz-c.dev.v0": "failed",
        "zz-x1.v0": "not run",
    }
    failed = next(e for e in report["evals"] if e["eval"] == "zz-c.dev.v0")
    assert failed["reason"] == "'oaieval' is not executable; check its permissions"
    # The resume runs what is not recorded, and nothing twice.
    (fake.bin / "oaieval").chmod(0o755)
    assert run_cli(["dummy", "zz-glob", *R1, "-j", "2"]).returncode == 0
    assert sorted(recorded_keys(progress_file(isolated, "dummy", "zz-glob"))) == sorted(
        ["zz-a.dev.v0", "zz-b.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]
    )


# -- what a resume will do, after failures ---------------------------------------------------

ALL_FAIL = {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=1,zz-b.dev.v0=1,zz-c.dev.v0=1,zz-x1.v0=1"}


def test_a_failed_no_resume_run_that_recorded_nothing_says_the_old_record_is_kept(
    fake: Fake, isolated: Path
) -> None:
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    failed = run_cli(["dummy", "zz-glob", *R1, "--no-resume", "--no-exit-on-error"], ALL_FAIL)
    assert failed.returncode == 1
    assert "a resume retries them" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "recorded nothing" in last and "4 of 4 evals" in last and "runs the other 0" in last
    # The line told the truth: a plain resume runs nothing.
    before = len(fake.started())
    again = run_cli(["dummy", "zz-glob", *R1])
    assert again.returncode == 0 and len(fake.started()) == before


def test_a_failed_resume_says_how_many_the_same_command_runs_again(
    fake: Fake, isolated: Path
) -> None:
    two_fail = {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=1,zz-c.dev.v0=1"}
    failed = run_cli(["dummy", "zz-glob", *R1, "--no-exit-on-error"], two_fail)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert "2 of 4 evals are recorded" in last and "run the other 2" in last, last
    before = len(fake.started())
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    assert sorted(fake.keys()[before:]) == ["zz-a.dev.v0", "zz-c.dev.v0"]


# -- a row describes one attempt; the page describes the run beside it ----------------------


def page_cells(page: Path) -> dict[str, dict[str, Any]]:
    text = page.read_text(encoding="utf-8")
    data = text.split('<script type="application/json" id="data">', 1)[1].split("</script>")[0]
    return {e["name"]: next(iter(e["cells"].values())) for e in json.loads(data)["evals"]}


def test_after_a_failed_no_resume_the_resume_shows_the_run_that_made_the_record(
    isolated: Path, tmp_path: Path
) -> None:
    from helpers.chat_server import ChatServer

    healthy = ChatServer(answer_fn=lambda r: "Mars", models=("m",)).start()
    refusing = ChatServer(fail_status=401, models=("m",)).start()
    prices = tmp_path / "prices.yaml"
    prices.write_text("m: {input: 1000, output: 2000}\n")
    key = {"OPENAI_API_KEY": "sk-test"}
    try:
        first = run_cli(["m", "test-basic"], {**key, "OPENAI_BASE_URL": healthy.base_url})
        assert first.returncode == 0, first.stderr
        run1 = json.loads((isolated / "m.test-basic.progress.d" / "report.json").read_text())
        failed = run_cli(
            ["m", "test-basic", "--no-resume", "--no-exit-on-error"],
            {**key, "OPENAI_BASE_URL": refusing.base_url},
        )
        assert failed.returncode == 1, failed.stderr
        again = run_cli(
            ["m", "test-basic", "--prices", str(prices)],
            {**key, "OPENAI_BASE_URL": healthy.base_url},
        )
    finally:
        healthy.stop()
        refusing.stop()
    assert again.returncode == 0, again.stderr
    assert "4/4 evals already completed" in again.stdout
    report = json.loads((isolated / "m.test-basic.progress.d" / "report.json").read_text())
    before = {e["eval"]: e for e in run1["evals"]}
    for row in report["evals"]:
        earlier = before[row["eval"]]
        assert row["status"] == "done earlier"
        # The first run's, not the failed attempt's: its times, tries, metrics and tokens.
        assert (row["started"], row["ended"], row["attempts"]) == (
            earlier["started"],
            earlier["ended"],
            earlier["attempts"],
        )
        assert row["metrics"] == earlier["metrics"] and row["metrics"]["accuracy"] >= 0
        assert row["usage"] == earlier["usage"] and row["usage"]["total_tokens"] > 0
    assert report["usage"] == run1["usage"]
    table = again.stderr.split("\n\n", 1)[-1]
    for line in table.splitlines()[1:5]:  # the rows of the four evals
        assert " - " not in f" {line} ", line  # a time, tries, tokens and a cost, each
    compared = json.loads(run_cli(["--compare", "test-basic", "--json"]).stdout)
    for cell in compared["cells"]:
        assert cell["status"] == "done" and cell["duration"] is not None
        assert cell["usage"] == before[cell["eval"]]["usage"]


def test_the_page_after_a_resume_shows_the_records_its_report_lists(isolated: Path) -> None:
    assert run_cli(["dummy", "test-basic"]).returncode == 0
    assert run_cli(["dummy", "test-basic", "--max_samples", "1"]).returncode == 0
    resumed = run_cli(["dummy", "test-basic"])
    assert resumed.returncode == 0, resumed.stderr
    folder = isolated / "dummy.test-basic.progress.d"
    report = json.loads((folder / "report.json").read_text())
    assert all("--max_samples" not in e["command"] for e in report["evals"])
    cells = page_cells(folder / "report.html")
    for row in report["evals"]:
        cell = cells[row["eval"]]
        assert cell["record"] == row["record"]
        # The whole evals, not --max_samples 1: in the page's count and in the samples'
        # script beside it.
        assert cell["n"] in (3, 6)
        script = (folder / "report_files" / f"{cell['samples']}.js").read_text()
        rows = json.loads(script.split(", ", 1)[1].rsplit(");", 1)[0])
        assert len(rows) == cell["n"]


def test_a_comparison_says_which_arguments_each_cell_comes_from_when_they_differ(
    fake: Fake, isolated: Path
) -> None:
    assert run_cli(["dummy", "zz-glob", *R1]).returncode == 0
    # The second eval fails: the last two keep the first run's commands as their newest.
    fails = {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=1"}
    assert run_cli(["dummy", "zz-glob", *R1, "--seed", "1"], fails).returncode == 1
    compared = run_cli(["--compare", "zz-glob", "--json"])
    assert compared.returncode == 0, compared.stderr
    data = json.loads(compared.stdout)
    args = {c["eval"]: " ".join(c["command"][3:]) for c in data["cells"]}
    assert args["zz-b.dev.v0"].startswith("--seed 1") and args["zz-c.dev.v0"].startswith("--reg")
    notes = "\n".join(data["notes"])
    assert "zz-b.dev.v0, zz-a.dev.v0 ran with --seed 1" in notes, notes
    assert "zz-c.dev.v0, zz-x1.v0 ran with --registry_path" in notes, notes
    text = run_cli(["--compare", "zz-glob"]).stdout
    assert "note: dummy: zz-b.dev.v0, zz-a.dev.v0 ran with --seed 1" in text


# -- records (issue: a record written on another machine was pointed at) ----------------------


def test_the_report_names_a_record_only_where_it_is_on_this_machine(
    fake: Fake, isolated: Path, tmp_path: Path
) -> None:
    # zz-b's record is here; zz-a's log names one that is not (written on another machine).
    env = {
        "FAKE_OAIEVAL_RECORD_FOR": "zz-a.dev.v0=elsewhere,zz-b.dev.v0=10",
        "FAKE_OAIEVAL_RECORD_DIR": str(tmp_path),
    }
    result = run_cli(["dummy", "zz-order", *R1], env)
    assert result.returncode == 0, result.stderr
    report = json.loads((isolated / "dummy.zz-order.progress.d" / "report.json").read_text())
    records = {entry["eval"]: entry["record"] for entry in report["evals"]}
    assert records == {"zz-a.dev.v0": None, "zz-b.dev.v0": str(tmp_path / "zz-b.dev.v0.jsonl")}
