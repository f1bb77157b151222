"""Prices per million tokens, per model, from a YAML file; and what tokens cost."""

from __future__ import annotations

from pathlib import Path

from oaievalset.errors import OaiEvalSetError, UsageError
from oaievalset.records import Usage

Price = tuple[float, float]  # dollars per million input and output tokens


def load_prices(path: str) -> dict[str, Price]:
    """`model: {input: 2.5, output: 10}`: dollars per million input and output tokens."""
    from oaievalset.yamlio import load_yaml

    try:
        data = load_yaml(Path(path))
    except OaiEvalSetError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the prices ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected `model: {{input: N, output: N}}` entries")
    prices = {}
    for model, entry in data.items():
        try:
            prices[str(model)] = (float(entry["input"]), float(entry["output"]))
        except (TypeError, KeyError, ValueError):
            raise UsageError(
                f"{path}: model '{model}' needs `input` and `output` prices in dollars per "
                f"million tokens, e.g. {{input: 2.5, output: 10}}"
            ) from None
    return prices


def cost_of(usage: Usage | None, price: Price | None) -> float | None:
    """Dollars, from prices per million input and output tokens."""
    if usage is None or price is None:
        return None
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6
