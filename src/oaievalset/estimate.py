"""What a command would ask before it runs: its requests and an estimate of their tokens.

The eval is run for real by our engine, with a completion function that answers nothing
and counts what it is asked (so few-shot prompts, model-graded prompts and every class's
own way of asking are counted as they will be sent; a grader's prompt is counted without
the answer it will quote). Tokens are estimated from characters (no tokenizer is
downloaded at run time), unless an earlier run of the same eval recorded its usage: then
its tokens per sample, input and output, are used."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from oaievalset.records import RecordSummary

CHARS_PER_TOKEN = 4.0  # English text in the GPT tokenizers, roughly
TOKENS_PER_MESSAGE = 4  # the chat format's own tokens around each message, roughly
# An image part (MMMU's): what OpenAI's models count for an image of up to 1024 x 1024 at
# high detail, not the characters of its base64 data URL.
TOKENS_PER_IMAGE = 765


class Estimate(NamedTuple):
    """A command's requests and tokens, and how they were found."""

    samples: int
    requests: int
    answered: int  # of the requests, those its answer journal has already
    input_tokens: int
    output_tokens: int | None  # known only from an earlier run
    method: str

    def cost(self, price: tuple[float, float] | None) -> float | None:
        if price is None:
            return None
        output = self.output_tokens or 0
        return (self.input_tokens * price[0] + output * price[1]) / 1e6

    def as_dict(self, price: tuple[float, float] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = dict(self._asdict())
        data["cost"] = self.cost(price)
        return data


class _Counter:
    """A completion function that answers "" and counts the requests and characters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.tokens = 0.0
        self._lock = threading.Lock()

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        from oaievalset.engine.completions import Completion, to_messages

        messages = to_messages(prompt)
        tokens = sum(_content_tokens(m.get("content")) for m in messages)
        with self._lock:
            self.requests += 1
            self.tokens += tokens + TOKENS_PER_MESSAGE * len(messages)
        return Completion("")


def _content_tokens(content: Any) -> float:
    """A message's content in tokens, roughly: its text, and its image parts if it has
    parts."""
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        text = sum(len(str(part.get("text") or "")) for part in content)
        images = sum(1 for part in content if part.get("type") == "image_url")
        return text / CHARS_PER_TOKEN + TOKENS_PER_IMAGE * images
    return len(str(content or "")) / CHARS_PER_TOKEN


def estimate(
    command: Sequence[str],
    journal: Path | None = None,
    earlier: RecordSummary | None = None,
    registries: dict[tuple[str, ...], Any] | None = None,
) -> Estimate | str:
    """The estimate of an `oaieval` command, or why there is none (one line). `earlier`
    is the summary of a record of an earlier run of the same eval, if there is one;
    `registries` keeps the registries read, by their roots, for the next command."""
    import logging

    from oaievalset.engine.cli import parse_pairs
    from oaievalset.engine.evals import eval_class, make_eval
    from oaievalset.engine.recorder import Recorder
    from oaievalset.errors import OaiEvalSetError
    from oaievalset.registry import Registry

    try:
        args, _ = _parser().parse_known_args(list(command[1:]))
    except SystemExit:
        return "its arguments are not oaieval's"
    # The dry run's answers are no model's: what the eval says of them (a choice it cannot
    # parse) and what `datasets` says while it loads are not for the plan's reader.
    quiet = [logging.getLogger(name) for name in ("oaieval", "datasets")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    roots = tuple(args.registry_path or ())
    try:
        registry = (registries or {}).get(roots)
        if registry is None:
            registry = Registry()
            if roots:
                registry.add_registry_paths(list(roots))
            if registries is not None:
                registries[roots] = registry
        spec = registry.require_eval(args.eval)
        eval_args = {**spec.args, **parse_pairs(args.extra_eval_params, "--extra_eval_params")}
        names = args.completion_fn.split(",")
        counters = [_Counter(name) for name in names]
        evaluation = make_eval(
            eval_class(spec.cls, spec.key),
            counters,  # they answer as completion functions do
            spec.key,
            {**eval_args, "registry_path": spec.registry_path, "seed": args.seed},
            registry,
        )
        recorder = Recorder(run_id="estimate")
        evaluation.run(recorder, args.max_samples)
    except OaiEvalSetError as exc:
        return str(exc)
    except Exception as exc:  # an eval class of the user's that fails without answers
        return f"{type(exc).__name__}: {exc}"
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    samples = len({e.sample_id for e in recorder.events()})
    requests = sum(c.requests for c in counters)
    answered = min(requests, _answers_in(journal)) if journal else 0
    left = 1 - answered / requests if requests else 1.0
    usage = earlier.usage if earlier is not None else None
    measured = earlier.samples if earlier is not None else 0
    if usage is not None and usage.prompt_tokens and measured:
        per_sample_in = usage.prompt_tokens / measured
        per_sample_out = usage.completion_tokens / measured
        return Estimate(
            samples,
            requests,
            answered,
            math.ceil(per_sample_in * samples * left),
            math.ceil(per_sample_out * samples * left),
            f"measured: the tokens per sample of an earlier run ({measured} samples)",
        )
    tokens = sum(c.tokens for c in counters)
    return Estimate(
        samples,
        requests,
        answered,
        math.ceil(tokens * left),
        None,
        f"approximate: {CHARS_PER_TOKEN:g} characters a token, plus {TOKENS_PER_MESSAGE} a "
        f"message; output tokens are known only after a run",
    )


@functools.cache
def _parser() -> Any:
    """oaieval's parser, built once for all the commands of a plan."""
    from oaievalset.engine.cli import get_parser

    return get_parser()


def _answers_in(journal: Path) -> int:
    """The answers an answer journal holds (its first line says what run it is for)."""
    try:
        with open(journal, "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0
