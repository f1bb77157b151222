"""Prices per million tokens: a model's standard price, a service tier's, the Batch API's."""

from __future__ import annotations

from pathlib import Path

import pytest

from oaievalset.errors import UsageError
from oaievalset.prices import batch_price, load_prices, tier_key


def test_a_batch_price_in_the_file_is_taken_else_half_the_standard_one(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "m: {input: 2, output: 8, batch: {input: 0.5, output: 3}}\n"
        "n: {input: 1, output: 4, flex: {input: 0.5, output: 2}}\n"
    )
    prices = load_prices(str(path))
    assert prices["m"] == (2.0, 8.0) and prices[tier_key("m", "batch")] == (0.5, 3.0)
    assert batch_price(prices, "m") == (0.5, 3.0)
    assert batch_price(prices, "n") == (0.5, 2.0), "half of n's standard price, not flex's"
    assert batch_price(prices, "other") is None
    assert batch_price(None, "m") is None


def test_a_batch_price_without_output_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("m: {input: 2, output: 8, batch: {input: 1}}\n")
    with pytest.raises(
        UsageError, match="model 'm', its 'batch' price, needs `input` and `output`"
    ):
        load_prices(str(path))
