"""The Python API of the original module: run, OaiEvalSetArguments, get_parser, main, Registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.fake import REG1, Fake

import oaievalset
from oaievalset import OaiEvalSetArguments, Registry, get_parser, run
from oaievalset.registry import bundled_registry_path

if TYPE_CHECKING:
    from oaievalset.executors.base import Job


def test_run_takes_the_originals_arguments(fake: Fake) -> None:
    args, unknown = get_parser().parse_known_args(
        ["dummy", "zz-order", "--seed", "1"], namespace=OaiEvalSetArguments()
    )
    assert unknown == ["--seed", "1"]
    # The set is found through the registry given, and no --registry_path is forwarded.
    registry = Registry()
    registry.add_registry_paths([REG1])
    assert run(args, unknown, registry=registry) == 0
    assert fake.started()[0] == ["dummy", "zz-b.dev.v0", "--seed", "1"]


def test_run_accepts_a_namespace_made_for_the_original(fake: Fake) -> None:
    # Built as the original's parser builds it: no attributes for our own flags.
    args = OaiEvalSetArguments(
        model="dummy", eval_set="zz-chain", registry_path=[str(REG1)], resume=True,
        exit_on_error=True,
    )  # fmt: skip
    assert run(args, []) == 0
    assert fake.keys() == ["zz-c.dev.v0"]


def test_run_command_replaces_oaieval(fake: Fake) -> None:
    args = OaiEvalSetArguments(
        model="dummy", eval_set="zz-chain", registry_path=[str(REG1)], resume=True,
        exit_on_error=True,
    )  # fmt: skip
    assert run(args, [], run_command=str(fake.bin / "oaieval")) == 0
    assert fake.keys() == ["zz-c.dev.v0"]


def test_main_is_exported() -> None:
    assert oaievalset.main is not None and callable(oaievalset.main)


def test_the_bundled_registry_ships_with_the_package() -> None:
    root = bundled_registry_path()
    assert (root / "eval_sets").is_dir() and (root / "evals").is_dir()
    assert (root / "data" / "test_basic" / "samples.jsonl").is_file()
    installed = Path(oaievalset.__file__).parent / "registry"
    if "site-packages" in str(installed):  # a wheel install, as in CI
        assert root == installed


def test_a_bug_mid_run_still_ends_the_run_then_shows_its_traceback(
    fake: Fake,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An executor of the caller's that fails as a bug would, at the third eval: the
    running eval is stopped, the table and the report are written, then the error rises."""
    import json

    from helpers.processes import alive

    from oaievalset.executors.base import JobSpec
    from oaievalset.executors.local import SubprocessExecutor

    class Broken(SubprocessExecutor):
        def start(self, spec: JobSpec) -> Job:
            if spec.command[2] == "zz-c.dev.v0":
                raise RuntimeError("a bug in the executor")
            return super().start(spec)

    monkeypatch.setenv("FAKE_OAIEVAL_SLEEP_FOR", "zz-a.dev.v0=30")
    args = OaiEvalSetArguments(
        model="dummy", eval_set="zz-glob", registry_path=[str(REG1)], resume=True,
        exit_on_error=True, jobs=2,
    )  # fmt: skip
    executor = Broken()
    try:
        with pytest.raises(RuntimeError, match="a bug in the executor"):
            run(args, [], executor=executor)
    finally:
        executor.close()
    err = capsys.readouterr().err
    rows = {line.split()[0]: line.split()[1] for line in err.splitlines() if line.startswith("zz-")}
    assert rows == {"zz-b.dev.v0": "done", "zz-a.dev.v0": "interrupted",
                    "zz-c.dev.v0": "failed", "zz-x1.v0": "not"}  # fmt: skip
    report = json.loads((isolated / "dummy.zz-glob.progress.d" / "report.json").read_text())
    assert report["state"] == "ended" and report["exit_code"] == 1
    assert not any(alive(e["pid"]) for e in fake.events() if e["event"] == "start")
