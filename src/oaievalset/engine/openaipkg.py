"""The `openai` package, imported with its type packages' `__init__` modules run when used.

Half of the import of `openai` is `openai.types` and its subpackages: their `__init__`
modules import, to re-export them, the package's thousand-odd request and response types,
of which an eval uses a few (those of chat completions, and the errors). Each of those
`__init__` modules does nothing but import from its own submodules (a test checks this for
the installed version), so running one when a name is first looked up in its package gives
the same package as running it at import: a submodule imported by its full name
(`openai.types.chat.chat_completion`) does not run it; `from openai.types.chat import
ChatCompletion`, or any other name looked up, does, once, and then finds the name.

This saves 0.15 to 0.2 s of each process that imports `openai`, the warm engine included.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from typing import Any

# The packages whose `__init__` runs when first used: this one and those under it.
DEFERRED = "openai.types"


def defer_types() -> None:
    """Have the packages of DEFERRED, when imported, run their `__init__` when used; to
    call before `import openai` (once it is imported, this changes nothing)."""
    if "openai" not in sys.modules and not any(
        isinstance(finder, _DeferredPackages) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _DeferredPackages())


class _DeferredPackages(importlib.abc.MetaPathFinder):
    """Finds the packages of DEFERRED as the path finder does, with a loader that defers."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != DEFERRED and not name.startswith(DEFERRED + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # a module, not a package (or not found): loaded as it is
        spec.loader = _DeferredInit(spec.loader)
        return spec


class _DeferredInit(importlib.abc.Loader):
    """Makes the package (its `__path__` set, so its submodules import) and runs its
    `__init__` at the first name looked up in it that it does not have yet."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        lock = threading.RLock()
        loader = self.loader
        ran = False

        def __getattr__(name: str) -> Any:
            nonlocal ran
            with lock:  # another thread waits here while the `__init__` runs
                if not ran:
                    ran = True  # a lookup of its own while it runs finds what is there
                    try:
                        loader.exec_module(module)
                    except BaseException:
                        ran = False  # the next lookup runs it again, as an import would
                        raise
                    if module.__dict__.get("__getattr__") is __getattr__:
                        del module.__dict__["__getattr__"]
            try:
                return module.__dict__[name]
            except KeyError:
                missing = f"module {module.__name__!r} has no attribute {name!r}"
                raise AttributeError(missing) from None

        module.__dict__["__getattr__"] = __getattr__
