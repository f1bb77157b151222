"""Beyond the original: parallel runs, timeouts, retries, state, plan, listing and the report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.fake import REG1, Fake, progress_file, run_cli

from oaievalset.cli import get_parser, main

R1 = ["--registry_path", str(REG1)]
GLOB = ["zz-b.dev.v0", "zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]

# Every option of the original oaieval: none of our flags may begin like one of them.
OAIEVAL_FLAGS = [
    "--completion_args", "--extra_eval_params", "--max_samples", "--cache", "--visible",
    "--seed", "--user", "--record_path", "--log_to_file", "--debug", "--local-run",
    "--http-run", "--http-run-url", "--http-batch-size", "--http-fail-percent-threshold",
    "--dry-run", "--dry-run-logging",
]  # fmt: skip


def max_overlap(fake: Fake) -> int:
    running, most = 0, 0
    for event in fake.events():
        running += 1 if event["event"] == "start" else -1
        most = max(most, running)
    return most


def state(isolated: Path, eval_set: str) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    path = isolated / f"dummy.{eval_set}.progress.d" / "state.jsonl"
    for line in path.read_text().splitlines():
        event = json.loads(line)
        states.setdefault(event["command"][2], {}).update(event)
    return states


def test_no_flag_of_ours_begins_like_an_oaieval_flag() -> None:
    ours = [s for a in get_parser()._actions for s in a.option_strings if s.startswith("--")]
    for flag in ours:
        for theirs in OAIEVAL_FLAGS:
            for name in (theirs, "--no-" + theirs[2:]):
                assert not flag.startswith(name) and not name.startswith(flag), (flag, name)


@pytest.mark.parametrize("flag", OAIEVAL_FLAGS)
def test_every_oaieval_flag_is_passed_through(fake: Fake, flag: str) -> None:
    assert main(["dummy", "zz-chain", *R1, flag]) == 0
    assert fake.started()[0][2] == flag


def test_jobs_run_evals_side_by_side_and_record_each(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP", "0.5")
    assert main(["dummy", "zz-glob", *R1, "-j", "4"]) == 0
    assert max_overlap(fake) > 1
    assert sorted(fake.keys()) == sorted(GLOB)
    recorded = progress_file(isolated, "dummy", "zz-glob").read_text().splitlines()
    assert sorted(json.loads(x)[2] for x in recorded) == sorted(GLOB)


def test_jobs_never_exceed_the_limit(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP", "0.3")
    assert main(["dummy", "zz-glob", *R1, "-j", "2"]) == 0
    assert max_overlap(fake) == 2


def test_parallel_output_keeps_child_output_off_the_terminal(
    fake: Fake, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "zz-glob", *R1, "-j", "4"]) == 0
    out, err = capfd.readouterr()
    assert "stderr of" not in err and "stdout of" not in out
    assert sum(line.startswith(">>> Running command:") for line in out.splitlines()) == 4
    assert sum("(done: oaieval dummy" in line for line in out.splitlines()) == 4


def test_exit_on_error_with_jobs_starts_nothing_new_and_records_the_running(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zz-b fails at once while zz-a is still running; zz-c and zz-x1 must not start.
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-b.dev.v0=3")
    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP_FOR", "zz-a.dev.v0=0.5")
    assert main(["dummy", "zz-glob", *R1, "-j", "2"]) == 1
    assert fake.keys() == ["zz-b.dev.v0", "zz-a.dev.v0"] or sorted(fake.keys()) == sorted(
        ["zz-b.dev.v0", "zz-a.dev.v0"]
    )
    recorded = progress_file(isolated, "dummy", "zz-glob").read_text().splitlines()
    assert [json.loads(x)[2] for x in recorded] == ["zz-a.dev.v0"]


def test_a_timeout_stops_the_eval_and_counts_it_failed(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP_FOR", "zz-b.dev.v0=30")
    began = time.monotonic()
    assert main(["dummy", "zz-order", *R1, "--timeout", "0.5", "--no-exit-on-error"]) == 1
    assert time.monotonic() - began < 10
    assert fake.keys() == ["zz-b.dev.v0", "zz-a.dev.v0"]
    assert state(isolated, "zz-order")["zz-b.dev.v0"]["status"] == "timed out"
    recorded = progress_file(isolated, "dummy", "zz-order").read_text()
    assert "zz-b.dev.v0" not in recorded and "zz-a.dev.v0" in recorded
    assert "timed out" in capsys.readouterr().err


def test_attempts_retry_a_failing_eval(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_FAIL_TIMES", "zz-c.dev.v0=1")
    monkeypatch.setattr("oaievalset.runner.BACKOFF_BASE", 0.05)
    assert main(["dummy", "zz-chain", *R1, "--attempts", "3"]) == 0
    assert fake.keys() == ["zz-c.dev.v0", "zz-c.dev.v0"]
    assert state(isolated, "zz-chain")["zz-c.dev.v0"]["attempts"] == 2


def test_attempts_give_up_after_the_last_one(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-c.dev.v0=2")
    monkeypatch.setattr("oaievalset.runner.BACKOFF_BASE", 0.05)
    assert main(["dummy", "zz-chain", *R1, "--attempts", "2"]) == 1
    assert fake.keys() == ["zz-c.dev.v0", "zz-c.dev.v0"]


@pytest.mark.parametrize(
    "bad",
    [
        ["-j", "0"],
        ["--jobs", "-2"],
        ["--timeout", "-1"],
        ["--timeout", "0"],
        ["--attempts", "0"],
        ["-j", "x"],
    ],
)
def test_bad_numbers_are_usage_errors(
    fake: Fake, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dummy", "zz-chain", *R1, *bad])
    assert exc.value.code == 2
    assert "oaievalset: error: argument" in capsys.readouterr().err
    assert fake.started() == []


def test_state_beside_the_progress_file_records_each_command(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-order", *R1, "--no-exit-on-error"]) == 1
    states = state(isolated, "zz-order")
    assert states["zz-b.dev.v0"]["status"] == "done"
    assert states["zz-a.dev.v0"]["status"] == "failed"
    assert states["zz-a.dev.v0"]["exit_code"] == 3
    for entry in states.values():
        assert entry["attempts"] == 1 and entry["ended"] >= entry["started"]
        assert Path(entry["log"]).exists()
    # The progress file holds commands only, as the original reads them.
    for line in progress_file(isolated, "dummy", "zz-order").read_text().splitlines():
        assert isinstance(json.loads(line), list)


def test_plan_shows_done_failed_and_pending_and_runs_nothing(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    main(["dummy", "zz-glob", *R1, "--no-exit-on-error", "--seed", "1"])
    main(["dummy", "zz-glob", *R1, "--seed", "1"])
    ran = len(fake.started())
    capsys.readouterr()
    assert main(["dummy", "zz-glob", *R1, "--seed", "2", "--plan"]) == 0
    assert len(fake.started()) == ran
    out = capsys.readouterr().out
    assert "4 of 4 to run." in out
    assert "not done: recorded with other arguments: oaieval dummy zz-b.dev.v0 --seed 1" in out
    assert main(["dummy", "zz-glob", *R1, "--seed", "1", "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    statuses = {c["eval"]: c["status"] for c in plan["commands"]}
    assert statuses == {
        "zz-b.dev.v0": "done",
        "zz-a.dev.v0": "failed",
        "zz-c.dev.v0": "done",
        "zz-x1.v0": "done",
    }


def test_list_shows_sets_and_what_a_set_resolves_to(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", *R1]) == 0
    out = capsys.readouterr().out
    assert "test-basic" in out and "zz-glob" in out
    assert main(["--list", "zz-glob", *R1]) == 0
    assert capsys.readouterr().out.split() == GLOB
    assert main(["--list", "zz-setalias", *R1, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in listing["evals"]] == ["zz-b.dev.v0", "zz-a.dev.v0"]
    assert main(["--list", "--json", *R1]) == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)]
    assert "zz-setalias" in names


@pytest.mark.parametrize(
    "argv",
    [
        ["dummy", "zz-glob", *R1, "--list"],
        ["dummy", "zz-glob", "--list", *R1],
        ["dummy", "zz-glob", *R1, "--max_samples", "2", "-j", "2", "--list"],
        ["zz-glob", "--list", *R1],
    ],
)
def test_list_anywhere_in_a_runs_command_lists_its_set_and_runs_nothing(
    fake: Fake, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.split() == GLOB and err == ""
    assert fake.started() == []


def test_list_with_an_argument_it_does_not_know_is_still_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--list", "--jsn"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --jsn" in capsys.readouterr().err


def test_the_summary_table_and_json_report(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-order", *R1, "--no-exit-on-error"]) == 1
    err = capsys.readouterr().err
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.startswith("zz-")}
    assert rows["zz-b.dev.v0"][1] == "done" and rows["zz-b.dev.v0"][-1] == "accuracy=0.5"
    assert rows["zz-a.dev.v0"][1] == "failed"
    report_path = isolated / "dummy.zz-order.progress.d" / "report.json"
    assert f"oaievalset: report: {report_path}" in err
    report = json.loads(report_path.read_text())
    assert report["exit_code"] == 1
    by_eval = {e["eval"]: e for e in report["evals"]}
    assert by_eval["zz-b.dev.v0"]["metrics"] == {"accuracy": 0.5}
    assert by_eval["zz-a.dev.v0"]["exit_code"] == 3


def test_the_report_reads_the_original_oaievals_log_format(tmp_path: Path) -> None:
    from oaievalset.outcome import read_final_report

    log = tmp_path / "x.log"
    log.write_text(
        "[2026-01-01 10:00:00,000] [record.py:371] Final report: {'accuracy': 0.5}. Logged to x\n"
        "[2026-01-01 10:00:00,000] [oaieval.py:252] Final report:\n"
        "[2026-01-01 10:00:00,000] [oaieval.py:254] accuracy: 0.6666666666666666\n"
        "[2026-01-01 10:00:00,000] [oaieval.py:254] boostrap_std: nan\n"
        "[2026-01-01 10:00:00,000] [oaieval.py:254] usage_total_tokens: 120\n"
        "other output\n"
    )
    report = read_final_report(log)
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["usage_total_tokens"] == 120
    assert report["boostrap_std"] != report["boostrap_std"]  # nan


def test_the_report_is_found_at_the_end_of_a_log_larger_than_the_tail_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oaievalset import outcome

    monkeypatch.setattr(outcome, "REPORT_TAIL", 4096)
    log = tmp_path / "x.log"
    noise = "".join(f"[debug] sample {i}: accuracy: 0.0 Final report:\n" for i in range(2000))
    log.write_text(noise + "[x] Final report:\n[x] accuracy: 0.75\n[x] done\n")
    assert log.stat().st_size > 16 * 4096
    assert outcome.read_final_report(log) == {"accuracy": 0.75}


def test_resumed_runs_show_earlier_evals_in_the_summary(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "zz-order", *R1]) == 0
    capsys.readouterr()
    assert main(["dummy", "zz-order", *R1]) == 0
    err = capsys.readouterr().err
    assert sum("done earlier" in line for line in err.splitlines()) == 2


def test_a_tty_gets_a_live_line_and_a_pipe_does_not(fake: Fake) -> None:
    piped = run_cli(["dummy", "zz-glob", *R1, "-j", "2"])
    assert piped.returncode == 0
    assert "running," not in piped.stdout and "\r" not in piped.stdout
    # A pseudo-terminal: the live status line shows up.
    import os
    import pty
    import subprocess

    from helpers.fake import oaievalset_exe
    from helpers.processes import drain

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [oaievalset_exe(), "dummy", "zz-glob", *R1, "-j", "2", "--no-resume"],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )
    os.close(follower)
    screen = drain(leader)
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert "running," in screen and "pending]" in screen


def _long_journal(isolated: Path, eval_set: str) -> Path:
    """A journal of many runs: 3,000 lines about three commands, one of them not in the set."""
    from oaievalset.commands import command_id

    state_dir = isolated / f"dummy.{eval_set}.progress.d"
    state_dir.mkdir(parents=True)
    commands = [
        ["oaieval", "dummy", key, *R1] for key in ("zz-a.dev.v0", "zz-b.dev.v0", "zz-gone.v0")
    ]
    lines = []
    for run in range(1000):
        for command in commands:
            status = "done" if run == 999 else "failed"
            event: dict[str, Any] = {"id": command_id(command), "command": command}
            event["status"] = status
            if run == 0:
                event["first_seen"] = True  # a field set once must survive the compaction
            lines.append(json.dumps(event) + "\n")
    journal = state_dir / "state.jsonl"
    journal.write_text("".join(lines))
    return journal


def test_a_long_state_journal_is_compacted_by_a_run_that_is_alone(
    fake: Fake, isolated: Path
) -> None:
    journal = _long_journal(isolated, "zz-order")
    assert journal.stat().st_size > 256 * 1024
    assert main(["dummy", "zz-order", *R1]) == 0
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    # One line per command known before, then this run's two lines per eval.
    assert len(lines) == 3 + 4
    gone = state(isolated, "zz-order")["zz-gone.v0"]
    assert gone["status"] == "done" and gone["first_seen"] is True
    assert state(isolated, "zz-order")["zz-a.dev.v0"]["status"] == "done"


def test_the_journal_is_left_whole_while_another_process_runs_on_the_set(
    fake: Fake, isolated: Path
) -> None:
    import fcntl
    import os

    journal = _long_journal(isolated, "zz-order")
    other = os.open(journal.parent / "active", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other, fcntl.LOCK_SH)  # as a running oaievalset holds it
        assert main(["dummy", "zz-order", *R1]) == 0
    finally:
        os.close(other)
    assert len(journal.read_text().splitlines()) == 3000 + 4
