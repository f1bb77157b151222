"""Small Hugging Face datasets made on the spot, under the names the registries use
(`hendrycks_test`, `hellaswag`, `EleutherAI/lambada_openai`, `mmmu/mmmu`): a folder of that
name in a working directory, with a README.md whose `configs:` block names the splits'
files, which is how `datasets` loads a local dataset. A program started in that directory
with HF_DATASETS_OFFLINE=1 reads them without any network, the original as well as ours.

The rows are generated from a seed; each maker returns the right answer of every question
(question -> the text of the right option, or the answer of an open question), and LAMBADA's
passage without its last word -> that word.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

SUBJECTS = ("abstract_algebra", "anatomy", "world_religions")
MMMU_SUBJECTS = ("Accounting", "Art")


def _readme(configs: dict[str, dict[str, str]]) -> str:
    """The README.md of a local dataset: config name -> split -> file."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, path in splits.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
    return "\n".join([*lines, "---", ""])


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def mmlu(
    root: Path, subjects: tuple[str, ...] = SUBJECTS, rows: int = 6, name: str = "hendrycks_test"
) -> dict[str, str]:
    """`hendrycks_test` (or another name): a config per subject, its validation split."""
    configs = {}
    key = {}
    for subject in subjects:
        rng = random.Random(subject)
        made = []
        for n in range(rows):
            choices = [f"{subject} answer {n}.{k} ({rng.randint(0, 999)})" for k in range(4)]
            question = f"Question {n} of {subject.replace('_', ' ')}: which is right?"
            answer = rng.randrange(4)
            made.append({"question": question, "choices": choices, "answer": answer})
            key[question] = choices[answer]
        _jsonl(root / name / subject / "validation.jsonl", made)
        configs[subject] = {"validation": f"{subject}/validation.jsonl"}
    (root / name / "README.md").write_text(_readme(configs))
    return key


def hellaswag(root: Path, rows: int = 6) -> dict[str, str]:
    """`hellaswag`: its default config, a validation split with string labels as the hub's."""
    rng = random.Random("hellaswag")
    made: list[dict[str, Any]] = []
    for n in range(rows):
        endings = [f"and then ending {k} of story {n} ({rng.randint(0, 99)})." for k in range(4)]
        made.append({"ctx": f"Story {n} begins, and", "endings": endings, "label": str(n % 4)})
    _jsonl(root / "hellaswag" / "data" / "validation.jsonl", made)
    readme = _readme({"default": {"validation": "data/validation.jsonl"}})
    (root / "hellaswag" / "README.md").write_text(readme)
    return {row["ctx"]: row["endings"][int(row["label"])] for row in made}


def lambada(root: Path, rows: int = 6) -> dict[str, str]:
    """`EleutherAI/lambada_openai`: the `en` config, its test split."""
    rng = random.Random("lambada")
    words = ["river", "lantern", "window", "garden", "letter", "morning", "silver", "harbor"]
    made = [
        {"text": " ".join(rng.choice(words) for _ in range(6 + n)) + f" word{n}"}
        for n in range(rows)
    ]
    _jsonl(root / "EleutherAI" / "lambada_openai" / "en" / "test.jsonl", made)
    readme = _readme({"en": {"test": "en/test.jsonl"}})
    (root / "EleutherAI" / "lambada_openai" / "README.md").write_text(readme)
    return {" ".join(r["text"].split()[:-1]): r["text"].split()[-1] for r in made}


def png(seed: int, size: int = 8) -> bytes:
    """A small PNG of coloured squares."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))] * size * size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mmmu(root: Path, subjects: tuple[str, ...] = MMMU_SUBJECTS, rows: int = 6) -> dict[str, str]:
    """`mmmu/mmmu`: a config per subject with dev and validation splits in parquet, the
    images as `datasets` image features (one to three a question, none in the last
    columns), multiple-choice and open questions."""
    import datasets

    image = datasets.Image()
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "options": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "question_type": datasets.Value("string"),
            **{f"image_{k}": image for k in range(1, 8)},
        }
    )
    configs = {}
    key = {}
    for subject in subjects:
        splits = {}
        for split in ("dev", "validation"):
            rng = random.Random(f"{subject}-{split}")
            columns: dict[str, list[Any]] = {name: [] for name in features}
            for n in range(rows):
                kind = "open" if n % 3 == 2 else "multiple-choice"
                options = [] if kind == "open" else [f"option {k} of {n}" for k in range(4)]
                columns["id"].append(f"{split}_{subject}_{n}")
                question = f"What does <image 1> show in {subject} {split} {n}?"
                columns["question"].append(question)
                columns["options"].append(repr(options))
                answer = str(rng.randint(1, 99)) if kind == "open" else "ABCD"[rng.randrange(4)]
                columns["answer"].append(answer)
                key[question] = answer if kind == "open" else options["ABCD".index(answer)]
                columns["question_type"].append(kind)
                for k in range(1, 8):
                    picture = png(rng.randrange(10**6)) if k <= 1 + n % 3 else None
                    columns[f"image_{k}"].append(
                        None if picture is None else {"bytes": picture, "path": None}
                    )
            path = root / "mmmu" / "mmmu" / subject / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
            splits[split] = f"{subject}/{split}.parquet"
        configs[subject] = splits
    (root / "mmmu" / "mmmu" / "README.md").write_text(_readme(configs))
    return key


def all_datasets(root: Path) -> dict[str, str]:
    """Every dataset above, in `root`; the answers of all."""
    return {**mmlu(root), **hellaswag(root), **lambada(root), **mmmu(root)}
