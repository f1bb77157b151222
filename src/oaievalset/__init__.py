"""Run a whole set of evals against one model: a light, faithful clone of openai/evals'
oaievalset."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["OaiEvalSetArguments", "Registry", "get_parser", "main", "run"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from oaievalset.cli import OaiEvalSetArguments, get_parser, main, run
    from oaievalset.registry import Registry


def __getattr__(name: str) -> object:  # the names below, for type checkers
    # The Python API of the original module, loaded on first use so that
    # `import oaievalset` (and the engine) stay quick to start.
    if name in ("OaiEvalSetArguments", "get_parser", "main", "run"):
        from oaievalset import cli

        return getattr(cli, name)
    if name == "Registry":
        from oaievalset.registry import Registry

        return Registry
    raise AttributeError(f"module 'oaievalset' has no attribute {name!r}")
