"""Hugging Face datasets for the benchmark evals: the registry's `hf://` URLs read through the
`datasets` library (the optional `hf` extra), with errors that say what to do.

The data is loaded as any `datasets` program loads it, so the user's cache
(`HF_HOME`, `HF_DATASETS_CACHE`), its offline mode (`HF_DATASETS_OFFLINE=1`) and a local
folder named like the dataset in the working directory all work as they do for the
original.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from oaievalset.engine.errors import EngineError

EXTRA_HINT = "pip install 'oaievalset[hf]'"

# Datasets of the openai/evals 3.0.1.post1 registry that the Hugging Face hub has moved or
# renamed since: where a copy can be had today.
MOVED = {
    "hendrycks_test": "cais/mmlu",
    "hellaswag": "Rowan/hellaswag",
    "mmmu/mmmu": "MMMU/MMMU",
}


@dataclass(frozen=True)
class HfDataset:
    """A dataset named by an `hf://PATH?name=CONFIG&split=SPLIT` URL: the path and the
    keyword arguments of `datasets.load_dataset`, as the original reads them."""

    path: str
    kwargs: dict[str, str]

    def described(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"'{self.path}'" + (f" ({given})" if given else "")

    def with_path(self, path: str) -> str:
        """This dataset's URL with another path, to suggest in an error."""
        query = "&".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"hf://{path}" + (f"?{query}" if query else "")


def parse_url(url: Any, eval_name: str) -> HfDataset:
    """The dataset of an `hf://` URL. The path is what follows `hf://` up to the query
    (`hendrycks_test`, `cais/mmlu`); each query parameter is passed on, its first value
    only, as the original passes them."""
    if not isinstance(url, str) or urlparse(url).scheme != "hf":
        raise EngineError(
            f"eval '{eval_name}': dataset {url!r} is not a Hugging Face dataset URL; write "
            f"it as hf://DATASET?name=CONFIG&split=SPLIT"
        )
    parsed = urlparse(url)
    path = parsed.netloc + parsed.path.rstrip("/")
    if not path:
        raise EngineError(f"eval '{eval_name}': dataset '{url}' names no dataset after hf://")
    kwargs = {key: values[0] for key, values in parse_qs(parsed.query).items()}
    return HfDataset(path, kwargs)


def datasets_module(eval_name: str) -> Any:
    """The `datasets` package, or an error naming the extra that installs it."""
    try:
        return importlib.import_module("datasets")
    except ImportError:
        raise EngineError(
            f"eval '{eval_name}' reads a Hugging Face dataset, which needs the 'datasets' "
            f"package: {EXTRA_HINT}"
        ) from None


def load_rows(dataset: HfDataset, eval_name: str) -> list[dict[str, Any]]:
    """The rows of one split of the dataset, in its order, as dicts."""
    datasets = datasets_module(eval_name)
    if logging.getLogger("oaieval").getEffectiveLevel() > logging.INFO:
        # Asked quietly (oaievalset --plan runs the eval to count its requests): without
        # the progress bars datasets draws on stderr.
        datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(dataset.path, **dataset.kwargs)
        # Rows are decoded as they are read (images by Pillow): inside, for the same errors.
        rows = None if isinstance(loaded, dict) else [dict(row) for row in loaded]
    except ImportError as exc:  # a feature's decoder, such as Pillow for images
        raise EngineError(
            f"eval '{eval_name}': dataset {dataset.described()} needs a package that is not "
            f"installed ({exc}); {EXTRA_HINT}"
        ) from None
    except Exception as exc:  # datasets raises many kinds, all meaning "not loaded"
        raise EngineError(_not_loaded(dataset, eval_name, exc)) from None
    if rows is None:  # a DatasetDict: no split was chosen
        splits = ", ".join(sorted(loaded))
        raise EngineError(
            f"eval '{eval_name}': dataset {dataset.described()} has several splits ({splits}); "
            f"choose one with split=NAME in its URL"
        )
    return rows


def _not_loaded(dataset: HfDataset, eval_name: str, exc: Exception) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    message = f"eval '{eval_name}': cannot load Hugging Face dataset {dataset.described()}: "
    message += reason.rstrip(".")
    if not isinstance(exc, (ConnectionError, FileNotFoundError)):
        return message  # found, but not as the eval wants it (a config, a split)
    moved = MOVED.get(dataset.path)
    if moved is not None:
        return message + (
            f"; the hub has this dataset as '{moved}' today: in a registry of your own, give "
            f"the eval dataset: {dataset.with_path(moved)}, or keep a copy of the data in a "
            f"folder '{dataset.path}' in the working directory"
        )
    return message + (
        "; without network, the data must be in the Hugging Face cache "
        "(HF_DATASETS_OFFLINE=1) or in a folder named like the dataset in the working "
        "directory"
    )
