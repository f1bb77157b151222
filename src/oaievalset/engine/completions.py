"""Completion functions: `dummy` (offline) and chat models on any OpenAI-compatible server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, Union

from oaievalset.engine.errors import EngineError, ModelError

Prompt = Union[str, list[dict[str, Any]]]

DUMMY_RESPONSE = "This is a dummy response."  # what openai/evals' dummy answers


class CompletionFn(Protocol):
    name: str

    def __call__(self, prompt: Prompt, **kwargs: Any) -> str:
        """The model's answer to the prompt."""
        ...


class DummyCompletionFn:
    """Answers every prompt with the same sentence, offline; as the original's `dummy`."""

    name = "dummy"

    def __call__(self, prompt: Prompt, **kwargs: Any) -> str:
        return DUMMY_RESPONSE


def to_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A chat message list: a string prompt becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


class OpenAIChatCompletionFn:
    """A chat model behind the chat completions API, through the `openai` package.

    The server is `OPENAI_BASE_URL` (default: OpenAI's) and the key `OPENAI_API_KEY`;
    the package's own retries and timeouts apply.
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.name = model
        self._options = options
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise EngineError(
                f"OPENAI_API_KEY is not set; model '{model}' needs it "
                f"(any value will do for a local server; 'dummy' needs none)"
            )
        try:
            import openai
        except ImportError:  # pragma: no cover - openai is a dependency
            raise EngineError("the 'openai' package is missing; pip install openai") from None
        self._openai = openai
        self._client = openai.OpenAI(api_key=api_key)
        self._base_url = str(self._client.base_url)

    def __call__(self, prompt: Prompt, **kwargs: Any) -> str:
        openai = self._openai
        params: dict[str, Any] = {"temperature": 0.0}
        params.update({k: v for k, v in kwargs.items() if v is not None})
        params.update(self._options)
        try:
            response = self._client.chat.completions.create(
                model=self.name,
                messages=to_messages(prompt),  # type: ignore[arg-type]  # plain dicts
                **params,
            )
        except openai.NotFoundError as exc:
            raise ModelError(
                f"the server at {self._base_url} does not know model '{self.name}' "
                f"(HTTP 404: {_message(exc)}); check the model name"
            ) from None
        except openai.AuthenticationError as exc:
            raise ModelError(
                f"the server at {self._base_url} refused the API key (HTTP 401: {_message(exc)}); "
                f"check OPENAI_API_KEY"
            ) from None
        except openai.APIStatusError as exc:
            raise ModelError(
                f"the server at {self._base_url} answered HTTP {exc.status_code} for model "
                f"'{self.name}': {_message(exc)}"
            ) from None
        except openai.APITimeoutError:
            raise ModelError(
                f"the server at {self._base_url} did not answer in time for model '{self.name}'"
            ) from None
        except openai.APIConnectionError as exc:
            raise ModelError(
                f"cannot reach the model server at {self._base_url} ({exc}); "
                f"check OPENAI_BASE_URL and that the server runs"
            ) from None
        if not response.choices:
            raise ModelError(
                f"the server at {self._base_url} returned no choices for '{self.name}'"
            )
        content = response.choices[0].message.content
        return content if isinstance(content, str) else ""


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))


def make_completion_fn(name: str, **options: Any) -> CompletionFn:
    """`dummy`, or any other name as a chat model."""
    if name == "dummy":
        return DummyCompletionFn()
    return OpenAIChatCompletionFn(name, **options)
