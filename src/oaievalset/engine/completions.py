"""Completion functions: `dummy` (offline) and chat models on any OpenAI-compatible server.

A chat model is asked as openai/evals asks it: a string prompt becomes one `system`
message, the request carries only the parameters the eval passes, and each answer is
recorded as a `sampling` event with the model and usage the server returned. Unlike the
original, which retries a failing request forever, a request is retried within a time
budget, and all threads slow down together when the server says 429.
"""

from __future__ import annotations

import contextvars
import email.utils
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Union

from oaievalset.engine.errors import EngineError, ModelError, SampleError
from oaievalset.engine.openaipkg import defer_types

if TYPE_CHECKING:
    from oaievalset.engine.answers import Answers
    from oaievalset.engine.batch import Batcher
    from oaievalset.engine.spend import Spend

Prompt = Union[str, list[dict[str, Any]]]

DUMMY_RESPONSE = "This is a dummy response."  # what openai/evals' dummy answers

RETRY_BUDGET = 600.0  # seconds a request may spend retrying; OAIEVAL_RETRY_BUDGET overrides
TRY_TIMEOUT = 600.0  # seconds one try may wait for an answer (the openai package's default)
# OpenAI's flex tier is billed at batch rates and answers slowly, or with a 429 when it has
# no capacity: its tries may wait 15 minutes, and its requests retry for an hour.
FLEX_TRY_TIMEOUT = 900.0
FLEX_RETRY_BUDGET = 3600.0
BACKOFF_FIRST = 1.0  # seconds before the first retry, doubled after each, at most BACKOFF_MAX
BACKOFF_MAX = 60.0
TRANSIENT_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
CLIENT_SETTINGS = ("api_base", "api_key")  # --completion_args that set up the client

logger = logging.getLogger("oaieval")

# The stop signal of the eval run that a thread works for, set when that run stops (an
# error elsewhere, or Ctrl-C): its requests give up instead of going on in the background.
# Each run has its own (evals.run_in_threads sets it in its threads), so a run that failed
# leaves nothing set for the next run in the same process.
RUN_STOPPED: contextvars.ContextVar[threading.Event] = contextvars.ContextVar("run_stopped")
_NEVER = threading.Event()  # the signal of a thread outside any run: never set


def run_stopped() -> threading.Event:
    """The stop signal of this thread's eval run."""
    return RUN_STOPPED.get(_NEVER)


class Completion(NamedTuple):
    """One answer from a completion function, and what the record keeps of it: the
    `sampling` event's data, or None when the function records nothing (as `dummy`)."""

    text: str
    sampling: dict[str, Any] | None = None


class CompletionFn(Protocol):
    name: str

    def __call__(self, prompt: Prompt, **kwargs: Any) -> Completion:
        """The model's answer to the prompt."""
        ...


class DummyCompletionFn:
    """Answers every prompt with the same sentence, offline, and records no sampling event:
    as the original's `dummy`."""

    name = "dummy"

    def __call__(self, prompt: Prompt, **kwargs: Any) -> Completion:
        return Completion(DUMMY_RESPONSE)


def is_chat_prompt(prompt: Any) -> bool:
    return isinstance(prompt, list) and all(isinstance(message, dict) for message in prompt)


def to_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A chat message list; a string prompt becomes one system message, as the original's
    ChatCompletionPrompt renders it."""
    if isinstance(prompt, str):
        return [{"role": "system", "content": prompt}]
    if is_chat_prompt(prompt):
        return [dict(message) for message in prompt]
    raise SampleError(
        f"a prompt must be a string or a list of chat messages, not {type(prompt).__name__}"
    )


def seconds_from_env(name: str, default: float) -> float:
    """A number of seconds (0 or more) from the environment, or the default."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise EngineError(f"{name} must be a number of seconds, got '{text}'")
    return value


