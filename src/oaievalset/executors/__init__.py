"""Where evals run: the backends, by name.

A backend is a module of this folder with `NAME`, `DESCRIPTION`, an `Options` type, and
three functions: `add_arguments(group)` declares its flags (each beginning with its name),
`options(values)` builds its Options from the parsed values, and `create(options,
state_dir)` returns an executor (base.Executor) or raises a one-line LaunchError when it
cannot reach what it runs on. Adding a backend is a module here and a line below.
"""

from __future__ import annotations

import argparse
from types import ModuleType

BACKENDS = {  # name -> module; the first is the default
    "local": "oaievalset.executors.local",
    "slurm": "oaievalset.executors.slurm",
    "ray": "oaievalset.executors.ray",
}
DEFAULT = "local"


def backend(name: str) -> ModuleType:
    """The module of a backend named in BACKENDS."""
    # __import__ rather than importlib.import_module: the importlib package is not loaded
    # at start-up, and loading it would cost every command a millisecond.
    return __import__(BACKENDS[name], fromlist=["NAME"])


def add_arguments(parser: argparse.ArgumentParser, group: argparse._ArgumentGroup) -> None:
    """`--executor`, then each backend's flags in a group of its own."""
    modules = {name: backend(name) for name in BACKENDS}
    group.add_argument(
        "--executor",
        choices=tuple(BACKENDS),
        default=DEFAULT,
        help="Where the evals run: "
        + "; ".join(f"{name}: {m.DESCRIPTION}" for name, m in modules.items())
        + ".",
    )
    for name, module in modules.items():
        module.add_arguments(parser.add_argument_group(f"with --executor {name}"))
