"""Model-graded evals: a model answers, then a grading model classifies the answer with the
prompt of a model-graded spec (a registry root's `modelgraded/*.yaml`). It asks, parses and
scores as openai/evals' `ModelBasedClassify` does, so that the two give the same choices."""

from __future__ import annotations

import copy
import random
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from oaievalset.engine.completions import CompletionFn, Prompt, is_chat_prompt
from oaievalset.engine.errors import EngineError, SampleError
from oaievalset.engine.evals import Eval, logger
from oaievalset.engine.recorder import Recorder
from oaievalset.registry import ModelGradedSpec, Registry

INVALID = "__invalid__"  # the choice when the grader's answer names none

# What the grader is told to answer, by eval type: the original's words, so that the
# grader is asked the same thing.
# (The Japanese prompt's full-width punctuation is its own: ruff's RUF001 is off for it.)
ANSWER_PROMPTS = {
    "classify": "Answer the question by printing only a single choice from {choices} "
    "(without quotes or punctuation) corresponding to the correct answer with no other text.",
    "classify_cot": "First, answer by printing a single choice from {choices} (without quotes "
    "or punctuation) corresponding to the correct answer. Then, from the next line, explain "
    "your reasonings step by step.",
    "cot_classify": "First, write out in a step by step manner your reasoning to be sure that "
    "your conclusion is correct. Avoid simply stating the correct answer at the outset. Then "
    "print only a single choice from {choices} (without quotes or punctuation) on its own "
    "line corresponding to the correct answer. At the end, repeat just the answer by itself "
    "on a new line.\n\nReasoning:",
    "cot_classify_jp": "まず、一歩一歩あなたの推論を書き出してください。単に正しい答えを最初に"
    "述べることを避けてください。次に、{choices}（引用符や句読点なし）から正しい答えに対応する1つの"  # noqa: RUF001
    "選択肢を単独の行に書きだしてください。最後に、答えだけを新しい行に繰り返してください。\n\n推論：",  # noqa: RUF001
}

# How a line of the grader's answer is matched against a choice (line, choice).
MATCH_FNS: dict[str, Callable[[str, str], Any]] = {
    "include": lambda line, choice: float(line in choice),
    "exact": lambda line, choice: float(line == choice),
    "endswith": lambda line, choice: line.endswith(choice),
    "starts_or_endswith": lambda line, choice: line.startswith(choice) or line.endswith(choice),
}


# -- prompts ------------------------------------------------------------------------------


def chat_to_text(prompt: list[dict[str, Any]]) -> str:
    """A chat prompt as text, to fill a template: one message is its content; more are one
    line each, prefixed by the role (`User: `...; system messages bare)."""
    if len(prompt) == 1:
        return str(prompt[0]["content"])
    prefixes = {"system": "", "example_user": "User: ", "example_assistant": "Assistant: "}
    text = ""
    for message in prompt:
        role = message["name"] if "name" in message else message["role"]
        text += f"{prefixes.get(role, role.capitalize() + ': ')}{message['content']}\n"
    return text.lstrip()


def fill(template: str, **values: Any) -> str:
    """The template with its fields filled; every field must have a value."""
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    missing = [name for name in fields if name not in values]
    if missing:
        raise SampleError(
            f"the prompt needs {', '.join(repr(m) for m in missing)}, which the sample "
            f"and the spec's arguments do not give (they give {', '.join(sorted(values))})"
        )
    return template.format(**{name: values[name] for name in fields})


def fill_prompt(prompt: Prompt, values: dict[str, Any]) -> Prompt:
    """A prompt (text or chat) with its fields filled; chat values are put in as text."""
    values = {k: chat_to_text(v) if is_chat_prompt(v) else v for k, v in values.items()}
    if isinstance(prompt, str):
        return fill(prompt, **values)
    filled = []
    for message in prompt:
        message = dict(message)
        if "content" in message:
            message["content"] = fill(message["content"], **values)
        filled.append(message)
    return filled


def scrub(prompt: Any) -> Any:
    """Braces doubled, so that a sample's own braces survive being filled in.

    As the original, the messages of a chat prompt are changed in place: the sample then
    holds the doubled braces, and the grader's prompt shows them so.
    """
    if is_chat_prompt(prompt):
        for message in prompt:
            if "content" in message:
                message["content"] = message["content"].replace("{", "{{").replace("}", "}}")
        return copy.copy(prompt)
    if isinstance(prompt, str):
        return prompt.replace("{", "{{").replace("}", "}}")
    return prompt


class PromptFn:
    """A prompt template asked of one completion function with the original's request
    parameters: max_tokens, temperature (0), top_p 1, no penalties, n."""

    def __init__(
        self,
        prompt: Prompt,
        completion_fn: CompletionFn,
        max_tokens: int,
        temperature: float = 0,
        n_samples: int | None = None,
        completion_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.prompt = prompt
        self.completion_fn = completion_fn
        self.params = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": 1,
            "frequency_penalty": 0,
            "presence_penalty": 0,
            "n": 1 if n_samples is None else n_samples,
            **(completion_kwargs or {}),
        }

    def __call__(self, recorder: Recorder, **values: Any) -> tuple[str, Prompt]:
        prompt = fill_prompt(self.prompt, values)
        completion = self.completion_fn(prompt, **self.params)
        if completion.sampling is not None:
            recorder.record("sampling", completion.sampling)
        return completion.text, prompt


