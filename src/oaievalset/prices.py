"""Prices per million tokens, per model, from a YAML file; and what tokens cost."""

from __future__ import annotations

import math
from pathlib import Path

from oaievalset.errors import OaiEvalSetError, UsageError
from oaievalset.records import Usage

Price = tuple[float, float]  # dollars per million input and output tokens


def load_prices(path: str) -> dict[str, Price]:
    """`model: {input: 2.5, output: 10}`: dollars per million input and output tokens. A
    service tier's prices may come with them, `flex: {input: 1.25, output: 5}`, and are
    kept as `model@flex` (see `tier_key`)."""
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
    for model, entry in list(data.items()):
        if isinstance(entry, dict):
            for tier, tiered in entry.items():
                if isinstance(tiered, dict):  # a service tier's own prices
                    data[tier_key(str(model), str(tier))] = tiered
    for model, entry in data.items():
        try:
            prices[str(model)] = (float(entry["input"]), float(entry["output"]))
        except (TypeError, KeyError, ValueError):
            name, _, tier = str(model).partition("@")
            what = f"model '{name}'" + (f", its '{tier}' price," if tier else "")
            raise UsageError(
                f"{path}: {what} needs `input` and `output` prices in dollars per "
                f"million tokens, e.g. {{input: 2.5, output: 10}}"
            ) from None
        if not all(0 <= p < math.inf for p in prices[str(model)]):
            raise UsageError(
                f"{path}: model '{model}' has a price below 0 or not a number "
                f"({entry['input']}, {entry['output']}); give dollars per million tokens, "
                f"0 or more"
            )
    return prices


BATCH_TIER = "batch"  # the Batch API's prices, `model: {..., batch: {input: N, output: N}}`


def batch_price(prices: dict[str, Price] | None, model: str) -> Price | None:
    """What a model's tokens cost through the Batch API: its `batch` price in the prices
    file, else half its standard price (the Batch API's discount)."""
    if not prices:
        return None
    given = prices.get(tier_key(model, BATCH_TIER))
    if given is not None:
        return given
    standard = prices.get(model)
    return None if standard is None else (standard[0] / 2, standard[1] / 2)


def tier_key(model: str, tier: str) -> str:
    """Where a service tier's prices of a model are kept among the prices."""
    return f"{model}@{tier}"


def service_tier(passthrough: list[str]) -> str | None:
    """The `service_tier` that `--completion_args` sets for every request, if any."""
    for i, arg in enumerate(passthrough):
        value = None
        if arg == "--completion_args" and i + 1 < len(passthrough):
            value = passthrough[i + 1]
        elif arg.startswith("--completion_args="):
            value = arg.partition("=")[2]
        for pair in (value or "").split(","):
            key, _, tier = pair.partition("=")
            if key.strip() == "service_tier" and tier.strip():
                return tier.strip()
    return None


def cost_of(usage: Usage | None, price: Price | None) -> float | None:
    """Dollars, from prices per million input and output tokens."""
    if usage is None or price is None:
        return None
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6


def format_cost(dollars: float | None) -> str:
    """`$0.0123`; a cost too small for four decimals with two significant digits
    (`$0.0000032`), never `$0.0000` for a cost that is not zero; `-` for none."""
    if dollars is None:
        return "-"
    if dollars == 0 or abs(dollars) >= 0.0001:
        return f"${dollars:.4f}"
    decimals = 1 - math.floor(math.log10(abs(dollars)))
    return f"${dollars:.{decimals}f}"
