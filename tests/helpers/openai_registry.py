"""openai/evals 3.0.1.post1 from PyPI, for tests and benchmarks that compare us with it: its
registry (taken from its wheel: YAML files and the data of its test evals), and the original
itself installed in a virtual environment of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "3.0.1.post1"
WHEEL = f"evals-{VERSION}-py3-none-any.whl"
# What the original's import needs, beside its own wheel (installed with --no-deps: its
# declared dependencies are about 200 packages).
ORIGINAL_DEPS = [
    "pyyaml",
    "blobfile",
    "requests",
    "pydantic",
    "lz4",
    "zstandard",
    "openai",
    "backoff",
    "tqdm",
    "tiktoken",
    "numpy",
]


def original_venv(where: Path) -> Path:
    """A virtual environment with the original installed: ORIGINAL_VENV if set, else
    `where/original`, made once. Raises RuntimeError when it cannot be installed."""
    given = os.environ.get("ORIGINAL_VENV")
    if given:
        return Path(given)
    venv = where / "original"
    if (venv / ".complete").exists():
        return venv
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
         f"evals=={VERSION}"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *ORIGINAL_DEPS],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not install the original: {done.stderr.strip()[-500:]}")
    (venv / ".complete").write_text("")
    return venv


def openai_evals_registry(cache: Path) -> Path:
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
