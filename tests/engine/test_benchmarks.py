"""The Hugging Face benchmark evals in our oaieval and oaievalset, run as a user runs them:
real processes, the real `datasets` reading small local datasets offline (helpers/hf_data.py),
a chat server on loopback. What the original does the same way is in
tests/original/test_hf_against_original.py; here, what goes beyond it: the bundled mmlu set,
the errors that say what to do, and the hub's names of today."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import hf_data
from helpers.chat_server import ChatServer
from helpers.records import per_sample

pytest.importorskip("datasets", reason="the hf extra (datasets) is not installed")

BIN = Path(sys.executable).parent
MODEL = "gpt-4-test"

REGISTRY = Path(__file__).resolve().parents[2] / "registry"
# The configs of the 57 subjects, as the bundled registry names them.
MMLU_SUBJECTS = tuple(
    re.findall(r"hf://hendrycks_test\?name=(\w+)&", (REGISTRY / "evals" / "mmlu.yaml").read_text())
)


def env(tmp_path: Path, server: ChatServer | None = None) -> dict[str, str]:
    values = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "OPENAI_API_KEY": "sk-test",
        "EVALS_THREADS": "2",
    }
    if server is not None:
        values["OPENAI_BASE_URL"] = server.base_url
    return values


def oaieval(
    args: list[str], cwd: Path, tmp_path: Path, server: ChatServer | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "oaieval"), *args],
        cwd=cwd,
        env=env(tmp_path, server),
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("oaieval: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def art_registry(tmp_path: Path) -> Path:
    """A registry with one MMMU eval, `art.dev.v1`, of the Art subject's dev split."""
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "evals" / "art.yaml").write_text(
        "art.dev.v1:\n  class: evals.elsuite.mmmu.eval:MMMU\n"
        "  args:\n    dataset: hf://mmmu/mmmu?name=Art&split=dev\n    subject: Art\n"
    )
    return root


def test_the_bundled_mmlu_set_runs_all_57_subjects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert len(MMLU_SUBJECTS) == 57
    key = hf_data.mmlu(data, subjects=MMLU_SUBJECTS, rows=2)

    def answer(request: dict[str, Any]) -> str:
        # The right letter for the first question of each subject, a wrong one otherwise.
        text: str = request["messages"][0]["content"]
        question, *options = text.split("\n\n", 1)[1].split("\n")
        right = next(o[0] for o in options if o[3:] == key[question])
        wrong = next(o[0] for o in options if o[0] != right)
        return right if question.startswith("Question 0 ") else wrong

    server = ChatServer(answer_fn=answer, models=(MODEL,)).start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "oaievalset", MODEL, "mmlu", "-j", "3"],
            cwd=data, env=env(tmp_path, server), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(">>> Running command: oaieval") == 57
    assert "mmlu-world-religions.val.ab-v1" in done.stdout
    assert len(server.requests) == 57 * 2
    assert {r["max_tokens"] for r in server.requests} == {1}
    report_path = Path(os.environ["OAIEVALSET_PROGRESS_DIR"]) / f"{MODEL}.mmlu.progress.d"
    reports = list(report_path.rglob("report.json"))
    assert reports, list(report_path.rglob("*"))
    report = json.loads(reports[0].read_text())
    text = json.dumps(report)
    assert text.count('"accuracy": 0.5') == 57, text[:2000]


def test_the_hubs_name_of_today_works_in_a_registry_of_ones_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = hf_data.mmlu(data, subjects=("anatomy",), rows=4, name="cais/mmlu")
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "evals" / "mine.yaml").write_text(
        "my-anatomy.val.v1:\n  class: evals.elsuite.multiple_choice:MultipleChoice\n"
        "  args:\n    dataset: hf://cais/mmlu?name=anatomy&split=validation\n"
        "    instructions: Think of the body.\n"
    )

    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][0]["content"]
        question, *options = text.split("\n\n", 1)[1].split("\n")
        return str(next(o[0] for o in options if o[3:] == key[question]))

    server = ChatServer(answer_fn=answer, models=(MODEL,)).start()
    record = tmp_path / "record.jsonl"
    try:
        args = [MODEL, "my-anatomy.val.v1", "--registry_path", str(root)]
        done = oaieval([*args, "--record_path", str(record)], data, tmp_path, server)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    events, report = per_sample(record)
    assert report["accuracy"] == 1.0 and len(events) == 4
    prompt = server.requests[0]["messages"][0]["content"]
    assert prompt.startswith("Think of the body.\nPlease answer with the letter")