def prompt_fn(prompt: Prompt, fn: CompletionFn, kwargs: dict[str, Any], what: str) -> PromptFn:
    try:
        return PromptFn(prompt, fn, **kwargs)
    except TypeError:
        allowed = "max_tokens, temperature, n_samples, completion_kwargs"
        raise EngineError(f"{what} takes only {allowed}; got {', '.join(sorted(kwargs))}") from None


# -- choices ------------------------------------------------------------------------------


def choice_strings_of(spec: ModelGradedSpec, n: int) -> list[str]:
    """The choices: listed, or `from_n` (1..n), `from_n_abc`, `from_n_ABC`; a string lists
    one choice per character."""
    given = spec.choice_strings
    if given == "from_n":
        choices = [str(i + 1) for i in range(n)]
    elif given == "from_n_abc":
        choices = [string.ascii_lowercase[i % 26] for i in range(n)]
    elif given == "from_n_ABC":
        choices = [string.ascii_uppercase[i % 26] for i in range(n)]
    else:
        choices = [str(c) for c in given]
    for choice in choices:
        if any(c in string.punctuation for c in choice):
            raise EngineError(f"{spec.file}: spec '{spec.key}': choice '{choice}' has punctuation")
    return choices


def parse_choice(text: str, eval_type: str, match: str, choices: Sequence[str]) -> str:
    """The first line of the answer (the last, for cot_classify) that names a choice, with
    punctuation removed, matched as `match` says; `__invalid__` if none does."""
    lines = text.strip().split("\n")
    if eval_type.startswith("cot_classify"):
        lines = lines[::-1]
    test = MATCH_FNS[match]
    for line in lines:
        line = "".join(c for c in line.strip() if c not in string.punctuation)
        if not line:
            continue
        for choice in choices:
            if test(line, choice):
                return choice
    logger.warning(f"Choices {list(choices)} not parsable for {eval_type}: {text}")
    return INVALID


def score_of(choice: str, choices: Sequence[str], scores: Any) -> float | None:
    """The choice's score; an invalid choice scores the lowest."""
    if scores is None:
        return None
    if scores == "from_strings":
        scores = {c: float(c) for c in choices}
    if choice == INVALID:
        return float(min(scores.values()))
    if choice not in scores:
        raise EngineError(f"choice '{choice}' has no score in the spec's choice_scores")
    return float(scores[choice])


# -- the eval -----------------------------------------------------------------------------


