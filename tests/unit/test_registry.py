"""The registry module: resolution rules and the cache of parsed files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.fake import REG1

from oaievalset import yamlio
from oaievalset.registry import Registry, pattern_to_regex


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("zz-*", "zz-a.dev.v0", True),
        ("zz-a.*", "zz-a.dev.v0", True),
        ("zz-a.*", "zz-ab", False),
        ("zz-[ab]", "zz-a", False),
        ("zz-[ab]", "zz-[ab]", True),
        ("a+b", "a+b", True),
        ("a+b", "aab", False),
        ("x?", "x?", True),
        ("*", "anything", True),
    ],
)
def test_only_star_is_special_in_a_pattern(pattern: str, name: str, matches: bool) -> None:
    import re

    assert bool(re.fullmatch(pattern_to_regex(pattern), name)) is matches


def test_get_evals_yields_in_registry_order_with_repeats_as_the_original() -> None:
    registry = Registry([REG1])
    keys = [spec.key for spec in registry.get_evals(["zz-a", "zz-b"])]
    assert keys == ["zz-b.dev.v0", "zz-a.dev.v0"]
    # An alias and its target both match: the original yields both, commands dedupe them.
    assert [s.key for s in registry.get_evals(["zz-a*"])] == ["zz-a.dev.v0", "zz-a.dev.v0"]


def test_files_are_read_sorted_by_name(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    for name in ("b.yaml", "a.yaml", "c.yaml"):
        (tmp_path / "evals" / name).write_text(f"e-{name[0]}:\n  class: m:C\n")
    (tmp_path / "eval_sets").mkdir()
    (tmp_path / "eval_sets" / "s.yaml").write_text('s:\n  evals: ["e-*"]\n')
    keys = [spec.key for spec in Registry([tmp_path]).resolve("s").evals]
    assert keys == ["e-a", "e-b", "e-c"]


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A registry whose files are cached at once (no wait for them to age)."""
    monkeypatch.setattr(yamlio, "_RACY", -1.0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "evals" / "e.yaml").write_text("ev-1:\n  class: m:A\n")
    return root


def test_the_cache_is_used_on_the_second_load(
    cached: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Registry([cached]).require_eval("ev-1").cls == "m:A"
    assert list((cached.parent / "cache" / "oaievalset").glob("yaml-*.marshal"))

    def no_parsing(path: Path) -> object:
        raise AssertionError(f"{path} was parsed again")

    # A cached entry is served without parsing: make parsing fail, and load again.
    monkeypatch.setattr(yamlio, "load_yaml", no_parsing)
    assert Registry([cached]).require_eval("ev-1").cls == "m:A"


def test_a_changed_file_is_never_served_stale(cached: Path) -> None:
    assert Registry([cached]).require_eval("ev-1").cls == "m:A"
    file = cached / "evals" / "e.yaml"
    before = file.stat()
    file.write_text("ev-1:\n  class: m:B\n")  # same size
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert file.stat().st_size == before.st_size
    assert Registry([cached]).require_eval("ev-1").cls == "m:B"


def test_the_cache_forgets_files_that_are_gone(cached: Path) -> None:
    import marshal

    extra = cached / "evals" / "extra.yaml"
    extra.write_text("ev-2:\n  class: m:C\n")
    assert Registry([cached]).require_eval("ev-2").cls == "m:C"
    (cache_file,) = (cached.parent / "cache" / "oaievalset").glob("yaml-*.marshal")
    assert str(extra) in marshal.loads(cache_file.read_bytes())
    extra.unlink()
    assert Registry([cached]).get_eval("ev-2") is None
    assert set(marshal.loads(cache_file.read_bytes())) == {str(cached / "evals" / "e.yaml")}


def test_no_cache_when_asked(cached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAIEVALSET_NO_CACHE", "1")
    assert Registry([cached]).require_eval("ev-1").cls == "m:A"
    assert not (cached.parent / "cache" / "oaievalset").exists()


def test_a_cache_write_that_fails_leaves_no_temporary_file(cached: Path) -> None:
    """The write fails for real (a file-size limit in a child process, as a full disk
    would): the registry still loads, and nothing is left in the cache folder."""
    import subprocess
    import sys
    import textwrap

    for i in range(200):  # enough entries that the cache file exceeds the limit below
        (cached / "evals" / f"f{i}.yaml").write_text(f"ev-{i}-x:\n  class: m:{'A' * 200}\n")
    child = textwrap.dedent(
        f"""
        import resource, signal
        from oaievalset import yamlio
        from oaievalset.registry import Registry
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        yamlio._RACY = -1.0
        print(Registry([{str(cached)!r}]).require_eval("ev-1").cls)
        """
    )
    cache = cached.parent / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "m:A"
    assert (cache / "oaievalset").is_dir()
    assert list((cache / "oaievalset").iterdir()) == []
