"""The eval classes: Match, Includes, FuzzyMatch, JsonMatch and TestMatch, scored as in
openai/evals, with samples evaluated concurrently and results independent of scheduling."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import queue
import random
import re
import string
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from oaievalset.engine.answers import at_sample
from oaievalset.engine.completions import CompletionFn, Prompt
from oaievalset.engine.errors import Deferred, EngineError, SampleError
from oaievalset.engine.recorder import Recorder

logger = logging.getLogger("oaieval")

SHUFFLE_SEED = 123  # the original shuffles samples with this seed before --max_samples
DEFAULT_THREADS = 10


# -- scoring helpers (same rules as openai/evals) ----------------------------------------


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def fuzzy_match(a: str, b: str) -> bool:
    a, b = normalize(a), normalize(b)
    if not a or not b:
        return a == b
    return a in b or b in a


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any answer."""

    predicted = normalize(prediction).split()
    predicted_counts = Counter(predicted)

    def one(answer: str) -> float:
        truth = normalize(answer).split()
        same = sum((predicted_counts & Counter(truth)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(predicted), same / len(truth)
        return 2 * precision * recall / (precision + recall)

    return max(one(answer) for answer in answers)


def json_match(sampled: Any, correct: Any) -> bool:
    """Whether two decoded JSON values match, component by component."""
    if sampled is None or correct is None:
        return False
    if isinstance(sampled, dict):
        if not isinstance(correct, dict):
            return False
        keys = set(sampled) | set(correct)
        return all(json_match(sampled.get(k), correct.get(k)) for k in keys)
    if isinstance(sampled, list):
        if not isinstance(correct, list) or len(sampled) != len(correct):
            return False
        return all(json_match(s, c) for s, c in zip(sampled, correct))
    return bool(sampled == correct)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def accuracy(correct: Sequence[bool]) -> float:
    return mean([1.0 if c else 0.0 for c in correct])


def bootstrap_std(correct: Sequence[bool], rng: random.Random, rounds: int = 1000) -> float:
    """Spread of the accuracy over half-size resamples, as the original's metric; seeded, so a
    run is reproducible. NaN when there are fewer than two samples."""
    values = [1.0 if c else 0.0 for c in correct]
    means = [mean(rng.sample(values, len(values) // 2)) for _ in range(rounds)]
    if not means or any(math.isnan(m) for m in means):
        return float("nan")
    centre = mean(means)
    return math.sqrt(mean([(m - centre) ** 2 for m in means]))


# -- the base class ----------------------------------------------------------------------


class Eval:
    """One eval: samples, how one sample is scored, and how scores are summed up."""

    required_keys: tuple[str, ...] = ("input", "ideal")  # what every sample must have
    uses_registry = False  # whether the class is given the registry (to look up specs)

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        *,
        name: str,
        registry_path: Path,
        seed: int = 20220722,
        samples_jsonl: str | None = None,
    ) -> None:
        if len(name.split(".")) < 2:
            raise EngineError(f"eval name '{name}' must have the form <base_eval>.<split>...")
        if len(completion_fns) != 1:
            raise EngineError(
                f"{type(self).__name__} takes one completion function, got {len(completion_fns)}"
            )
        self.completion_fn = completion_fns[0]
        self.name = name
        self.registry_path = registry_path
        self.seed = seed
        self.samples_jsonl = samples_jsonl

    # Samples -----------------------------------------------------------------------------

    def data_path(self, relative: str) -> Path:
        """A data file: as given if it exists, else under the registry's `data/` folder."""
        if os.path.isfile(relative):
            return Path(relative)
        return self.registry_path / "data" / relative

    def get_samples(self) -> list[dict[str, Any]]:
        if not self.samples_jsonl:
            raise EngineError(f"eval '{self.name}' has no 'samples_jsonl' argument")
        return read_jsonl(self.data_path(self.samples_jsonl))

    # Scoring -----------------------------------------------------------------------------

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        raise NotImplementedError

    def run(self, recorder: Recorder, max_samples: int | None = None) -> dict[str, Any]:
        """Evaluate the samples; by default the report is the accuracy of the matches."""
        self.eval_all_samples(recorder, self.get_samples(), max_samples)
        return self.match_report(recorder)

    def sample(self, prompt: Prompt, recorder: Recorder, **kwargs: Any) -> str:
        """The completion function's answer; its `sampling` event, if it makes one, goes
        into the record (the original's chat models make one, its `dummy` does not)."""
        completion = self.completion_fn(prompt, **kwargs)
        if completion.sampling is not None:
            recorder.record("sampling", completion.sampling)
        return completion.text

    def eval_all_samples(
        self, recorder: Recorder, samples: Sequence[Any], max_samples: int | None = None
    ) -> None:
        """Evaluate the samples on a thread pool (EVALS_THREADS, default 10). The record is
        ordered by sample, so it is the same whatever the thread count."""
        indices = list(range(len(samples)))
        random.Random(SHUFFLE_SEED).shuffle(indices)
        if max_samples is not None:
            indices = indices[:max_samples]
        threads = _threads()
        logger.info(f"Evaluating {len(indices)} samples")
        base, split = self.name.split(".")[0:2]
        deferred = []  # samples waiting for a batch's answer (engine/batch.py)

        def one(index: int) -> None:
            sample = samples[index]
            sample_id = f"{base}.{split}.{index}"
            if not isinstance(sample, dict) or any(k not in sample for k in self.required_keys):
                keys = " and ".join(f"'{k}'" for k in self.required_keys)
                raise SampleError(f"sample {index} of eval '{self.name}' needs {keys} keys")
            with recorder.sample(sample_id, index), at_sample(sample_id):
                rng = random.Random(f"{sample_id}:{self.seed}".encode())
                try:
                    self.eval_sample(sample, rng, recorder)
                except SampleError as exc:
                    raise SampleError(f"{exc} (sample {index})") from None
                except Deferred:
                    deferred.append(index)  # list.append is atomic: no lock

        if threads <= 1 or os.environ.get("EVALS_SEQUENTIAL", "0") in ("1", "true", "yes"):
            logger.info("Running in sequential mode!")
            for index in indices:
                one(index)
        else:
            logger.info(f"Running in threaded mode with {threads} threads!")
            run_in_threads(one, indices, threads)
        if deferred:  # this round's report would be of some samples only
            raise Deferred(f"{len(deferred)} samples wait for a batch")

    def match_report(self, recorder: Recorder) -> dict[str, Any]:
        correct = [bool(e.data["correct"]) for e in recorder.events("match")]
        return {
            "accuracy": accuracy(correct),
            # The original's key, misspelling included, so that readers of its reports work.
            "boostrap_std": bootstrap_std(correct, random.Random(self.seed)),
        }


def _threads() -> int:
    text = os.environ.get("EVALS_THREADS", str(DEFAULT_THREADS))
    try:
        threads = int(text)
    except ValueError:
        raise EngineError(f"EVALS_THREADS must be a whole number, got '{text}'") from None
    if threads < 1:
        raise EngineError(f"EVALS_THREADS must be 1 or more, got {threads}")
    return threads


def run_in_threads(work: Callable[[int], None], items: Sequence[int], threads: int) -> None:
    """Call `work` on every item from `threads` daemon threads; the first error stops the
    rest and is raised here. The main thread only waits, so Ctrl-C reaches it at once, and
    the requests still in flight do not hold up the exit (a pool's threads would be joined).
    """
    from oaievalset.engine.completions import RUN_STOPPED

    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    stop = threading.Event()
    errors: list[BaseException] = []
    left = [len(items)]
    lock = threading.Lock()
    finished = threading.Event()
    if not items:
        return

    go = threading.Event()

    def worker() -> None:
        RUN_STOPPED.set(stop)  # this thread's own context: its requests give up with the run
        go.wait()
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(item)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stop.set()
                finished.set()
                return
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    finished.set()

    # Every thread is started before any works: a thread that began working at once would
    # keep the interpreter for a switch interval (5 ms) before the next one could start.
    for _ in range(min(threads, len(items))):
        threading.Thread(target=worker, daemon=True).start()
    go.set()
    try:
        while not finished.wait(0.5):
            pass
    finally:
        # On Ctrl-C too: the threads take nothing more, and their requests that wait for a
        # retry or their turn give up. The event is this run's: the next run has its own.
        stop.set()
    if errors:
        raise errors[0]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The samples of a JSONL file, as the original reads them: compressed (`.gz`, `.lz4`,
    `.zst`) or not, or every `.jsonl` file of a folder. Blank lines are skipped (the original
    stops at them); every problem names the file and line."""
    if path.is_dir():
        samples: list[dict[str, Any]] = []
        for name in sorted(os.listdir(path)):  # the original lists in directory order
            if name.endswith(".jsonl"):
                samples += read_jsonl(path / name)
        return samples
    try:
        with _open_samples(path) as f:
            data = f.read()
    except FileNotFoundError:
        raise EngineError(f"{path}: samples file not found; check 'samples_jsonl'") from None
    except (OSError, EOFError, RuntimeError) as exc:
        raise EngineError(f"{path}: cannot read samples ({exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineError(f"{path}: samples are not UTF-8 text ({exc})") from None
    if text.startswith("version https://git-lfs"):
        raise EngineError(f"{path}: is a Git LFS pointer, not the data; run 'git lfs pull'")
    samples = []
    # Lines end at \n only: U+2028 and the like may stand inside a JSON string.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except ValueError as exc:
            raise SampleError(f"{path}:{lineno}: not a JSON sample ({exc})") from None
    return samples


def _open_samples(path: Path) -> IO[bytes]:
    """The file, decompressed by its suffix as the original does."""
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]  # a binary file
    if path.suffix == ".lz4":
        lz4 = _optional("lz4.frame", "lz4", path)
        return lz4.open(path, "rb")  # type: ignore[no-any-return]
    if path.suffix == ".zst":
        zstandard = _optional("zstandard", "zstandard", path)
        return zstandard.open(path, "rb")  # type: ignore[no-any-return]
    return open(path, "rb")


def _optional(module: str, package: str, path: Path) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EngineError(
            f"{path}: reading {path.suffix} files needs the '{package}' package; "
            f"pip install {package}"
        ) from None


def _ideal_list(sample: dict[str, Any], name: str) -> list[str]:
    ideal = sample["ideal"]
    answers = ideal if isinstance(ideal, list) else [ideal]
    if not all(isinstance(a, str) for a in answers):
        raise SampleError(f"eval '{name}': 'ideal' must be a string or a list of strings")
    return list(answers)


# -- the classes -------------------------------------------------------------------------


class Match(Eval):
    """Correct when the completion starts with one of the ideal answers."""

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        samples_jsonl: str,
        *,
        max_tokens: int = 500,
        num_few_shot: int = 0,
        few_shot_jsonl: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(completion_fns, samples_jsonl=samples_jsonl, **kwargs)
        self.max_tokens = max_tokens
        self.num_few_shot = num_few_shot
        self.few_shot: list[dict[str, Any]] = []
        if num_few_shot > 0:
            if not few_shot_jsonl:
                raise EngineError(f"eval '{self.name}': num_few_shot needs few_shot_jsonl")
            self.few_shot = read_jsonl(self.data_path(few_shot_jsonl))

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        expected = _ideal_list(sample, self.name)
        prompt = sample["input"]
        if self.num_few_shot > 0:
            if not isinstance(prompt, list):
                raise SampleError(f"eval '{self.name}': few-shot needs chat prompts")
            shots = [m for s in self.few_shot[: self.num_few_shot] for m in s["sample"]]
            prompt = prompt[:-1] + shots + prompt[-1:]
        sampled = self.sample(prompt, recorder, temperature=0.0)
        picked = next((option for option in expected if sampled.startswith(option)), None)
        recorder.record_match(
            picked is not None,
            expected=expected,
            picked=picked,
            sampled=sampled,
            options=expected,
        )


class TestMatch(Match):
    """The `test-match` eval: Match on three samples that it carries itself."""

    def __init__(self, completion_fns: Sequence[CompletionFn], **kwargs: Any) -> None:
        kwargs.pop("samples_jsonl", None)
        super().__init__(completion_fns, samples_jsonl="", **kwargs)

    def get_samples(self) -> list[dict[str, Any]]:
        # The three phrases of openai/evals' own test-match, so that scores compare.
        system = {"role": "system", "content": "Complete the phrase as concisely as possible."}
        return [
            {"input": [system, {"role": "user", "content": starts}], "ideal": ends}
            for starts, ends in (
                ("Once upon a ", "time"),
                ("The first US president was ", "George Washington"),
                ("OpenAI was founded in 20", "15"),
            )
        ]


class Includes(Eval):
    """Correct when the completion contains one of the ideal answers."""

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        samples_jsonl: str,
        ignore_case: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(completion_fns, samples_jsonl=samples_jsonl, **kwargs)
        self.ignore_case = ignore_case

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        answers = _ideal_list(sample, self.name)
        sampled = self.sample(sample["input"], recorder)
        haystack = sampled.lower() if self.ignore_case else sampled
        found = any((a.lower() if self.ignore_case else a) in haystack for a in answers)
        recorder.record_match(found, expected=sample["ideal"], picked=sampled, sampled=sampled)


class _Limited(Eval):
    """An eval that asks for at most `max_tokens` tokens per answer."""

    default_max_tokens = 100

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        samples_jsonl: str,
        *,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(completion_fns, samples_jsonl=samples_jsonl, **kwargs)
        self.max_tokens = self.default_max_tokens if max_tokens is None else max_tokens


class FuzzyMatch(_Limited):
    """Correct when the normalized completion and an answer contain one another; also F1."""

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        answers = _ideal_list(sample, self.name)
        if not answers:  # the original fails on it deep in its F1 score
            raise SampleError(
                f"eval '{self.name}': a sample has 'ideal': [], and FuzzyMatch needs at least "
                f"one answer; fix the sample or remove it"
            )
        sampled = self.sample(
            sample["input"], recorder, temperature=0.0, max_tokens=self.max_tokens
        )
        matches = [fuzzy_match(sampled, answer) for answer in answers]
        recorder.record_match(
            any(matches), expected=answers, picked=[sampled for m in matches if m]
        )
        recorder.record_metrics(accuracy=float(any(matches)), f1_score=f1_score(sampled, answers))

    def run(self, recorder: Recorder, max_samples: int | None = None) -> dict[str, Any]:
        self.eval_all_samples(recorder, self.get_samples(), max_samples)
        metrics = [e.data for e in recorder.events("metrics")]
        return {
            "accuracy": mean([m["accuracy"] for m in metrics]),
            "f1_score": mean([m["f1_score"] for m in metrics]),
        }


class JsonMatch(_Limited):
    """Correct when the completion, decoded as JSON, equals an ideal answer's JSON."""

    default_max_tokens = 512  # room for longer JSON answers, as the original

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        answers = _ideal_list(sample, self.name)
        sampled = self.sample(
            sample["input"], recorder, temperature=0.0, max_tokens=self.max_tokens
        )
        try:
            sampled_json: Any = json.loads(sampled)
        except ValueError:
            sampled_json = None
        try:
            correct = [json.loads(answer) for answer in answers]
        except ValueError as exc:
            raise SampleError(
                f"eval '{self.name}': an 'ideal' answer is not JSON ({exc})"
            ) from None
        matches = [json_match(sampled_json, c) for c in correct]
        recorder.record_match(
            any(matches), expected=answers, picked=[sampled for m in matches if m]
        )
        recorder.record_metrics(accuracy=float(any(matches)))

    def run(self, recorder: Recorder, max_samples: int | None = None) -> dict[str, Any]:
        self.eval_all_samples(recorder, self.get_samples(), max_samples)
        return {"accuracy": mean([e.data["accuracy"] for e in recorder.events("metrics")])}


# -- class paths -------------------------------------------------------------------------

CLASSES: dict[str, type[Eval]] = {
    "oaievalset.engine.evals:Match": Match,
    "oaievalset.engine.evals:Includes": Includes,
    "oaievalset.engine.evals:FuzzyMatch": FuzzyMatch,
    "oaievalset.engine.evals:JsonMatch": JsonMatch,
    "oaievalset.engine.evals:TestMatch": TestMatch,
    # openai/evals' class paths, so that its registries run unchanged.
    "evals.elsuite.basic.match:Match": Match,
    "evals.elsuite.basic.includes:Includes": Includes,
    "evals.elsuite.basic.fuzzy_match:FuzzyMatch": FuzzyMatch,
    "evals.elsuite.basic.json_match:JsonMatch": JsonMatch,
    "evals.elsuite.test.match:TestMatch": TestMatch,
}


# Classes in modules of their own, imported when an eval uses them.
ELSEWHERE = {
    "oaievalset.engine.modelgraded:ModelBasedClassify": "oaievalset.engine.modelgraded",
    "evals.elsuite.modelgraded.classify:ModelBasedClassify": "oaievalset.engine.modelgraded",
    # Hugging Face datasets: the module imports `datasets` only when an eval reads one.
    "oaievalset.engine.benchmarks:MultipleChoice": "oaievalset.engine.benchmarks",
    "oaievalset.engine.benchmarks:Lambada": "oaievalset.engine.benchmarks",
    "oaievalset.engine.benchmarks:MMMU": "oaievalset.engine.benchmarks",
    "evals.elsuite.multiple_choice:MultipleChoice": "oaievalset.engine.benchmarks",
    "evals.elsuite.lambada:Lambada": "oaievalset.engine.benchmarks",
    "evals.elsuite.mmmu.eval:MMMU": "oaievalset.engine.benchmarks",
}


def eval_class(cls_path: str, eval_name: str) -> type[Eval]:
    """The class for a registry `class:` path: one of ours or openai/evals' that we provide,
    or any importable subclass of Eval."""
    known = CLASSES.get(cls_path)
    if known is not None:
        return known
    if cls_path in ELSEWHERE:
        module = importlib.import_module(ELSEWHERE[cls_path])
        provided: type[Eval] = getattr(module, cls_path.partition(":")[2])
        return provided
    module_name, _, attr = cls_path.partition(":")
    supported = (
        "Match, Includes, FuzzyMatch, JsonMatch, TestMatch, ModelBasedClassify, "
        "MultipleChoice, Lambada, MMMU"
    )
    if module_name and attr and not module_name.startswith("evals."):
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            found = None
        if isinstance(found, type) and issubclass(found, Eval):
            return found
    raise EngineError(
        f"eval '{eval_name}' uses class '{cls_path}', which this oaieval does not provide "
        f"(it runs {supported})"
    )


def make_eval(
    cls: type[Eval],
    completion_fns: Sequence[CompletionFn],
    name: str,
    kwargs: dict[str, Any],
    registry: Any = None,
) -> Eval:
    """Build the eval, turning an argument it does not take into a clear error."""
    if cls.uses_registry:
        kwargs = {**kwargs, "registry": registry}
    try:
        return cls(completion_fns, name=name, **kwargs)
    except TypeError as exc:
        raise EngineError(f"eval '{name}' ({cls.__name__}): bad arguments ({exc})") from None
