"""The benchmark evals that read Hugging Face datasets: MultipleChoice (MMLU, HellaSwag),
Lambada and MMMU. They ask, parse and score as openai/evals' classes of the same names, so
that for the same data and the same server the requests and the record are the same."""

from __future__ import annotations

import ast
import base64
import io
import logging
import random
from collections.abc import Sequence
from typing import Any

from oaievalset.engine.completions import CompletionFn
from oaievalset.engine.errors import EngineError, SampleError
from oaievalset.engine.evals import Eval, accuracy
from oaievalset.engine.hfdata import HfDataset, load_rows, parse_url
from oaievalset.engine.recorder import Recorder

logger = logging.getLogger("oaieval")


def lettered_options(answers: Sequence[str], correct: int, rng: random.Random) -> tuple[str, str]:
    """The answers shuffled with the sample's generator and lettered `A) ...` one a line, and
    the letter of the correct one: the original's order, for the same generator."""
    order = list(range(len(answers)))
    rng.shuffle(order)
    options = "\n".join(f"{chr(ord('A') + i)}) {answers[j]}" for i, j in enumerate(order))
    return options, chr(ord("A") + order.index(correct))


def record_start_match(recorder: Recorder, sampled: str, expected: str) -> None:
    """A match event as the original's `record_and_check_match` writes it for one expected
    answer: correct when the answer starts with it."""
    picked = expected if sampled.startswith(expected) else None
    recorder.record_match(
        picked is not None, expected=[expected], picked=picked, sampled=sampled, options=[expected]
    )


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise SampleError(f"{where}: '{key}' must be text, got {type(value).__name__}")
    return value


def _texts(row: dict[str, Any], key: str, where: str) -> list[str]:
    value = row.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SampleError(f"{where}: '{key}' must be a list of texts")
    return list(value)


def _index(value: Any, key: str, where: str) -> int:
    try:
        return int(value)  # HellaSwag's labels are strings ("2"), MMLU's integers
    except (TypeError, ValueError):
        raise SampleError(f"{where}: '{key}' must be a whole number, got {value!r}") from None


def _check_label(sample: dict[str, Any], column: str, where: str) -> None:
    """The right answer's index must be one of the answers' (the original fails on it when
    the sample is asked, with an error of Python's)."""
    count = len(sample["answers"])
    if not 0 <= sample["label"] < count:
        raise SampleError(
            f"{where}: '{column}' is {sample['label']}, but there are {count} answers"
        )


class _DatasetEval(Eval):
    """An eval whose samples are rows of a Hugging Face dataset, and whose report is the
    accuracy of its matches (no bootstrap spread, as in the original)."""

    required_keys = ()

    def dataset(self) -> HfDataset:
        raise NotImplementedError

    def samples_from(self, rows: list[dict[str, Any]], dataset: HfDataset) -> list[Any]:
        return list(rows)

    def get_samples(self) -> list[Any]:
        dataset = self.dataset()
        return self.samples_from(load_rows(dataset, self.name), dataset)

    def run(self, recorder: Recorder, max_samples: int | None = None) -> dict[str, Any]:
        self.eval_all_samples(recorder, self.get_samples(), max_samples)
        return {"accuracy": accuracy([bool(e.data["correct"]) for e in recorder.events("match")])}


# Which columns hold the question, its answers and the index of the right one, by dataset
# (the original knows these two by their registry names; the hub's names today too).
MULTIPLE_CHOICE_COLUMNS = {
    "hendrycks_test": ("question", "choices", "answer"),
    "cais/mmlu": ("question", "choices", "answer"),
    "hellaswag": ("ctx", "endings", "label"),
    "Rowan/hellaswag": ("ctx", "endings", "label"),
}


class MultipleChoice(_DatasetEval):
    """A question and its answers, lettered in an order shuffled per sample; the model
    answers with one token, correct when it is the right letter."""

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        dataset: str,
        *,
        instructions: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(completion_fns, **kwargs)
        if not isinstance(instructions, str):
            raise EngineError(f"eval '{self.name}': 'instructions' must be text")
        self.instructions = instructions
        self._dataset = parse_url(dataset, self.name)
        if self._dataset.path not in MULTIPLE_CHOICE_COLUMNS:
            known = ", ".join(f"hf://{name}" for name in MULTIPLE_CHOICE_COLUMNS)
            raise EngineError(
                f"eval '{self.name}': MultipleChoice does not know the columns of dataset "
                f"'{self._dataset.path}'; it reads {known}"
            )

    def dataset(self) -> HfDataset:
        return self._dataset

    def samples_from(self, rows: list[dict[str, Any]], dataset: HfDataset) -> list[Any]:
        question, answers, label = MULTIPLE_CHOICE_COLUMNS[dataset.path]
        samples = []
        for number, row in enumerate(rows):
            where = f"eval '{self.name}', dataset {dataset.described()}, row {number}"
            sample = {
                "question": _text(row, question, where),
                "answers": _texts(row, answers, where),
                "label": _index(row.get(label), label, where),
            }
            _check_label(sample, label, where)
            samples.append(sample)
        return samples

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        options, letter = lettered_options(sample["answers"], sample["label"], rng)
        prompt = (
            f"{self.instructions}\nPlease answer with the letter of the correct answer."
            f"\n\n{sample['question']}\n{options}"
        )
        sampled = self.sample(prompt, recorder, temperature=0.0, max_tokens=1)
        record_start_match(recorder, sampled, letter)


