"""Batch mode: an eval's chat requests sent through the OpenAI Batch API, at half the price.

The eval runs in rounds against its answer journal (engine/answers.py). In a round, a
request that has no answer yet is put off: its sample stops there, and the request is
gathered. The gathered requests go out as batches; their answers go into the journal; the
next round goes further (a model-graded eval's grading requests come in the round after
the answers they grade). The round in which nothing is put off is the eval's result:
every answer then comes from the journal, as in a resumed run, so the record is the one a
direct run writes for the same answers.

The batches are kept in a state file beside the journal (`<journal>.batches`), written
before each step (the requests a batch is for, the file uploaded, the batch created), so a
run killed at any moment finds them again and never sends a request twice while its batch
lives. Each batch's metadata names the run, so they are found on the server even if the
state file is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from oaievalset.engine.errors import Deferred, EngineError, ModelError
from oaievalset.outcome import BATCH, BATCH_SET, LIVE_BATCH

if TYPE_CHECKING:
    from oaievalset.engine.answers import Answers

ENV = BATCH  # "1": through the Batch API; "cancel": cancel the run's live batches
POLL_ENV = "OAIEVAL_BATCH_POLL"  # the longest wait between two looks at a batch (seconds)
RETRIES_ENV = "OAIEVAL_BATCH_RETRIES"  # times a request that failed in a batch is sent again
SIZE_ENV = "OAIEVAL_BATCH_SIZE"  # the most requests in one batch (under the API's limit)
POLL_FIRST = 2.0  # seconds before the first look, then half as long again each time
POLL_MOST = 60.0
RETRIES = 3
EMPTY_BATCHES = 3  # batches in a row that answer nothing before the eval gives up
MAX_REQUESTS = 50_000  # the API's limits on one batch
MAX_BYTES = 190 * 2**20  # under its 200 MB a file, with room for the multipart around it
ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
LIVE = LIVE_BATCH
# Lines of an expired or cancelled batch that never ran: sent again, and not a failure.
NOT_RUN = ("batch_expired", "batch_cancelled")
TRANSIENT = frozenset({408, 409, 429}) | frozenset(range(500, 600))
LOOKBACK = 48 * 3600  # how far back a lost state file's batches are looked for (seconds)

logger = logging.getLogger("oaieval")
T = TypeVar("T")


def batch_mode() -> str | None:
    """'run' or 'cancel' as OAIEVAL_BATCH says, or None for direct requests."""
    text = os.environ.get(ENV, "").strip().lower()
    if text in ("", "0", "no", "false"):
        return None
    if text in ("1", "yes", "true"):
        return "run"
    if text == "cancel":
        return "cancel"
    raise EngineError(f"{ENV} must be 1 (through the Batch API) or 'cancel', got '{text}'")


@dataclass
class Part:
    """One batch of the run: the requests it is for, its input file, the batch itself."""

    keys: list[str]
    base_url: str
    file_id: str | None = None
    batch_id: str | None = None
    status: str = "preparing"  # then the batch's, until it is read ("done")
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "base_url": self.base_url,
            "file_id": self.file_id,
            "batch_id": self.batch_id,
            "status": self.status,
            "counts": self.counts,
        }


class Batcher:
    """The batches of one eval run (see the module's doc)."""

    def __init__(self, answers: Answers, state_path: Path, run: str, labels: dict[str, str]):
        from oaievalset.engine.completions import seconds_from_env

        self.answers = answers
        self.path = state_path
        self.run_id = run  # names the run in each batch's metadata
        self.labels = labels
        self.poll_most = max(0.05, seconds_from_env(POLL_ENV, POLL_MOST))
        self.retries = _count_from_env(RETRIES_ENV, RETRIES)
        self.size = min(MAX_REQUESTS, _count_from_env(SIZE_ENV, MAX_REQUESTS)) or MAX_REQUESTS
        self.clients: dict[str, Any] = {}  # base URL -> openai client, of the run's models
        self.wanted: dict[str, tuple[str, dict[str, Any], str]] = {}  # key -> (url, body, sample)
        self._lock = threading.Lock()
        self.parts: list[Part] = []
        self.tries: dict[str, int] = {}  # key -> failures in batches
        self.refused: dict[str, str] = {}  # key -> why, for requests not sent again
        self.found_state = self._load()
        self.sent = 0  # requests of this run's batches (sent by this process or an earlier)
        self.answered = 0  # answers taken from batches by this process
        self._empty = 0

    # The state file ----------------------------------------------------------------------

    def _load(self) -> bool:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"{self.path}: the state of this eval's batches is unreadable ({exc}); "
                f"remove it to look for them on the server instead"
            ) from None
        try:
            if data.get("run") != self.run_id:  # another run's: its batches are not ours
                return False
            self.parts = [Part(**p) for p in data["parts"]]
            self.tries = {str(k): int(v) for k, v in data.get("tries", {}).items()}
            self.refused = {str(k): str(v) for k, v in data.get("refused", {}).items()}
        except (TypeError, KeyError, ValueError, AttributeError):
            raise EngineError(
                f"{self.path}: not a state file of this oaieval's batches; remove it to "
                f"look for them on the server instead"
            ) from None
        return True

    def _save(self) -> None:
        from oaievalset.files import atomic_write

        data = {
            "run": self.run_id,
            "parts": [p.as_dict() for p in self.parts],
            "tries": self.tries,
            "refused": self.refused,
        }
        atomic_write(self.path, json.dumps(data) + "\n", durable=True)

    # A round -----------------------------------------------------------------------------

    def uses(self, base_url: str, client: Any) -> None:
        """A completion function of this round asks the server at base_url with client."""
        with self._lock:
            self.clients.setdefault(base_url, client)

    def defer(self, key: str, base_url: str, body: dict[str, Any], sample: str) -> NoReturn:
        """Gather a request that has no answer; raises Deferred (or the reason the Batch API
        gave for refusing it)."""
        why = self.refused.get(key)
        if why is not None:
            raise ModelError(f"the Batch API did not answer a request of sample {sample}: {why}")
        with self._lock:
            self.wanted[key] = (base_url, body, sample)
        raise Deferred(key)

    def run(self, attempt: Callable[[], T]) -> T:
        """Run `attempt` (one whole run of the eval) in rounds until it puts nothing off;
        its last result. Ctrl-C, or SIGTERM (how oaievalset stops its evals), cancels no
        batch: the log says how to take their answers, or cancel them."""
        previous = stop_on_sigterm()
        try:
            return self._rounds(attempt)
        except KeyboardInterrupt:
            running = [str(p.batch_id or p.file_id) for p in self.parts if p.status != "done"]
            if running:
                how = "--cancel-batches" if BATCH_SET in os.environ else f"{ENV}=cancel"
                logger.info(
                    f"Interrupted; batch(es) {', '.join(running)} go on (they are paid for): "
                    f"the same command again takes their answers; {how} cancels them"
                )
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _rounds(self, attempt: Callable[[], T]) -> T:
        looked = self.found_state
        for part in self.parts:
            if part.batch_id and part.status != "done":
                logger.info(f"Batch {part.batch_id}: of an earlier run of this eval, re-attached")
        rounds = 0  # that sent batches, in this run
        while True:
            self.wanted.clear()
            self.answers.new_round()
            try:
                result = attempt()
            except Deferred:
                if not self.wanted:  # pragma: no cover - a sample put off is gathered
                    raise
            if not looked:  # no state file: batches of this run may be on the server
                looked = True
                if self._find_on_server():
                    continue
            if any(p.status != "done" for p in self.parts):  # an earlier run's, re-attached
                self._settle()
                continue
            if not self.wanted:
                logger.info(self.summary())
                return result
            rounds += 1
            logger.info(
                f"Round {rounds}: {len(self.wanted)} requests have no answer; sending them "
                f"to the Batch API"
            )
            self._submit()
            self._settle()

    def summary(self) -> str:
        """The log line the orchestrator reads back (outcome.read_outcome)."""
        from oaievalset.outcome import batch_line

        batches = [p for p in self.parts if p.batch_id]
        held = sum(len(p.keys) or p.counts.get("total", 0) for p in batches)
        return batch_line(held, len(batches), self.answered)

    # Sending -----------------------------------------------------------------------------

    def _submit(self) -> None:
        by_server: dict[str, list[tuple[str, bytes]]] = {}
        for key, (base_url, body, _sample) in sorted(self.wanted.items()):
            line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
            data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
            by_server.setdefault(base_url, []).append((key, data))
        chunks: list[tuple[str, list[tuple[str, bytes]]]] = []
        for base_url, lines in by_server.items():
            chunk: list[tuple[str, bytes]] = []
            size = 0
            for key, data in lines:
                if chunk and (len(chunk) >= self.size or size + len(data) > MAX_BYTES):
                    chunks.append((base_url, chunk))
                    chunk, size = [], 0
                chunk.append((key, data))
                size += len(data)
            chunks.append((base_url, chunk))
        for base_url, chunk in chunks:
            part = Part(keys=[key for key, _ in chunk], base_url=base_url)
            self.parts.append(part)
            self._save()  # what the batch is for, before anything is sent
            client = self.clients[base_url]
            uploaded = self._call(
                f"upload a batch input file to {base_url}",
                client.files.create,
                file=("requests.jsonl", b"".join(data for _, data in chunk)),
                purpose="batch",
            )
            part.file_id = str(uploaded.id)
            part.status = "uploaded"
            self._save()  # a crash from here on finds the batch by its input file
            self._create(part)

    def _create(self, part: Part) -> None:
        client = self.clients[part.base_url]
        metadata = {"oaievalset_run": self.run_id, **self.labels, "requests": str(len(part.keys))}
        batch = self._call(
            f"create a batch at {part.base_url}",
            client.batches.create,
            input_file_id=part.file_id,
            endpoint=ENDPOINT,
            completion_window=WINDOW,
            metadata=metadata,
        )
        part.batch_id, part.status = str(batch.id), str(batch.status)
        self.sent += len(part.keys)
        self._save()
        logger.info(f"Batch {part.batch_id}: {len(part.keys)} requests sent")

    def _find_on_server(self) -> bool:
        """Batches of this run the server has though the state file does not list them
        (it was lost, or the run was killed between creating a batch and writing it down).
        True if some were found."""
        found = False
        known = {p.batch_id for p in self.parts}
        for base_url, client in self.clients.items():
            for batch in self._ours(client):
                if batch.id in known:
                    continue
                logger.info(f"Batch {batch.id}: of this run, found on the server ({batch.status})")
                part = Part(keys=[], base_url=base_url, file_id=batch.input_file_id)
                part.batch_id, part.status = str(batch.id), str(batch.status)
                self.parts.append(part)
                found = True
        if found:
            self._save()
        return found

    def _ours(self, client: Any) -> list[Any]:
        since = time.time() - LOOKBACK
        ours = []
        page = self._call("list the batches", client.batches.list, limit=100)
        for batch in page:  # the package pages through them, newest first
            if (batch.created_at or 0) < since:
                break
            if (batch.metadata or {}).get("oaievalset_run") == self.run_id:
                ours.append(batch)
        return ours

    # Waiting -----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Wait for every batch not yet read, and read each as it ends."""
        for part in self.parts:
            if part.status == "preparing":  # killed before its file was sent: send again
                part.status = "done"
            elif part.batch_id is None and part.status != "done":
                self._attach_or_create(part)
        self._save()
        wait = min(POLL_FIRST, self.poll_most)
        while True:
            live = [p for p in self.parts if p.status != "done"]
            if not live:
                return
            for part in live:
                self._look(part)
            if any(p.status != "done" for p in self.parts):
                time.sleep(wait)
                wait = min(wait * 1.5, self.poll_most)

    def _attach_or_create(self, part: Part, create: bool = True) -> None:
        client = self._client(part)
        for batch in self._ours(client):
            if batch.input_file_id == part.file_id:
                part.batch_id, part.status = str(batch.id), str(batch.status)
                logger.info(f"Batch {part.batch_id}: of this run, found on the server")
                return
        if create:
            self._create(part)  # the file was sent, the batch never created

    def _client(self, part: Part) -> Any:
        client = self.clients.get(part.base_url)
        if client is None:
            raise EngineError(
                f"batch {part.batch_id or part.file_id} of this eval is at {part.base_url}, "
                f"which none of its models asks now; run it as it was run"
            )
        return client

    def _look(self, part: Part) -> None:
        client = self._client(part)
        batch = self._call("look at a batch", client.batches.retrieve, part.batch_id)
        status = str(batch.status)
        counts = _counts(batch)
        if status != part.status or counts != part.counts:
            part.status, part.counts = status, counts
            done = counts.get("completed", 0) + counts.get("failed", 0)
            logger.info(f"Batch {part.batch_id}: {status}, {done}/{counts.get('total', 0)} done")
            self._save()
        if status in LIVE:
            return
        answered = self._read(part, batch)
        part.status = "done"
        self._save()
        if status == "failed":
            raise ModelError(f"batch {part.batch_id} failed: {_errors(batch)}")
        self._empty = 0 if answered else self._empty + 1
        if self._empty >= EMPTY_BATCHES:
            raise ModelError(
                f"{EMPTY_BATCHES} batches in a row answered nothing (the last, "
                f"{part.batch_id}, {status}); the answers so far are kept for a later run"
            )

    def _read(self, part: Part, batch: Any) -> int:
        """Take a finished batch's answers into the journal, and note its failed lines; the
        number of answers."""
        client = self._client(part)
        rows: list[dict[str, Any]] = []
        for name in ("output_file_id", "error_file_id"):
            file_id = getattr(batch, name, None)
            if file_id:
                content = self._call("download a file", client.files.content, file_id)
                rows.extend(json.loads(line) for line in content.text.splitlines() if line.strip())
        if not rows and batch.status == "completed":
            logger.warning(
                f"Batch {part.batch_id} completed with no output file; its requests are sent again"
            )
        answered = 0
        seen = set()
        for row in rows:
            key = str(row.get("custom_id"))
            seen.add(key)
            response = row.get("response") or {}
            status = response.get("status_code")
            if status == 200:
                answer = _answer(response.get("body"))
                if answer is not None:
                    self.answers.put(key, answer)
                    answered += 1
                    continue
                why = "an answer that is not a chat completion"
            else:
                error = row.get("error") or {}
                body = response.get("body")
                failure = body.get("error") if isinstance(body, Mapping) else None
                message = (failure or {}).get("message") or error.get("message")
                if error.get("code") in NOT_RUN:
                    continue  # never run: sent again in the next round
                why = f"HTTP {status}: {message}" if status else f"{error.get('code')}: {message}"
                if status is not None and status not in TRANSIENT:
                    self.refused[key] = why
                    continue
            self.tries[key] = self.tries.get(key, 0) + 1
            if self.tries[key] > self.retries:
                self.refused[key] = f"{why} ({self.tries[key]} times; {RETRIES_ENV})"
        if not rows and batch.status == "completed":
            for key in part.keys:
                self.tries[key] = self.tries.get(key, 0) + 1
        self.answered += answered
        return answered

    def _call(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call to the Files or Batches API, tried again while its failure is transient."""
        import openai

        delay = 1.0
        for tries in range(1, 7):
            try:
                return call(*args, **kwargs)
            except openai.APIStatusError as exc:
                if exc.status_code not in TRANSIENT or tries == 6:
                    why = f"HTTP {exc.status_code}: {exc.message}"
                    raise ModelError(f"cannot {what}: {why}") from None
            except openai.APIConnectionError as exc:
                if tries == 6:
                    raise ModelError(f"cannot {what}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # Cancelling --------------------------------------------------------------------------

    def cancel(self) -> int:
        """Cancel the run's batches still running on the server (those in the state file,
        and those found by their metadata); how many. What they answered is read by the
        next run."""
        self._find_on_server()
        for part in self.parts:
            if part.batch_id is None and part.file_id and part.status != "done":
                self._attach_or_create(part, create=False)  # killed before it was noted
        cancelled = 0
        for part in self.parts:
            if part.batch_id is None or part.status == "done":
                continue
            client = self._client(part)
            batch = self._call("look at a batch", client.batches.retrieve, part.batch_id)
            if str(batch.status) in LIVE and str(batch.status) != "cancelling":
                batch = self._call("cancel a batch", client.batches.cancel, part.batch_id)
                cancelled += 1
            part.status = str(batch.status)
            logger.info(f"Batch {part.batch_id}: {part.status}")
        if self.parts:
            self._save()
        return cancelled


def stop_on_sigterm() -> Any:
    """SIGTERM stops the eval as Ctrl-C does, so that the log says what becomes of its
    batches; the handler it replaced (None outside the main thread, where none can be
    set)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def run_label(journal: Path, identity: Mapping[str, Any]) -> str:
    """What names the run in its batches' metadata: the journal and what it is for."""
    text = json.dumps([str(journal.resolve()), identity], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _answer(body: Any) -> dict[str, Any] | None:
    """What the journal keeps of a chat completion, as a direct request keeps it."""
    from openai.types.chat import ChatCompletion

    from oaievalset.engine.completions import kept_answer

    try:
        return kept_answer(ChatCompletion.model_validate(body))
    except ValueError:
        return None


def _counts(batch: Any) -> dict[str, int]:
    counts = getattr(batch, "request_counts", None)
    if counts is None:
        return {}
    return {k: int(getattr(counts, k, 0) or 0) for k in ("total", "completed", "failed")}


def _errors(batch: Any) -> str:
    data = getattr(getattr(batch, "errors", None), "data", None) or []
    lines = [f"{e.message} ({e.code}{f', line {e.line}' if e.line else ''})" for e in data[:3]]
    return "; ".join(lines) or "the Batch API gave no reason"


def _count_from_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise EngineError(f"{name} must be a whole number, 0 or more, got '{text}'")
    return value
