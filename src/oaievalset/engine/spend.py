"""A spending cap shared by the evals of a set: a ledger file holds what the answers
received so far cost (in dollars, or in tokens), and no request is sent once it reaches
the limit. oaievalset creates the ledger for a run and names it, with the limit and the
prices, in `OAIEVAL_BUDGET` (JSON); every eval of the run adds to it and reads it, under
a file lock, so evals run side by side (or on the nodes of a cluster that share the
state folder) stop together. What overshoots is what was in flight."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from oaievalset.engine.errors import EngineError
from oaievalset.errors import EXIT_BUDGET, OaiEvalSetError
from oaievalset.ledger import add_locked, read_locked
from oaievalset.outcome import BUDGET


class BudgetSpent(OaiEvalSetError):
    """The run's budget is spent: no request is sent (exit 3)."""

    exit_code = EXIT_BUDGET


class Spend:
    """This eval's side of the ledger."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        try:
            self.ledger = str(settings["ledger"])
            self.limit = float(settings["limit"])
            self.unit = str(settings["unit"])  # "tokens" or "dollars"
            self.prices = {
                str(k): (float(v[0]), float(v[1])) for k, v in settings["prices"].items()
            }
            default = settings.get("default")
            self.default = None if default is None else (float(default[0]), float(default[1]))
            self._fd = os.open(self.ledger, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise EngineError(f"{BUDGET} is not a budget of oaievalset ({exc})") from None
        except OSError as exc:
            raise EngineError(f"{BUDGET}: cannot open the ledger ({exc.strerror})") from None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Before a request: raise BudgetSpent if the ledger has reached the limit."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                spent = read_locked(self._fd)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        if spent >= self.limit:
            raise BudgetSpent(f"the budget is spent: {self.describe(spent)}; no request sent")

    def add(self, model: str, usage: Any) -> None:
        """After an answer: add what it cost."""
        cost = self.cost(model, usage)
        if not cost:
            return
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                add_locked(self._fd, cost)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def cost(self, model: str, usage: Any) -> float:
        if not isinstance(usage, Mapping):
            return 0.0
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        if self.unit == "tokens":
            total = _count(usage, "total_tokens")
            return float(total or prompt + completion)
        price = self.prices.get(model, self.default)
        if price is None:
            return 0.0
        return (prompt * price[0] + completion * price[1]) / 1e6

    def describe(self, spent: float) -> str:
        from oaievalset.ledger import Budget

        return Budget(self.ledger, self.limit, self.unit).describe(spent)

    def close(self) -> None:
        os.close(self._fd)


def spend_from_env() -> Spend | None:
    text = os.environ.get(BUDGET)
    if not text:
        return None
    try:
        settings = json.loads(text)
    except ValueError:
        raise EngineError(f"{BUDGET} is not JSON; it is set by oaievalset") from None
    return Spend(settings)


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
