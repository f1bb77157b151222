"""Run a whole set of evals against one model: a light, faithful clone of openai/evals'
oaievalset."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["OaiEvalSetArguments", "Registry", "get_parser", "main", "run"]


def __getattr__(name: str) -> Any:
    # The Python API of the original module, loaded on first use so that
    # `import oaievalset` (and the engine) stay quick to start.
    if name in ("OaiEvalSetArguments", "get_parser", "main", "run"):
        from oaievalset import cli

        return getattr(cli, name)
    if name == "Registry":
        from oaievalset.registry import Registry

        return Registry
    raise AttributeError(f"module 'oaievalset' has no attribute {name!r}")
