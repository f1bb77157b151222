"""The oaievalset command against a fake oaieval on PATH: the original's observed behaviour,
fact by fact (shared reference, section 1), and our documented differences."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers.fake import REG1, REG2, Fake, progress_file

from oaievalset.cli import main

R1 = ["--registry_path", str(REG1)]
BASIC = [
    "test-match.s1.simple-v0",
    "test-fuzzy-match.s1.simple-v0",
    "test-includes.s1.simple-v0",
    "test-includes-ignore-case.s1.simple-v0",
]


def test_test_basic_runs_the_four_resolved_keys_in_order(fake: Fake) -> None:
    assert main(["dummy", "test-basic"]) == 0
    assert fake.started() == [["dummy", key] for key in BASIC]


def test_stdout_lines_match_the_original_without_colour(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "test-basic"]) == 0
    path = progress_file(isolated, "dummy", "test-basic")
    expected = ["Going to run the following commands:"]
    expected += [f"  oaieval dummy {key}" for key in BASIC]
    for i, key in enumerate(BASIC, start=1):
        expected.append(f">>> Running command: oaieval dummy {key} ({i}/4)")
        expected.append(f">>> Saved progress to {path}")
    expected.append(">>> All done!")
    assert capsys.readouterr().out.splitlines() == expected


def test_force_color_gives_the_original_escape_codes(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert main(["dummy", "zz-chain", *R1]) == 0
    out = capsys.readouterr().out
    assert "\033[1;32m>>> All done!\033[0m" in out.splitlines()


def test_no_color_wins_over_force_color(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["dummy", "zz-chain", *R1]) == 0
    assert "\033[" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("eval_set", "keys"),
    [
        ("zz-order", ["zz-b.dev.v0", "zz-a.dev.v0"]),  # registry order, not set order
        ("zz-glob", ["zz-b.dev.v0", "zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]),
        ("zz-dedupe", ["zz-a.dev.v0"]),
        ("zz-chain", ["zz-c.dev.v0"]),
        ("zz-setalias", ["zz-b.dev.v0", "zz-a.dev.v0"]),
        ("zz-dotstar", ["zz-a.dev.v0"]),
        ("zz-missing", ["zz-a.dev.v0"]),
    ],
)
def test_sets_resolve_as_in_the_original(fake: Fake, eval_set: str, keys: list[str]) -> None:
    assert main(["dummy", eval_set, *R1]) == 0
    assert fake.keys() == keys
    assert all(argv[2:] == ["--registry_path", str(REG1)] for argv in fake.started())


def test_set_alias_names_the_progress_file_after_the_name_given(fake: Fake, isolated: Path) -> None:
    assert main(["dummy", "zz-setalias", *R1]) == 0
    assert progress_file(isolated, "dummy", "zz-setalias").exists()
    assert not progress_file(isolated, "dummy", "zz-order").exists()


def test_regex_characters_in_a_pattern_are_literal(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The original treats `zz-[ab]` as a regex; we match it literally, so nothing: a set
    # that resolves to no eval is an error (the original runs nothing and exits 0).
    assert main(["dummy", "zz-regex", *R1]) == 2
    assert fake.keys() == [] and not isolated.exists()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "oaievalset: error: eval set 'zz-regex' matches no eval: 'zz-[ab]' (closest: zz-b, "
        f"zz-a); fix it in {REG1 / 'eval_sets' / 'zz.yaml'}, or pass the --registry_path that "
        "defines its evals"
    ]


def test_an_entry_that_matches_nothing_is_skipped_with_a_warning(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "zz-missing", *R1]) == 0
    assert "'zz-nonexistent', which matches no eval; skipped" in capsys.readouterr().err


def test_the_warning_about_an_entry_that_matches_nothing_names_the_closest_evals(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "reg" / "eval_sets").mkdir(parents=True)
    (tmp_path / "reg" / "eval_sets" / "t.yaml").write_text(
        "typo:\n  evals: [test-match, test-fuzy-match]\n"
    )
    assert main(["dummy", "typo", "--registry_path", str(tmp_path / "reg")]) == 0
    assert fake.keys() == ["test-match.s1.simple-v0"]
    assert (
        "oaievalset: warning: eval set 'typo' lists 'test-fuzy-match', which matches no eval; "
        "skipped (closest: test-fuzzy-match, "
    ) in capsys.readouterr().err


@pytest.mark.parametrize("plan", [[], ["--plan"]])
def test_an_empty_set_is_an_error_naming_it_and_writes_nothing(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str], plan: list[str]
) -> None:
    # The original prints its opening line and `>>> All done!`, and exits 0.
    assert main(["dummy", "zz-empty", *R1, *plan]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"oaievalset: error: eval set 'zz-empty' lists no evals "
        f"({REG1 / 'eval_sets' / 'zz.yaml'}); add some to its `evals` list"
    ]
    assert fake.started() == [] and not isolated.exists()


def test_unknown_set_is_an_error_with_the_closest_names(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "test-basc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "oaievalset: error: unknown eval set 'test-basc'; closest: test-basic, test-graded; "
        "'oaievalset --list' shows the sets"
    ]
    assert fake.started() == [] and not isolated.exists()


def test_unknown_arguments_are_passed_through_in_order(fake: Fake) -> None:
    argv = [
        "dummy",
        "zz-order",
        "--max_samples",
        "100",
        *R1,
        "--dry-run",
        "--seed",
        "1",
        "extra-pos",
    ]
    assert main(argv) == 0
    assert fake.started()[0] == [
        "dummy",
        "zz-b.dev.v0",
        "--max_samples",
        "100",
        "--dry-run",
        "--seed",
        "1",
        "extra-pos",
        "--registry_path",
        str(REG1),
    ]


@pytest.mark.parametrize(
    "extra",
    [["--max_samples=7"], ["-x"], ["--seed", "1", "--seed", "2"], ["--", "--foo"]],
)
def test_other_passthrough_forms_are_kept(fake: Fake, extra: list[str]) -> None:
    assert main(["dummy", "zz-chain", *R1, *extra]) == 0
    assert fake.started() == [["dummy", "zz-c.dev.v0", *extra, "--registry_path", str(REG1)]]


def test_each_registry_path_is_forwarded_as_its_own_flag(fake: Fake) -> None:
    # The original forwards `--registry_path A B`, which its oaieval rejects.
    assert main(["dummy", "yy-set", *R1, "--registry_path", str(REG2)]) == 0
    assert fake.started()[0][2:] == [
        "--registry_path",
        str(REG1),
        "--registry_path",
        str(REG2),
    ]


@pytest.mark.parametrize("form", [[f"--registry_path={REG1}"], ["--reg", str(REG1)]])
def test_registry_path_forms_are_forwarded_plainly(fake: Fake, form: list[str]) -> None:
    assert main(["dummy", "zz-chain", *form]) == 0
    assert fake.started() == [["dummy", "zz-c.dev.v0", "--registry_path", str(REG1)]]


@pytest.mark.parametrize("flag", ["--res", "--no-res", "--exit", "--no-exit"])
def test_abbreviations_of_our_flags_are_taken_not_forwarded(fake: Fake, flag: str) -> None:
    assert main(["dummy", "zz-chain", *R1, flag]) == 0
    assert fake.started() == [["dummy", "zz-c.dev.v0", "--registry_path", str(REG1)]]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--no", "ambiguous option: --no could match --no-resume, --no-exit-on-error"),
        ("--resume=1", "ignored explicit argument '1'"),
    ],
)
def test_ambiguous_or_bad_flags_exit_2(
    fake: Fake, flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dummy", "zz-chain", *R1, flag])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert fake.started() == []


def test_no_exit_abbreviation_keeps_going_after_a_failure(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-glob", *R1, "--no-exit"]) == 1
    assert len(fake.started()) == 4


def test_positionals_are_filled_greedily_as_argparse_does(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    # model=5, eval_set=dummy: an unknown set, now an error instead of a silent exit 0.
    assert main(["--max_samples", "5", "dummy", "zz-order", *R1]) == 2
    assert "unknown eval set 'dummy'" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-h"])
    assert exc.value.code == 0
    assert "usage: oaievalset" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dummy"], "the following arguments are required: eval_set"),
        ([], "the following arguments are required: model, eval_set"),
    ],
)
def test_missing_positionals_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_home_evals_is_a_default_root_and_is_not_forwarded(fake: Fake) -> None:
    home = Path(os.environ["HOME"]) / ".evals"
    (home / "evals").mkdir(parents=True)
    (home / "eval_sets").mkdir()
    (home / "evals" / "yy.yaml").write_text("yy-1:\n  class: m:C\n")
    (home / "eval_sets" / "yy.yaml").write_text("yy-homeset:\n  evals: [yy-1]\n")
    assert main(["dummy", "yy-homeset"]) == 0
    assert fake.started() == [["dummy", "yy-1"]]


def test_home_evals_given_again_is_loaded_once(fake: Fake) -> None:
    home = Path(os.environ["HOME"]) / ".evals"
    (home / "evals").mkdir(parents=True)
    (home / "eval_sets").mkdir()
    (home / "evals" / "yy.yaml").write_text("yy-1:\n  class: m:C\n")
    (home / "eval_sets" / "yy.yaml").write_text("yy-homeset:\n  evals: [yy-1]\n")
    assert main(["dummy", "yy-homeset", "--registry_path", str(home)]) == 0
    assert fake.started() == [["dummy", "yy-1", "--registry_path", str(home)]]


def test_the_same_root_twice_is_loaded_once(fake: Fake) -> None:
    assert main(["dummy", "zz-chain", *R1, *R1]) == 0
    assert fake.keys() == ["zz-c.dev.v0"]


def test_a_model_with_a_slash_makes_subfolders(fake: Fake, isolated: Path) -> None:
    assert main(["org/model-x", "zz-chain", *R1]) == 0
    assert (isolated / "org" / "model-x.zz-chain.progress.txt").exists()


@pytest.mark.parametrize(("model", "eval_set"), [("../escape", "zz-chain"), ("dummy", "../x")])
def test_dot_dot_in_a_name_is_refused(
    fake: Fake, model: str, eval_set: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = REG1
    assert main([model, eval_set, "--registry_path", str(registry)]) == 2
    assert fake.started() == []
    err = capsys.readouterr().err
    assert err.startswith("oaievalset: error:")


def test_progress_file_bytes_are_the_originals(fake: Fake, isolated: Path) -> None:
    assert main(["dummy", "zz-order", *R1]) == 0
    expected = "".join(
        json.dumps(["oaieval", "dummy", key, "--registry_path", str(REG1)]) + "\n"
        for key in ["zz-b.dev.v0", "zz-a.dev.v0"]
    )
    assert progress_file(isolated, "dummy", "zz-order").read_text() == expected


def test_resume_skips_recorded_commands_and_prints_them(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-glob", *R1]) == 1
    assert fake.keys() == ["zz-b.dev.v0", "zz-a.dev.v0"]
    monkeypatch.delenv("FAKE_OAIEVAL_EXIT")
    capsys.readouterr()
    assert main(["dummy", "zz-glob", *R1]) == 0
    assert fake.keys()[2:] == ["zz-a.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]
    out = capsys.readouterr().out.splitlines()
    path = progress_file(isolated, "dummy", "zz-glob")
    tail = f" --registry_path {REG1}"
    assert out[:3] == [
        f"Loaded progress from {path}",
        "1/4 evals already completed:",
        f"  oaieval dummy zz-b.dev.v0{tail}",
    ]
    assert f">>> Running command: oaieval dummy zz-a.dev.v0{tail} (2/4)" in out


def test_a_changed_passthrough_argument_runs_everything_again(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "zz-order", *R1]) == 0
    assert main(["dummy", "zz-order", *R1, "--seed", "3"]) == 0
    assert len(fake.started()) == 4
    capsys.readouterr()
    assert main(["dummy", "zz-order", *R1]) == 0
    # As the original: every entry of the file counts in the "k/N" line.
    assert "4/2 evals already completed:" in capsys.readouterr().out


def test_no_resume_runs_everything_and_starts_a_fresh_record(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["dummy", "zz-glob", *R1]) == 0
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-c.dev.v0=1")
    assert main(["dummy", "zz-glob", *R1, "--no-resume", "--no-exit-on-error"]) == 1
    assert len(fake.started()) == 8
    recorded = [
        json.loads(x)[2]
        for x in progress_file(isolated, "dummy", "zz-glob").read_text().splitlines()
    ]
    assert recorded == ["zz-b.dev.v0", "zz-a.dev.v0", "zz-x1.v0"]


def _write_progress(isolated: Path, eval_set: str, text: str) -> Path:
    path = progress_file(isolated, "dummy", eval_set)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_empty_progress_file_is_no_progress(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_progress(isolated, "zz-chain", "")
    assert main(["dummy", "zz-chain", *R1]) == 0
    assert "Loaded progress" not in capsys.readouterr().out
    assert fake.keys() == ["zz-c.dev.v0"]


def test_compact_entries_and_blank_lines_are_read(fake: Fake, isolated: Path) -> None:
    entry = json.dumps(
        ["oaieval", "dummy", "zz-b.dev.v0", "--registry_path", str(REG1)], separators=(",", ":")
    )
    _write_progress(isolated, "zz-order", f"\n{entry}\n\n")
    assert main(["dummy", "zz-order", *R1]) == 0
    assert fake.keys() == ["zz-a.dev.v0"]


def test_a_corrupt_progress_line_is_an_error_and_the_file_is_untouched(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '["oaieval", "dummy", "zz-b.dev.v0"]\nnot json\n'
    path = _write_progress(isolated, "zz-order", text)
    assert main(["dummy", "zz-order", *R1]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"oaievalset: error: {path}:2: corrupt progress line"
    )
    assert path.read_text() == text and fake.started() == []


def test_no_resume_ignores_and_replaces_a_corrupt_file(fake: Fake, isolated: Path) -> None:
    path = _write_progress(isolated, "zz-chain", "not json\n")
    assert main(["dummy", "zz-chain", *R1, "--no-resume"]) == 0
    assert json.loads(path.read_text())[2] == "zz-c.dev.v0"


def test_foreign_entries_are_kept_and_a_string_entry_shows_as_the_original(
    fake: Fake, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_progress(isolated, "zz-chain", '"oaieval"\n["other", "cmd"]\n')
    assert main(["dummy", "zz-chain", *R1]) == 0
    assert "  o a i e v a l" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    assert lines[:2] == ['"oaieval"', '["other", "cmd"]'] and len(lines) == 3


def test_child_stdout_goes_to_a_log_not_the_terminal(
    fake: Fake, isolated: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["dummy", "zz-chain", *R1]) == 0
    out, err = capfd.readouterr()
    assert "stdout of zz-c.dev.v0" not in out
    assert "stderr of zz-c.dev.v0" in err
    logs = list((isolated / "dummy.zz-chain.progress.d" / "logs").glob("zz-c.dev.v0.*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "stdout of zz-c.dev.v0" in text and "stderr of zz-c.dev.v0" in text


def test_a_failure_stops_the_run_and_is_not_recorded(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-glob", *R1]) == 1
    assert fake.keys() == ["zz-b.dev.v0", "zz-a.dev.v0"]
    recorded = progress_file(isolated, "dummy", "zz-glob").read_text().splitlines()
    assert [json.loads(x)[2] for x in recorded] == ["zz-b.dev.v0"]
    out, err = capsys.readouterr()
    assert ">>> All done!" not in out
    assert "Traceback" not in err and "exit code 3" in err


def test_without_exit_on_error_failures_are_listed_not_recorded_and_retried(
    fake: Fake, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OAIEVAL_EXIT", "zz-a.dev.v0=3")
    assert main(["dummy", "zz-glob", *R1, "--no-exit-on-error"]) == 1
    assert len(fake.started()) == 4
    err = capsys.readouterr().err
    assert "1 eval(s) failed" in err and "zz-a.dev.v0" in err
    recorded = progress_file(isolated, "dummy", "zz-glob").read_text()
    assert "zz-a.dev.v0" not in recorded
    monkeypatch.delenv("FAKE_OAIEVAL_EXIT")
    assert main(["dummy", "zz-glob", *R1]) == 0
    assert fake.keys()[4:] == ["zz-a.dev.v0"]


def test_missing_oaieval_is_a_clear_error_and_writes_nothing(
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # Nor beside the Python running the tests, where oaievalset also looks.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere" / "python"))
    assert main(["dummy", "zz-chain", *R1]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith(">>> Running command: oaieval dummy zz-c.dev.v0")
    assert err.strip() == (
        "oaievalset: error: 'oaieval' not found on PATH; install oaievalset "
        "(it provides oaieval) or put an oaieval on PATH"
    )
    assert not isolated.exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"evals/a.yaml": "ww-a:\n  id: ww-nowhere\n"},
            "alias of 'ww-nowhere', which no registry root defines",
        ),
        (
            {"evals/a.yaml": "ww-a:\n  id: ww-b\nww-b:\n  id: ww-a\n"},
            "alias cycle (ww-a -> ww-b -> ww-a)",
        ),
        ({"evals/a.yaml": "ww-a:\n  description: x\n"}, "eval 'ww-a' has no 'class'"),
        ({"evals/a.yaml": "ww-a: ww-b\nww-b:\n  class: m:C\n"}, "entry 'ww-a' must be a mapping"),
        ({"evals/a.yaml": "ww-a: [\n"}, "cannot parse YAML"),
        ({"evals/a.yaml": "- a\n- b\n"}, "expected a mapping of names to specs"),
        (
            {"evals/a.yaml": "ww-a:\n  class: m:C\n", "evals/b.yaml": "ww-a:\n  class: m:D\n"},
            "eval 'ww-a' is defined twice",
        ),
    ],
)
def test_registry_errors_are_one_line_and_exit_2(
    fake: Fake,
    tmp_path: Path,
    files: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "reg"
    (root / "eval_sets").mkdir(parents=True)
    (root / "evals").mkdir()
    (root / "eval_sets" / "s.yaml").write_text("ww-set:\n  evals: [ww-a]\n")
    for name, text in files.items():
        (root / name).write_text(text)
    assert main(["dummy", "ww-set", "--registry_path", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert str(root) in err[0]
    assert fake.started() == []


@pytest.mark.parametrize(
    ("set_yaml", "message"),
    [
        ("ww-set:\n  description: x\n", "has no 'evals' list"),
        ("ww-set:\n  evals: ww-a\n", "'evals' must be a list of names"),
        ("ww-set:\n  id: ww-set\n", "alias cycle"),
    ],
)
def test_eval_set_shape_errors_exit_2(
    fake: Fake, tmp_path: Path, set_yaml: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "reg"
    (root / "eval_sets").mkdir(parents=True)
    (root / "eval_sets" / "s.yaml").write_text(set_yaml)
    assert main(["dummy", "ww-set", "--registry_path", str(root)]) == 2
    assert message in capsys.readouterr().err


def test_the_same_name_in_two_roots_names_both_files(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    (other / "evals").mkdir(parents=True)
    (other / "evals" / "x.yaml").write_text("zz-a.dev.v0:\n  class: m:C\n")
    assert main(["dummy", "zz-chain", *R1, "--registry_path", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(REG1 / "evals" / "zz.yaml") in err and str(other / "evals" / "x.yaml") in err


def test_no_api_key_is_needed_for_the_orchestrator(fake: Fake) -> None:
    assert "OPENAI_API_KEY" not in os.environ
    assert main(["dummy", "test-basic"]) == 0
