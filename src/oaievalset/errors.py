"""The exceptions whose messages are written for the user, and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # at least one eval failed, or an error stopped the run midway
EXIT_USAGE = 2  # usage, registry or progress-file error: nothing was run
EXIT_BUDGET = 3  # --max-cost or --max-tokens reached: the running evals stopped, not recorded
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class OaiEvalSetError(Exception):
    """Base class: the message is one line that says what is wrong and what to do."""

    exit_code = EXIT_USAGE


class UsageError(OaiEvalSetError):
    """A bad command-line argument."""


class RegistryError(OaiEvalSetError):
    """A registry file or entry that cannot be used."""


class UnknownEvalSetError(RegistryError):
    """The eval set asked for is in no registry root."""


class UnknownEvalError(RegistryError):
    """The eval asked for is in no registry root."""


class ProgressError(OaiEvalSetError):
    """A progress file that cannot be read, written or locked."""


class LaunchError(OaiEvalSetError):
    """The eval command could not be started (for instance not found on PATH)."""

    exit_code = EXIT_FAILED


class RunStopped(OaiEvalSetError):
    """An error stopped the run after it had started: the table and the report are written,
    then this one line."""

    exit_code = EXIT_FAILED
