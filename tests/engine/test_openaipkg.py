"""The `openai` package as the engine imports it: its type packages' `__init__` modules run
when a name is first looked up, and the packages are then what a plain import gives."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

# Every package under openai.types, by what it holds once its `__init__` has run.
NAMES_OF_PACKAGES = """
import importlib, json, pkgutil, sys
{prologue}
import openai.types
names = {{}}
todo = ["openai.types"]
while todo:
    name = todo.pop()
    package = importlib.import_module(name)
    hasattr(package, "no_such_name")  # a lookup: runs a deferred __init__
    names[name] = sorted(n for n in vars(package) if n not in ("__getattr__", "__builtins__"))
    todo += [f"{{name}}.{{m.name}}" for m in pkgutil.iter_modules(package.__path__) if m.ispkg]
print(json.dumps(names))
"""

DEFER = "from oaievalset.engine.openaipkg import defer_types; defer_types(); import openai"


def python(code: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_type_packages_only_import_from_their_submodules() -> None:
    # What deferring their __init__ rests on: running one later changes nothing but when.
    types = Path(openai.__file__).parent / "types"
    inits = sorted(types.rglob("__init__.py"))
    assert len(inits) > 10
    for init in inits:
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            assert docstring or relative or future, f"{init}:{node.lineno}: {ast.dump(node)}"


def test_a_deferred_package_runs_its_init_at_the_first_lookup() -> None:
    seen = python(
        DEFER
        + """
import json, sys, openai
import openai.types.audio.transcription  # a submodule, by its full name: no __init__ yet
audio, transcription = (sys.modules[f"openai.types.audio{m}"] for m in ("", ".transcription"))
before = ["Batch" in vars(openai.types), "Transcription" in vars(audio)]
from openai.types.audio import Transcription  # a name: the package's __init__ runs
try:
    openai.types.no_such_name  # and this one runs the __init__ of openai.types
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({
    "before": before,
    "same": Transcription is transcription.Transcription,
    "after": ["Batch" in vars(openai.types), "TranslationCreateParams" in vars(audio)],
    "missing": missing,
    "hook": ["__getattr__" in vars(openai.types), "__getattr__" in vars(audio)],
}))
"""
    )
    assert seen["before"] == [False, False]
    assert seen["same"] is True
    assert seen["after"] == [True, True]
    assert seen["missing"] == "module 'openai.types' has no attribute 'no_such_name'"
    assert seen["hook"] == [False, False]


def test_deferred_packages_end_as_a_plain_import_makes_them() -> None:
    deferred = python(NAMES_OF_PACKAGES.format(prologue=DEFER))
    plain = python(NAMES_OF_PACKAGES.format(prologue=""))
    assert len(plain) > 10
    assert deferred == plain


def test_threads_that_look_up_at_once_all_find_their_name() -> None:
    # The first lookup runs the __init__ (a tenth of a second); the others wait for it.
    seen = python(
        DEFER
        + """
import json, threading, openai
barrier = threading.Barrier(8)
found = []
def look(name):
    barrier.wait()
    found.append(getattr(openai.types, name).__name__)
names = ["Batch", "Completion", "Embedding", "FileObject", "Image", "Model", "Moderation",
         "VectorStore"]
threads = [threading.Thread(target=look, args=(name,)) for name in names]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(sorted(found)))
"""
    )
    assert seen == sorted(
        ["Batch", "Completion", "Embedding", "FileObject", "Image", "Model", "Moderation",
         "VectorStore"]
    )  # fmt: skip