class Throttle:
    """What all the threads asking one server share: a limit on requests in flight that
    halves at each 429 and grows back by one with each success (additive increase,
    multiplicative decrease), and the pause a 429's Retry-After asks of every thread."""

    def __init__(self, most: int = 1 << 16) -> None:
        self._cond = threading.Condition()
        self._most = most
        self._limit = float(most)
        self._in_flight = 0
        self._paused_until = 0.0

    def __enter__(self) -> Throttle:
        with self._cond:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait <= 0 and self._in_flight < max(1, int(self._limit)):
                    break
                self._cond.wait(timeout=wait if wait > 0 else None)
            self._in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def slow_down(self, pause: float) -> None:
        with self._cond:
            self._limit = max(1.0, min(self._limit, self._in_flight) / 2)
            self._paused_until = max(self._paused_until, time.monotonic() + pause)
            self._cond.notify_all()

    def speed_up(self) -> None:
        with self._cond:
            if self._limit < self._most:
                self._limit = min(float(self._most), self._limit + 1)
                self._cond.notify_all()


class OpenAIChatCompletionFn:
    """A chat model behind the chat completions API, through the `openai` package.

    The server is `OPENAI_BASE_URL` (default: OpenAI's), or `api_base` among the
    --completion_args, and the key `OPENAI_API_KEY` or `api_key`; every other completion
    argument is a parameter of each request.
    """

    def __init__(
        self,
        model: str,
        answers: Answers | None = None,
        spend: Spend | None = None,
        batch: Batcher | None = None,
        **options: Any,
    ) -> None:
        self.name = model
        self._answers = answers  # where answers are kept as they arrive, and found again
        self._spend = spend  # the run's spending cap, if it has one
        self._batch = batch  # where requests without an answer go, in batch mode
        settings = {k: options.pop(k) for k in CLIENT_SETTINGS if k in options}
        self._options = options
        api_key = settings.get("api_key") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if _looks_like_dummy(model):
                raise EngineError(
                    f"did you mean 'dummy'? Model '{model}' is not the offline model, so it is "
                    f"a chat model, which needs OPENAI_API_KEY (it is not set)"
                )
            raise EngineError(
                f"OPENAI_API_KEY is not set; model '{model}' needs it "
                f"(any value will do for a local server; 'dummy' needs none)"
            )
        try:
            defer_types()  # half of the package's import, for types an eval does not use
            import openai
        except ImportError:  # pragma: no cover - openai is a dependency
            raise EngineError("the 'openai' package is missing; pip install openai") from None
        self._openai = openai
        # Retries are ours (see _create): the package's own would stack under them.
        from oaievalset.engine.warm import take_http_client

        self._client = openai.OpenAI(
            api_key=str(api_key),
            base_url=settings.get("api_base") or None,
            max_retries=0,
            http_client=take_http_client(),  # one the warm engine made ahead, or None
        )
        self._base_url = str(self._client.base_url)
        if batch is not None:
            batch.uses(self._base_url, self._client)
        flex = self._options.get("service_tier") == "flex"
        budget = FLEX_RETRY_BUDGET if flex else RETRY_BUDGET
        try_timeout = FLEX_TRY_TIMEOUT if flex else TRY_TIMEOUT
        self._budget = seconds_from_env("OAIEVAL_RETRY_BUDGET", budget)
        self._try_timeout = seconds_from_env("OAIEVAL_REQUEST_TIMEOUT", try_timeout) or None
        self._throttle = Throttle()
        self._reached = False  # a server that answered once and then refuses is restarting
        self._first = threading.Condition()  # guards the two flags below
        self._asking_first = False  # a request is out, and no answer has been read yet
        self._answered = False

    def __call__(self, prompt: Prompt, **kwargs: Any) -> Completion:
        messages = to_messages(prompt)
        params = {k: v for k, v in kwargs.items() if v is not None}
        params.update(self._options)
        key = None
        if self._answers is not None:
            from oaievalset.engine.answers import request_key

            key = request_key(self.name, self._base_url, {"messages": messages, **params})
            kept = self._answers.get(key)
            if kept is not None:  # paid for in an earlier run of this eval
                return _completion(messages, kept["sampled"], kept["model"], kept["usage"])
            if self._batch is not None and key is not None:  # asked in the next batch
                from oaievalset.engine.answers import current_sample

                body = {"model": self.name, "messages": messages, **params}
                self._batch.defer(key, self._base_url, body, current_sample())
        answer = kept_answer(self._create(messages, params))
        if self._spend is not None:
            self._spend.add(self.name, answer["usage"])
        if key is not None and self._answers is not None:  # kept before it is scored
            self._answers.put(key, answer)
        return _completion(messages, answer["sampled"], answer["model"], answer["usage"])

    def _create(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
        """One request, retried with backoff while its failure is transient and the budget
        lasts; other failures raise a ModelError at once."""
        openai = self._openai
        stopped = run_stopped()
        began = time.monotonic()
        tries = 0
        while True:
            tries += 1
            left = self._budget - (time.monotonic() - began)
            try:
                with self._throttle, self._first_answer():
                    if stopped.is_set():  # while this thread waited its turn
                        raise ModelError("stopped before sending a request")
                    if self._spend is not None:
                        self._spend.check()  # raises once the run's budget is spent
                    response = self._client.chat.completions.create(
                        model=self.name,
                        messages=messages,  # type: ignore[arg-type]  # plain dicts
                        timeout=self._timeout(left),
                        **params,
                    )
            except openai.APIStatusError as exc:
                if exc.status_code not in TRANSIENT_STATUS:
                    raise self._refused(exc) from None
                failure, pause = f"HTTP {exc.status_code}: {_message(exc)}", _retry_after(exc)
                if exc.status_code == 429:
                    self._throttle.slow_down(pause or 0.0)
            except openai.APITimeoutError:
                failure, pause = "no answer in time", None
            except openai.APIConnectionError as exc:
                if not self._reached and _cannot_connect(exc):
                    raise ModelError(
                        f"cannot reach the model server at {self._base_url} ({exc}); "
                        f"check OPENAI_BASE_URL and that the server runs"
                    ) from None
                failure, pause = f"connection failed ({exc})", None
            else:
                self._reached = True
                self._throttle.speed_up()
                return response
            delay = _backoff(tries, pause)
            spent = time.monotonic() - began
            if spent + delay > self._budget:
                raise ModelError(
                    f"gave up on model '{self.name}' at {self._base_url} after {tries} "
                    f"tries in {spent:.0f} s ({failure}); the retry budget is "
                    f"{self._budget:g} s per request (OAIEVAL_RETRY_BUDGET)"
                ) from None
            if stopped.is_set():
                raise ModelError(f"stopped while retrying a request ({failure})")
            logger.info(f"Retrying in {delay:.1f} s after try {tries} ({failure})")
            if stopped.wait(delay):
                raise ModelError(f"stopped while retrying a request ({failure})")

    @contextmanager
    def _first_answer(self) -> Iterator[None]:
        """Until one answer has been read, one request at a time: the openai package builds
        its response types on first use, and with some versions of it and pydantic (seen
        on Python 3.9) threads building them at once fail. Once it is read, every request
        waiting here goes at once; if the first fails, the next one waiting goes alone."""
        if self._answered:
            yield
            return
        with self._first:
            while self._asking_first and not self._answered:
                self._first.wait()
            first = self._asking_first = not self._answered
        if not first:
            yield
            return
        answered = False
        try:
            yield
            answered = True
        finally:
            with self._first:
                self._asking_first = False
                self._answered = answered
                self._first.notify_all()

    def _timeout(self, left: float) -> float | None:
        """One try waits at most OAIEVAL_REQUEST_TIMEOUT, and not past the retry budget."""
        if not self._budget:
            return self._try_timeout
        return min(self._try_timeout or left, max(left, 1.0))

    def _refused(self, exc: Any) -> ModelError:
        """The one-line error for a failure that retrying cannot mend."""
        status, message = exc.status_code, _message(exc)
        if status == 401:
            return ModelError(
                f"the server at {self._base_url} refused the API key (HTTP 401: {message}); "
                f"check OPENAI_API_KEY"
            )
        if status == 404 and _is_about_the_model(exc, self.name):
            check = (
                "did you mean 'dummy'?" if _looks_like_dummy(self.name) else "check the model name"
            )
            return ModelError(
                f"the server at {self._base_url} does not know model '{self.name}' "
                f"(HTTP 404: {message}); {check}"
            )
        if status == 404:
            path = _request_path(exc)
            return ModelError(
                f"the server at {self._base_url} has no {path} (HTTP 404: {message}); "
                f"check OPENAI_BASE_URL: OpenAI-compatible servers usually serve the API "
                f"under /v1 (for example http://127.0.0.1:8000/v1)"
            )
        return ModelError(
            f"the server at {self._base_url} answered HTTP {status} for model "
            f"'{self.name}': {message}"
        )


def _completion(
    messages: list[dict[str, Any]], texts: list[str], model: Any, usage: Any
) -> Completion:
    """The first text, and the `sampling` event: the prompt as sent and all the texts."""
    sampling = {"prompt": messages, "sampled": texts, "model": model, "usage": usage}
    return Completion(texts[0] if texts else "", sampling)


def _looks_like_dummy(model: str) -> bool:
    """`dumy`, `Dummy`, `dummmy`: a slip of the offline model's name."""
    import difflib  # only for a message

    return difflib.SequenceMatcher(None, model.lower(), "dummy").ratio() >= 0.8


def _backoff(tries: int, retry_after: float | None) -> float:
    """The server's Retry-After when it gives one, else exponential backoff with jitter
    (between half and all of the doubled delay), so that threads do not retry in step."""
    if retry_after is not None:
        return retry_after
    delay = min(BACKOFF_FIRST * 2.0 ** (tries - 1), BACKOFF_MAX)
    return delay * random.uniform(0.5, 1.0)


def _retry_after(exc: Any) -> float | None:
    """Seconds from the `retry-after-ms` or `Retry-After` header (seconds or a date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _cannot_connect(exc: BaseException) -> bool:
    """Whether the connection could not be made at all (refused, or no such host), as
    opposed to one that broke: the HTTP packages name that error ConnectError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "ConnectError" or isinstance(
            current, (ConnectionRefusedError, socket.gaierror)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_about_the_model(exc: Any, model: str) -> bool:
    """Whether a 404 says the model is unknown (rather than the path)."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and error.get("code") == "model_not_found":
        return True
    return model in _message(exc) or "model" in _message(exc).lower()


def _request_path(exc: Any) -> str:
    try:
        return f"POST {exc.response.request.url.path}"
    except AttributeError:
        return "such path"


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return str(getattr(exc, "message", exc))


# Registry classes of completion functions that are chat models on an OpenAI-compatible
# server: openai/evals' (whose own registry lookup cannot build it) and ours.
CHAT_CLASSES = frozenset(
    {
        "evals.completion_fns.openai:OpenAIChatCompletionFn",
        "oaievalset.engine.completions:OpenAIChatCompletionFn",
    }
)


def is_openai_chat_model(name: str) -> bool:
    """The names the original takes for OpenAI chat models without looking further."""
    if name == "gpt-4-base" or name.startswith("gpt-3.5-turbo-instruct"):
        return False
    return name in ("gpt-3.5-turbo", "gpt-3.5-turbo-16k", "gpt-4", "gpt-4-32k") or name.startswith(
        ("gpt-3.5-turbo-", "gpt-4-")
    )


def kept_answer(response: Any) -> dict[str, Any]:
    """What a chat completion's answer is, as the journal keeps it. As the original: the
    answers are the choices that have text; the event keeps them all, and the model and
    usage as the server gave them."""
    texts = [c.message.content for c in response.choices or [] if c.message.content is not None]
    usage = getattr(response, "usage", None)
    model = getattr(response, "model", None)
    used = usage.model_dump(mode="json") if usage is not None else None
    return {"sampled": texts, "model": model, "usage": used}


def make_completion_fn(
    name: str,
    registry: Any = None,
    answers: Answers | None = None,
    spend: Spend | None = None,
    batch: Batcher | None = None,
    **options: Any,
) -> CompletionFn:
    """`dummy`; an OpenAI chat model name; a completion function of the registry's
    `completion_fns/` (one that is a chat model); or any other name as a chat model. A
    chat model keeps its answers in `answers`, if given (the offline `dummy` costs nothing
    to ask again)."""
    if name == "dummy":
        return DummyCompletionFn()
    spec = None
    if registry is not None and not is_openai_chat_model(name):
        spec = registry.get_completion_fn(name)
    if spec is None:
        return OpenAIChatCompletionFn(name, answers, spend, batch, **options)
    if spec.cls not in CHAT_CLASSES:
        raise EngineError(
            f"{spec.file}: completion function '{name}' uses class '{spec.cls}', which this "
            f"oaieval cannot run; it runs chat models on an OpenAI-compatible server "
            f"(class evals.completion_fns.openai:OpenAIChatCompletionFn)"
        )
    args = dict(spec.args)
    model = str(args.pop("model", None) or name)
    extra = args.pop("extra_options", None) or {}
    settings = {k: args[k] for k in CLIENT_SETTINGS if args.get(k)}
    return OpenAIChatCompletionFn(model, answers, spend, batch, **settings, **extra, **options)
