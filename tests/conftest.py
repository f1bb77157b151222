"""Fixtures for every suite: an isolated progress folder and home, and a fake `oaieval` on
PATH. What the tests share besides fixtures is in helpers/."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake import REG1, Fake, install_fake

# Started as a background job (`pytest &`), the shell makes this process ignore SIGINT,
# which every child would inherit through exec: the tests that send SIGINT would see it
# ignored. With a handler here, children start with SIGINT's default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
        "FAKE_OAIEVAL_RECORD_FOR",
        "FAKE_OAIEVAL_RECORD_DIR",
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


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """The fake oaieval, first on PATH, logging to a file of the test's own."""
    bin_dir = tmp_path / "bin"
    install_fake(bin_dir)
    log = tmp_path / "fake-oaieval.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OAIEVAL_LOG", str(log))
    return Fake(bin=bin_dir, log=log)


@pytest.fixture
def reg1() -> Iterator[str]:
    yield str(REG1)
