"""The ledger of a run's spending cap: one file holding what the answers received so far
cost, as one little-endian double, read and written under a file lock. oaievalset creates
it at 0 for a run with --max-cost or --max-tokens; every eval of the run (engine/spend.py)
adds to it. Here, what both sides share: the file's format."""

from __future__ import annotations

import fcntl
import os
import struct

SPENT = struct.Struct("<d")


def new_ledger(path: str) -> None:
    """A ledger at 0, for a run that starts (its folder made if need be)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(SPENT.pack(0.0))


def read_ledger(path: str) -> float:
    """What the ledger says was spent (0 for a missing or empty one)."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            data = f.read(SPENT.size)
    except FileNotFoundError:
        return 0.0
    return SPENT.unpack(data)[0] if len(data) == SPENT.size else 0.0


def read_locked(fd: int) -> float:
    """What an open ledger holds; the caller holds its lock."""
    data = os.pread(fd, SPENT.size, 0)
    return SPENT.unpack(data)[0] if len(data) == SPENT.size else 0.0


def add_locked(fd: int, amount: float) -> None:
    """Add to an open ledger; the caller holds its lock exclusively."""
    os.pwrite(fd, SPENT.pack(read_locked(fd) + amount), 0)


class Budget:
    """A run's cap: its ledger, its limit in `unit` ("dollars" or "tokens"), and the prices
    per million input and output tokens by model (`default`: the set's model's), which
    each eval is given in OAIEVAL_BUDGET."""

    def __init__(
        self,
        ledger: str,
        limit: float,
        unit: str,
        prices: dict[str, tuple[float, float]] | None = None,
        default: tuple[float, float] | None = None,
    ) -> None:
        self.ledger = ledger
        self.limit = limit
        self.unit = unit
        self.prices = prices or {}
        self.default = default

    @property
    def flag(self) -> str:
        return "--max-cost" if self.unit == "dollars" else "--max-tokens"

    def env(self) -> str:
        import json

        return json.dumps(
            {"ledger": self.ledger, "limit": self.limit, "unit": self.unit,
             "prices": self.prices, "default": self.default}
        )  # fmt: skip

    def spent(self) -> float:
        return read_ledger(self.ledger)

    def is_spent(self) -> bool:
        return self.spent() >= self.limit

    def describe(self, spent: float | None = None) -> str:
        spent = self.spent() if spent is None else spent
        if self.unit == "tokens":
            return f"{spent:,.0f} of {self.limit:,.0f} tokens"
        return f"${spent:.4f} of ${self.limit:.2f}"
