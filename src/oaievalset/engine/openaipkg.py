"""The `openai` package, imported with the names its type packages re-export bound when used.

Half of the import of `openai` is `openai.types` and its subpackages: their `__init__`
modules import, to re-export them, the package's thousand-odd request and response types,
of which an eval uses a few (those of chat completions, and the errors). Such an
`__init__`, made only of `from .module import Name as Name` lines, is read here instead of
run: the package is made with its `__path__`, and each name it would re-export is imported
from its module the first time it is looked up (`from openai.types import FilePurpose`
imports `openai.types.file_purpose` alone), as is a submodule asked for by its name. A
package whose `__init__` does anything else is imported as it is. What a lookup gives is
what the `__init__` would have bound; `dir()` and `from ... import *` see every name it
binds.

This saves 0.15 to 0.2 s of each process that imports `openai`, the warm engine included.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any, Optional

# The packages whose re-exports are bound when used: this one and those under it.
DEFERRED = "openai.types"


def defer_types() -> None:
    """Have the packages of DEFERRED, when imported, bind their re-exports when used; to
    call before `import openai` (once it is imported, this changes nothing)."""
    if "openai" not in sys.modules and not any(
        isinstance(finder, DeferredPackages) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, DeferredPackages(DEFERRED))


class DeferredPackages(importlib.abc.MetaPathFinder):
    """Finds the package `prefix` and those under it as the path finder does; one whose
    `__init__` only re-exports gets a loader that binds each name when it is looked up."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != self.prefix and not name.startswith(self.prefix + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # a module, not a package (or not found): loaded as it is
        exports = _reexports(spec)
        if exports is not None:
            spec.loader = _BindWhenUsed(spec.loader, exports)
        return spec


# What a package's `__init__` binds: name -> (module, name in it; None for the module).
Exports = dict[str, tuple[str, Optional[str]]]


def _reexports(spec: importlib.machinery.ModuleSpec) -> Exports | None:
    """What the package's `__init__` binds, if it does nothing but import; None otherwise
    (or if it cannot be read: no source, a namespace package)."""
    if not spec.has_location or spec.origin is None:
        return None
    try:
        with open(spec.origin, "rb") as f:
            body = ast.parse(f.read()).body
    except (OSError, SyntaxError, ValueError):
        return None
    exports: Exports = {}
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if not isinstance(node, ast.ImportFrom):
            return None
        if node.module == "__future__" and node.level == 0:
            exports.update({alias.name: ("__future__", alias.name) for alias in node.names})
            continue
        if node.level == 0:
            return None  # an absolute import: anything might run
        where = importlib.util.resolve_name("." * node.level + (node.module or ""), spec.name)
        for alias in node.names:
            if alias.name == "*":
                return None
            bound = alias.asname or alias.name
            if where == spec.name:  # `from . import module`
                exports[bound] = (f"{spec.name}.{alias.name}", None)
            else:
                exports[bound] = (where, alias.name)
    # A name bound to something else than the submodule of that name: which of the two the
    # package holds would depend on what was imported first.
    for submodule in _submodules(spec.name, exports):
        itself = (f"{spec.name}.{submodule}", None)
        if exports.get(submodule, itself) != itself:
            return None
    return exports


def _submodules(package: str, exports: Exports) -> set[str]:
    """The submodules the `__init__` imports (and so binds in the package), by name."""
    inside = package + "."
    return {
        where[len(inside) :].partition(".")[0]
        for where, _ in exports.values()
        if where.startswith(inside)
    }


class _BindWhenUsed(importlib.abc.Loader):
    """Makes the package (its `__path__` set, so its submodules import) without running its
    `__init__`, and binds each of its re-exports at the first lookup of its name."""

    def __init__(self, loader: Any, exports: Exports) -> None:
        self.loader = loader
        self.exports = exports

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # get_source, get_resource_reader, ...

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        exports = self.exports
        package = module.__name__

        def __getattr__(name: str) -> Any:
            missing = AttributeError(f"module {package!r} has no attribute {name!r}")
            if name in exports:
                where, attribute = exports[name]
                value = _imported(where, attribute)
                module.__dict__[name] = value
                return value
            if name == "__all__":  # `from package import *`: every name, then the dict
                for each in exports.keys() - module.__dict__.keys():
                    __getattr__(each)
                raise missing
            if name.startswith("__") or not name.isidentifier():
                raise missing
            try:  # a submodule not imported yet, as `from package import name` finds it
                return importlib.import_module(f"{package}.{name}")
            except ImportError:  # none, or it fails: the `from` import says why
                raise missing from None

        def __dir__() -> list[str]:
            return sorted({*module.__dict__, *exports, *_submodules(package, exports)})

        module.__dict__["__getattr__"] = __getattr__
        module.__dict__["__dir__"] = __dir__


def _imported(where: str, attribute: str | None) -> Any:
    """What `from where import attribute` binds (the module `where` for None)."""
    imported = importlib.import_module(where)
    if attribute is None:
        return imported
    try:
        return getattr(imported, attribute)
    except AttributeError:
        return importlib.import_module(f"{where}.{attribute}")