def test_without_datasets_the_error_names_the_extra(tmp_path: Path) -> None:
    # `datasets` made unimportable in this process only, as on a plain install.
    code = (
        "import sys; sys.modules['datasets'] = None; "
        "from oaievalset.engine.cli import main; raise SystemExit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "dummy", "mmlu-anatomy"],
        cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    line = error_line(done)
    assert "'mmlu-anatomy.val.ab-v1'" in line and "pip install 'oaievalset[hf]'" in line


def test_without_pillow_mmmus_images_name_the_extra(tmp_path: Path) -> None:
    hf_data.mmmu(tmp_path, subjects=("Art",), rows=1)
    root = art_registry(tmp_path)
    code = (
        "import sys; sys.modules['PIL'] = None; "
        "from oaievalset.engine.cli import main; raise SystemExit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "dummy", "art.dev.v1", "--registry_path", str(root)],
        cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert "Pillow" in line and "pip install 'oaievalset[hf]'" in line


def test_a_dataset_that_moved_on_the_hub_says_what_works_instead(tmp_path: Path) -> None:
    done = oaieval(["dummy", "mmlu-anatomy"], tmp_path, tmp_path)  # offline, no copy here
    assert done.returncode == 2
    line = error_line(done)
    assert "eval 'mmlu-anatomy.val.ab-v1'" in line and "'hendrycks_test'" in line
    assert "hf://cais/mmlu?name=anatomy&split=validation" in line
    assert "folder 'hendrycks_test' in the working directory" in line


def test_a_missing_config_names_the_ones_there_are(tmp_path: Path) -> None:
    hf_data.mmlu(tmp_path, subjects=("anatomy",), rows=1)
    done = oaieval(["dummy", "mmlu-astronomy"], tmp_path, tmp_path)
    assert done.returncode == 2
    line = error_line(done)
    assert "'mmlu-astronomy.val.ab-v1'" in line and "astronomy" in line and "anatomy" in line
    assert "cais/mmlu" not in line  # the dataset was found: its name is not the problem


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("    dataset: hendrycks_test\n", "is not a Hugging Face dataset URL"),
        ("    dataset: hf://squad?split=validation\n", "does not know the columns of dataset"),
        ("    dataset: hf://hendrycks_test?name=anatomy\n", "choose one with split=NAME"),
    ],
)
def test_a_bad_dataset_argument_is_a_one_line_error(
    tmp_path: Path, args: str, expected: str
) -> None:
    hf_data.mmlu(tmp_path, subjects=("anatomy",), rows=1)
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "evals" / "bad.yaml").write_text(
        "bad.val.v1:\n  class: evals.elsuite.multiple_choice:MultipleChoice\n  args:\n" + args
    )
    done = oaieval(["dummy", "bad.val.v1", "--registry_path", str(root)], tmp_path, tmp_path)
    assert done.returncode == 2, done.stderr
    line = error_line(done)
    assert "eval 'bad.val.v1'" in line and expected in line


def test_a_bad_row_names_the_dataset_and_the_row(tmp_path: Path) -> None:
    hf_data.mmlu(tmp_path, subjects=("anatomy",), rows=3)
    path = tmp_path / "hendrycks_test" / "anatomy" / "validation.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["answer"] = 7  # four choices only
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = oaieval(["dummy", "mmlu-anatomy"], tmp_path, tmp_path)
    assert done.returncode == 1, done.stderr
    line = error_line(done)
    assert "eval 'mmlu-anatomy.val.ab-v1'" in line and "'hendrycks_test'" in line
    assert "row 1: 'answer' is 7, but there are 4 answers" in line


