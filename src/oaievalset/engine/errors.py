"""Errors of the oaieval engine, on the project's one base exception."""

from __future__ import annotations

from oaievalset.errors import EXIT_FAILED, OaiEvalSetError


class EngineError(OaiEvalSetError):
    """A bad eval, argument or setting: nothing was evaluated (exit 2)."""


class ModelError(OaiEvalSetError):
    """The model could not be asked: no server, an HTTP error, an unknown model (exit 1)."""

    exit_code = EXIT_FAILED


class SampleError(OaiEvalSetError):
    """A sample that does not have the shape the eval needs (exit 1)."""

    exit_code = EXIT_FAILED


class Deferred(Exception):  # not an error: a request waiting for its batch
    """A request with no answer yet, gathered for the next batch (engine/batch.py): its
    sample stops here, and the round ends without a report."""