LAMBADA = "EleutherAI/lambada_openai"  # the dataset the original reads, split "test"


class Lambada(_DatasetEval):
    """A passage without its last word; correct when the model's answer starts with it."""

    def __init__(self, completion_fns: Sequence[CompletionFn], subset: str, **kwargs: Any) -> None:
        super().__init__(completion_fns, **kwargs)
        if not isinstance(subset, str):
            raise EngineError(f"eval '{self.name}': 'subset' must be a config name such as en")
        self.subset = subset

    def dataset(self) -> HfDataset:
        return HfDataset(LAMBADA, {"name": self.subset, "split": "test"})

    def samples_from(self, rows: list[dict[str, Any]], dataset: HfDataset) -> list[Any]:
        samples = []
        for number, row in enumerate(rows):
            where = f"eval '{self.name}', dataset {dataset.described()}, row {number}"
            words = _text(row, "text", where).split()
            if not words:
                raise SampleError(f"{where}: 'text' is empty")
            samples.append({"context": " ".join(words[:-1]), "word": words[-1]})
        return samples

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        prompt = "Please answer with the word which is most likely to follow:\n\n"
        sampled = self.sample(prompt + sample["context"], recorder, temperature=0.0, max_tokens=8)
        record_start_match(recorder, sampled, sample["word"])


MMMU_IMAGES = tuple(f"image_{n}" for n in range(1, 8))  # the image columns, in order
MMMU_SYSTEM = (
    "You are an expert in {subject} whose job is to answer questions from the user using "
    "images. First, reason about the correct answer. Then write the answer in the following "
    "format where X is "
)
MMMU_FORMAT = {
    "multiple-choice": 'exactly one of A,B,C,D: "ANSWER: X". If you are uncertain of the '
    "correct answer, guess the most likely one.",
    "open": 'only the answer and nothing else: "ANSWER: X"',
}


def png_data_url(image: Any) -> str:
    """An image (as `datasets` decodes it, a PIL image) as the original sends it: encoded
    again as PNG, in a base64 data URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class MMMU(_DatasetEval):
    """A question about images, sent with them as image parts; correct when the answer
    says `ANSWER: ` and the right letter (or, for open questions, the right answer). A
    multiple-choice answer that says no `ANSWER` is a guess drawn with the sample's
    generator, as in the MMMU paper and the original."""

    def __init__(
        self, completion_fns: Sequence[CompletionFn], dataset: str, subject: str, **kwargs: Any
    ) -> None:
        super().__init__(completion_fns, **kwargs)
        parsed = parse_url(dataset, self.name)
        self.subject = subject
        # The original always reads mmmu/mmmu whatever the URL names; the URL's own path is
        # taken here, so that a registry may name the dataset as the hub has it today.
        self._dataset = parsed

    def dataset(self) -> HfDataset:
        return self._dataset

    def samples_from(self, rows: list[dict[str, Any]], dataset: HfDataset) -> list[Any]:
        samples = []
        for number, row in enumerate(rows):
            where = f"eval '{self.name}', dataset {dataset.described()}, row {number}"
            kind = _text(row, "question_type", where)
            answer = _text(row, "answer", where)
            try:
                answers = ast.literal_eval(_text(row, "options", where))
            except (ValueError, SyntaxError):
                answers = None
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise SampleError(f"{where}: 'options' must be a Python list of texts")
            images = [row.get(column) for column in MMMU_IMAGES]
            for column, image in zip(MMMU_IMAGES, images):
                if image is not None and not callable(getattr(image, "save", None)):
                    raise SampleError(
                        f"{where}: '{column}' is not an image (a datasets Image feature)"
                    )
            sample: dict[str, Any] = {
                "question": _text(row, "question", where),
                "answers": answers,
                "label": answer,
                "question_type": kind,
                "images": [image for image in images if image is not None],
            }
            if kind == "multiple-choice":
                if len(answer) != 1:
                    raise SampleError(f"{where}: 'answer' must be one letter, got {answer!r}")
                sample["label"] = ord(answer) - ord("A")
                _check_label(sample, "answer", where)
            samples.append(sample)
        return samples

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        multiple_choice = sample["question_type"] == "multiple-choice"
        text = sample["question"]
        if multiple_choice:
            options, expected = lettered_options(sample["answers"], sample["label"], rng)
            text += "\n" + options
            system = MMMU_SYSTEM + MMMU_FORMAT["multiple-choice"]
        else:
            expected = sample["label"]
            system = MMMU_SYSTEM + MMMU_FORMAT["open"]
        images = [
            {"type": "image_url", "image_url": {"url": png_data_url(image)}}
            for image in sample["images"]
        ]
        prompt = [
            {
                "role": "system",
                "content": [{"type": "text", "text": system.format(subject=self.subject)}],
            },
            {"role": "user", "content": [{"type": "text", "text": text}, *images]},
        ]
        sampled = self.sample(prompt, recorder, temperature=0.0, max_tokens=4096)
        correct = f"ANSWER: {expected}" in sampled
        if not correct and "ANSWER" not in sampled and multiple_choice:
            logger.info("No answer found for multiple choice so picking a random answer.")
            guess = chr(ord("A") + rng.randint(0, len(sample["answers"]) - 1))
            correct = guess == expected
        recorder.record_match(
            correct, expected=expected, picked=expected if correct else None, sampled=sampled
        )
