"""The registry of openai/evals 3.0.1.post1, taken from its wheel on PyPI (YAML files and the
data of its test evals), for tests and benchmarks that check we read it as the original."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "3.0.1.post1"
WHEEL = f"evals-{VERSION}-py3-none-any.whl"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "oaievalset-tests"


def openai_evals_registry(cache: Path = CACHE) -> Path:
    """The path of the extracted registry, downloading the wheel once (about 46 MB).

    Raises RuntimeError when the wheel cannot be had (no access to PyPI).
    """
    target = cache / f"evals-{VERSION}" / "registry"
    if (target / ".complete").exists():
        return target
    wheel = Path(os.environ.get("OAIEVALSET_EVALS_WHEEL", cache / WHEEL))
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", "-d", str(cache), f"evals=={VERSION}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0 or not wheel.exists():
            raise RuntimeError(f"could not download evals=={VERSION}: {done.stderr.strip()}")
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            inside = name.removeprefix("evals/registry/")
            if inside == name:
                continue
            keep = inside.startswith(("evals/", "eval_sets/")) and inside.endswith(".yaml")
            keep = keep or inside.startswith("data/test_fuzzy_match/")
            if keep:
                archive.extract(name, cache / f"evals-{VERSION}" / "_unpack")
    unpacked = cache / f"evals-{VERSION}" / "_unpack" / "evals" / "registry"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    unpacked.rename(target)
    (target / ".complete").write_text("")
    return target