class ModelBasedClassify(Eval):
    """A model answers each sample; the last completion function (the model itself when
    there is one) classifies the answer with a model-graded spec's prompt."""

    required_keys = ()  # the spec's input_outputs say which keys a sample needs
    uses_registry = True

    def __init__(
        self,
        completion_fns: Sequence[CompletionFn],
        samples_jsonl: str,
        modelgraded_spec: str,
        *,
        modelgraded_spec_args: dict[str, Any] | None = None,
        sample_kwargs: dict[str, Any] | None = None,
        eval_kwargs: dict[str, Any] | None = None,
        multicomp_n: int | str = 1,
        eval_type: str | None = None,
        match_fn: str | None = None,
        metaeval: bool = False,
        registry: Registry | None = None,
        **kwargs: Any,
    ) -> None:
        fns = list(completion_fns)
        models = fns[:-1] if len(fns) > 1 else fns
        super().__init__(models[:1], samples_jsonl=samples_jsonl, **kwargs)  # answers
        self.grader = fns[-1]
        self.models = models
        self.sample_kwargs = {"max_tokens": 1024, **(sample_kwargs or {})}
        self.eval_kwargs = {"max_tokens": 1024, **(eval_kwargs or {})}
        self.spec_args = dict(modelgraded_spec_args or {})
        self.metaeval = metaeval
        self.match_fn = match_fn or "starts_or_endswith"
        if self.match_fn not in MATCH_FNS:
            raise EngineError(
                f"eval '{self.name}': match_fn '{match_fn}' is none of {', '.join(MATCH_FNS)}"
            )
        self.multicomp_n = self._multicomp(multicomp_n)
        self.spec = (registry or Registry()).require_modelgraded_spec(modelgraded_spec)
        self.eval_type = eval_type
        self.parse_type = self.spec.eval_type or eval_type
        if self.parse_type is None:  # the original fails on it mid-eval
            raise EngineError(
                f"eval '{self.name}': no eval_type, neither in its args nor in spec "
                f"'{self.spec.key}'; add eval_type: classify (or cot_classify, classify_cot)"
            )
        if eval_type and eval_type not in ANSWER_PROMPTS:
            known = ", ".join(ANSWER_PROMPTS)
            raise EngineError(f"eval '{self.name}': eval_type '{eval_type}' is none of {known}")
        self.choices = choice_strings_of(self.spec, self.multicomp_n)
        self.grader_prompt = self._grader_prompt()
        # Bad keyword arguments are found now, not at the first sample.
        prompt_fn("", self.grader, self.eval_kwargs, f"eval '{self.name}': eval_kwargs")
        prompt_fn("", self.grader, self.sample_kwargs, f"eval '{self.name}': sample_kwargs")

    def _multicomp(self, multicomp_n: int | str) -> int:
        models = len(self.models) if len(self.models) > 1 else 1
        if multicomp_n == "from_models":
            if models < 2:
                raise EngineError(
                    f"eval '{self.name}': multicomp_n: from_models needs several models "
                    f"before the grader (MODEL1,MODEL2,GRADER)"
                )
            return models
        if not isinstance(multicomp_n, int) or multicomp_n < 1:
            raise EngineError(f"eval '{self.name}': multicomp_n must be a number or from_models")
        if models > 1 and multicomp_n != models:
            raise EngineError(
                f"eval '{self.name}': {models} models are given, so multicomp_n must be "
                f"{models} (or from_models), not {multicomp_n}"
            )
        return multicomp_n

    def _grader_prompt(self) -> list[dict[str, Any]]:
        """The spec's prompt as chat messages, with the answer instructions of eval_type."""
        prompt = self.spec.prompt
        messages = (
            [{"role": "user", "content": prompt}]
            if isinstance(prompt, str)
            else [dict(m) for m in prompt]
        )
        if self.eval_type:
            choices = " or ".join(f'"{choice}"' for choice in self.choices)
            answer = fill(ANSWER_PROMPTS[self.eval_type], choices=choices)
            messages[-1]["content"] += "\n\n" + answer
        return messages

    def eval_sample(self, sample: dict[str, Any], rng: random.Random, recorder: Recorder) -> None:
        for key in self.spec.input_outputs:
            if key not in sample:
                raise SampleError(
                    f"eval '{self.name}': a sample has no '{key}', which spec "
                    f"'{self.spec.key}' reads (its input_outputs)"
                )
            sample[key] = scrub(sample[key])
        answers = {}
        for key, output in self.spec.input_outputs.items():
            if output not in sample:  # the sample carries the answer already
                answers[output] = self._answer(sample[key], recorder)
        values = {**answers, **sample, **self.spec_args}
        if "n" in values:  # the original fails on it: n is the number of answers
            raise SampleError(f"eval '{self.name}': a sample or spec argument is named 'n'")
        grader = prompt_fn(self.grader_prompt, self.grader, self.eval_kwargs, "eval_kwargs")
        text, _ = grader(recorder, n=self.multicomp_n, **values)
        choice = parse_choice(text, self.parse_type or "", self.match_fn, self.choices)
        metrics: dict[str, Any] = {
            "choice": choice,
            "score": score_of(choice, self.choices, self.spec.choice_scores),
        }
        if self.metaeval:
            if "choice" not in sample:
                raise SampleError(f"eval '{self.name}': metaeval needs a 'choice' in each sample")
            metrics["metascore"] = choice == sample["choice"]
        recorder.record("metrics", metrics)

    def _answer(self, prompt: Any, recorder: Recorder) -> str:
        """The model's answer, or with multicomp_n the n answers in the spec's template."""
        if self.multicomp_n == 1:
            ask = prompt_fn(prompt, self.completion_fn, self.sample_kwargs, "sample_kwargs")
            return ask(recorder)[0]
        template = self.spec.output_template
        if not template:
            raise EngineError(
                f"spec '{self.spec.key}' has no output_template, which multicomp_n needs"
            )
        text = ""
        for i in range(self.multicomp_n):
            model = self.models[i] if len(self.models) > 1 else self.models[0]
            answer = prompt_fn(prompt, model, self.sample_kwargs, "sample_kwargs")(recorder)[0]
            letter = i % 26
            text += fill(
                template,
                i=i + 1,
                i_abc=string.ascii_lowercase[letter],
                i_ABC=string.ascii_uppercase[letter],
                output=answer,
                n=self.multicomp_n,
            )
        return text.strip()

    def run(self, recorder: Recorder, max_samples: int | None = None) -> dict[str, Any]:
        self.eval_all_samples(recorder, self.get_samples(), max_samples)
        metrics = [e.data for e in recorder.events("metrics")]
        report: dict[str, Any] = {}
        if not metrics:
            return report
        counts = Counter(m["choice"] for m in metrics)
        report.update({f"counts/{choice}": count for choice, count in counts.items()})
        scores = [m["score"] for m in metrics if m["score"] is not None]
        if scores:
            report["score"] = sum(scores) / len(scores)
        metascores = [m["metascore"] for m in metrics if "metascore" in m]
        if metascores:
            report["metascore"] = sum(metascores) / len(metascores)
        return report
