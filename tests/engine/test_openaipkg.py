"""The `openai` package as the engine imports it: the names its type packages re-export are
bound when first looked up, and the packages then hold what a plain import gives them. On a
package made for the test (the same files imported both ways), and on the installed openai."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oaievalset.engine.openaipkg import DeferredPackages

# A package of re-exports, as openai's type packages are, with what has broken such a
# scheme before: a submodule that looks up a sibling in its package (`from . import b`)
# while the package's `__init__` has not run yet (openai 1.104 to 3.3's `responses`).
PACKAGE = {
    "__init__.py": '"""Re-exports."""\n'
    "from __future__ import annotations\n"
    "from .a import A as A\n"
    "from .b import B, helper as aid\n"
    "from . import c\n"
    "from .sub import S as S\n"
    "from .sub.deep import D as D\n"
    "from .runs import extra as extra\n",
    "a.py": "from . import b\nA = ('A', b.B)\n",
    "b.py": "B = 'B'\ndef helper():\n    return 'helped'\n",
    "c.py": "C = 'C'\n",
    "unlisted.py": "U = 'U'\n",
    "sub/__init__.py": "from .s import S as S\nfrom ..b import B as B2\n",  # two levels up
    "broken.py": "import no_such_dependency\n",  # a submodule that cannot be imported
    "sub/s.py": "S = 'S'\n",
    "sub/deep.py": "D = 'D'\n",
    # An __init__ that does more than import: run at the import, as it would be.
    "runs/__init__.py": "from .b import B as B\nRAN = True\n",
    "runs/b.py": "B = 'runs.B'\n",
    "runs/extra.py": "E = 'E'\n",  # a submodule its __init__ does not import
    # A name bound to an object and also the submodule of that name: imported as it is.
    "clash/__init__.py": "from .x import x as x\n",
    "clash/x.py": "def x():\n    return 'x'\n",
}


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """The package imported plainly (`plain_pkg`) and deferred (`deferred_pkg`)."""
    for name in ("plain_pkg", "deferred_pkg"):
        for path, text in PACKAGE.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = DeferredPackages("deferred_pkg")
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("deferred_pkg.a")  # first: its `from . import b` must work
        yield importlib.import_module("plain_pkg"), sys.modules["deferred_pkg"]
    finally:
        sys.meta_path.remove(finder)
        for name in list(sys.modules):
            if name.split(".")[0] in ("plain_pkg", "deferred_pkg"):
                del sys.modules[name]


def described(value: Any) -> str:
    """What a name is bound to, the same for both packages."""
    if isinstance(value, type(sys)):
        return "module " + value.__name__.partition(".")[2]
    return repr(value() if callable(value) else value)


def public(namespace: dict[str, Any]) -> dict[str, str]:
    return {k: described(v) for k, v in namespace.items() if not k.startswith("_")}


def test_a_name_is_bound_at_its_first_lookup(packages: tuple[Any, Any]) -> None:
    plain, deferred = packages
    assert "A" not in vars(deferred) and "B" not in vars(deferred)
    assert deferred.A == plain.A == ("A", "B")
    names: dict[str, Any] = {}
    exec("from deferred_pkg import B, aid", names)
    assert (names["B"], names["aid"]()) == ("B", "helped")
    assert deferred.c is sys.modules["deferred_pkg.c"]
    assert (deferred.S, deferred.D, deferred.sub.B2) == ("S", "D", "B")
    assert deferred.extra.E == "E" and deferred.extra is sys.modules["deferred_pkg.runs.extra"]
    assert "A" in vars(deferred)
    assert deferred.unlisted.U == "U"  # a submodule the __init__ does not import
    with pytest.raises(AttributeError, match="module 'deferred_pkg' has no attribute 'nope'"):
        deferred.nope  # noqa: B018
    # A submodule that fails to import: no such attribute, and its import says why.
    assert hasattr(deferred, "broken") is hasattr(plain, "broken") is False
    for package in ("plain_pkg", "deferred_pkg"):
        with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
            exec(f"from {package} import broken", {})


def test_dir_and_a_star_import_see_every_name(packages: tuple[Any, Any]) -> None:
    plain, deferred = packages
    assert [n for n in dir(deferred) if not n.startswith("_")] == [
        n for n in dir(plain) if not n.startswith("_")
    ]
    plain.A = deferred.A = "patched"  # a name set since: a star import leaves it
    star: dict[str, Any] = {}
    exec("from deferred_pkg import *", star)
    expected: dict[str, Any] = {}
    exec("from plain_pkg import *", expected)
    assert public(star) == public(expected) and star["A"] == "patched"
    assert public(vars(deferred)) == public(vars(plain))


def test_an_init_that_does_more_than_import_runs_at_the_import(
    packages: tuple[Any, Any],
) -> None:
    runs, clash = (importlib.import_module(f"deferred_pkg.{name}") for name in ("runs", "clash"))
    assert vars(runs)["RAN"] is True and "__getattr__" not in vars(runs)
    assert "__getattr__" not in vars(clash) and clash.x() == "x"


openai_installed = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="openai is not installed"
)

DEFER = "from oaievalset.engine.openaipkg import defer_types; defer_types(); import openai\n"

# Every package under openai.types: each name it holds once all are bound, described.
NAMES_OF_PACKAGES = """
import importlib, json, pkgutil, sys
import openai.types
def described(v):
    if isinstance(v, type(sys)):
        return ["module", v.__name__]
    if type(v).__module__ in ("typing", "typing_extensions"):  # an alias: Union[...], ...
        return [type(v).__name__, repr(v)]
    return [type(v).__name__, getattr(v, "__module__", None), getattr(v, "__qualname__", None)]
