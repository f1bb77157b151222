"""What the numbers of an eval's final report mean: which metric stands for the eval (its
headline), which are scores at all, and the one rule for numbers JSON cannot hold."""

from __future__ import annotations

import math
from typing import Any

HEADLINE_ORDER = ("accuracy", "score", "f1_score", "metascore")
# Not scores: the spread of a score, counts of choices, token sums.
NOT_SCORES = ("boostrap_std", "bootstrap_std")
NOT_SCORE_PREFIXES = ("usage_", "counts/")


def scores(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The metrics that are scores, in their order."""
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
        if k not in NOT_SCORES and not k.startswith(NOT_SCORE_PREFIXES)
    }


def headline(metrics: dict[str, Any]) -> tuple[str | None, float | None]:
    """The metric that stands for an eval: accuracy, score or f1_score, else its first
    score; (None, None) when it has none."""
    numbers = scores(metrics)
    for name in (*HEADLINE_ORDER, *numbers):
        if name in numbers:
            return name, float(numbers[name])
    return None, None


def finite(value: Any) -> Any:
    """NaN and infinities as None, everything else as it is: JSON has no NaN (the original's
    oaieval reports `boostrap_std: nan` for one sample)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
