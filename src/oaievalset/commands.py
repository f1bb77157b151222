"""Pure: model, evals, extra arguments and registry paths -> ordered, de-duplicated commands,
and the short stable id by which the state folder names each command."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence

Command = list[str]


def build_commands(
    model: str,
    eval_keys: Iterable[str],
    passthrough: Sequence[str],
    registry_paths: Sequence[str] | None = None,
    run_command: str = "oaieval",
) -> list[Command]:
    """One command per eval key, in the order given, each identical command once.

    Each registry path is forwarded as its own `--registry_path P`: the original sends
    `--registry_path A B`, which its own oaieval rejects.
    """
    tail: list[str] = []
    for path in registry_paths or ():
        tail += ["--registry_path", path]
    commands: list[Command] = []
    seen: set[tuple[str, ...]] = set()
    for key in eval_keys:
        command = [run_command, model, key, *passthrough, *tail]
        frozen = tuple(command)
        if frozen not in seen:
            seen.add(frozen)
            commands.append(command)
    return commands


def eval_key(command: Sequence[str]) -> str:
    """The eval a command runs (its third element)."""
    return command[2] if len(command) > 2 else ""


@functools.lru_cache(maxsize=4096)
def _command_id(frozen: tuple[str, ...]) -> str:
    return hashlib.sha1("\0".join(frozen).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def command_id(command: Sequence[str]) -> str:
    """A short stable name for a command, for its claim, log and state entry."""
    return _command_id(tuple(command))