names = {}
todo = ["openai.types"]
while todo:
    name = todo.pop()
    package = importlib.import_module(name)
    exec(f"from {name} import *", {})  # binds every name of a deferred package
    names[name] = {k: described(v) for k, v in vars(package).items() if not k.startswith("_")}
    todo += [f"{name}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.ispkg]
print(json.dumps(names, sort_keys=True))
"""


def python(code: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@openai_installed
def test_the_client_works_with_openai_types_deferred() -> None:
    seen = python(
        DEFER
        + """
import functools, json
client = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
resources = [n for n, v in vars(type(client)).items() if isinstance(v, functools.cached_property)]
failed = []
for name in resources:
    try:
        getattr(client, name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
from openai.types.chat import ChatCompletion
answer = ChatCompletion.model_validate({"id": "1", "object": "chat.completion", "created": 0,
    "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
    "message": {"role": "assistant", "content": "hi"}}]})
print(json.dumps({"deferred": "__getattr__" in vars(openai.types), "resources": len(resources),
                  "failed": failed, "answer": answer.choices[0].message.content}))
"""
    )
    assert seen["deferred"] is True, "openai.types is imported as it is: no time saved"
    assert seen["resources"] > 5 and seen["failed"] == []
    assert seen["answer"] == "hi"


@openai_installed
def test_openai_types_end_as_a_plain_import_makes_them() -> None:
    deferred = python(DEFER + NAMES_OF_PACKAGES)
    plain = python(NAMES_OF_PACKAGES)
    assert len(plain) > 10 and sum(map(len, plain.values())) > 500
    assert deferred == plain


@openai_installed
def test_threads_that_look_up_at_once_all_find_their_name() -> None:
    names = ["Batch", "Completion", "Embedding", "FileObject", "Image", "Model", "Moderation"]
    seen = python(
        DEFER
        + f"""
import json, threading
barrier = threading.Barrier({len(names)})
found = []
def look(name):
    barrier.wait()
    found.append(getattr(openai.types, name).__name__)
threads = [threading.Thread(target=look, args=(name,)) for name in {names!r}]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(sorted(found)))
"""
    )
    assert seen == sorted(names)