def test_the_plan_counts_the_questions_quietly_and_an_image_as_an_image(tmp_path: Path) -> None:
    hf_data.mmlu(tmp_path, subjects=("anatomy",), rows=3)
    hf_data.mmmu(tmp_path, subjects=("Art",), rows=3)
    root = art_registry(tmp_path)
    (root / "eval_sets").mkdir()
    (root / "eval_sets" / "s.yaml").write_text("both:\n  evals: [mmlu-anatomy, art.dev.v1]\n")
    done = subprocess.run(
        [sys.executable, "-m", "oaievalset", MODEL, "both", "--registry_path", str(root),
         "--plan", "--json"],
        cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Generating" not in done.stderr and "examples/s" not in done.stderr
    plan = {c["eval"]: c["estimate"] for c in json.loads(done.stdout)["commands"]}
    anatomy, art = plan["mmlu-anatomy.val.ab-v1"], plan["art.dev.v1"]
    assert anatomy["requests"] == 3 and art["requests"] == 3
    # Rows 0, 1 and 2 have 1, 2 and 3 images: 6 of 765 tokens, and some text.
    assert 6 * 765 < art["input_tokens"] < 6 * 765 + 400, art


def test_an_image_the_server_refuses_stops_mmmu_without_a_record(tmp_path: Path) -> None:
    hf_data.mmmu(tmp_path, subjects=("Art",), rows=2)
    root = art_registry(tmp_path)
    server = ChatServer(fail_status=400, models=(MODEL,)).start()
    record = tmp_path / "record.jsonl"
    try:
        args = [MODEL, "art.dev.v1", "--registry_path", str(root), "--record_path", str(record)]
        done = oaieval(args, tmp_path, tmp_path, server)
    finally:
        server.stop()
    assert done.returncode == 1, done.stderr
    assert "400" in error_line(done) and not record.exists()
    assert server.requests and server.requests[0]["messages"][1]["content"][1]["type"] == (
        "image_url"
    )


def test_data_read_once_comes_from_the_hugging_face_cache_offline(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    second.mkdir()
    hf_data.mmlu(first, subjects=("anatomy",), rows=3)
    server = ChatServer(default_answer="B", models=(MODEL,)).start()
    reports = []
    try:
        for where in (first, second):  # the second folder has no copy: only the cache does
            record = where / "record.jsonl"
            done = oaieval(
                [MODEL, "mmlu-anatomy", "--record_path", str(record)], where, tmp_path, server
            )
            assert done.returncode == 0, done.stderr
            reports.append(per_sample(record))
    finally:
        server.stop()
    assert len(server.requests) == 6
    asked = [sorted(json.dumps(r, sort_keys=True) for r in half)
             for half in (server.requests[:3], server.requests[3:])]  # fmt: skip
    assert asked[0] == asked[1]
    assert reports[0] == reports[1] and len(reports[0][0]) == 3


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"options": "['a', 'b'", "answer": "A"}, "row 0: 'options' must be a Python list"),
        ({"options": "['a', 'b']", "answer": "AB"}, "row 0: 'answer' must be one letter"),
        ({"options": "['a', 'b']", "answer": "C"}, "row 0: 'answer' is 2, but there are 2"),
    ],
)
def test_a_bad_mmmu_row_names_the_row(tmp_path: Path, row: dict[str, str], expected: str) -> None:
    folder = tmp_path / "mmmu" / "mmmu"
    folder.mkdir(parents=True)
    row = {"question": "Which?", "question_type": "multiple-choice", **row}
    (folder / "dev.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: Art\n  data_files:\n"
        "  - split: dev\n    path: dev.jsonl\n---\n"
    )
    root = art_registry(tmp_path)
    done = oaieval(["dummy", "art.dev.v1", "--registry_path", str(root)], tmp_path, tmp_path)
    assert done.returncode == 1, done.stderr
    line = error_line(done)
    assert "eval 'art.dev.v1', dataset 'mmmu/mmmu' (name=Art, split=dev)" in line
    assert expected in line
