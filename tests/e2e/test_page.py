"""Comparing a set across models, and the report page in a real headless Chromium.

Three models run test-basic for real: the offline `dummy`, and two models of a loopback
server through our oaieval and the `openai` package, one always right and one right only on
some questions. The browser is Debian's chromium-headless-shell, driven by Playwright,
started inside a network namespace of its own (only loopback) when the machine allows it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import run_cli

CHROMIUM = os.environ.get("OAIEVALSET_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell")
MODELS = ("dummy", "model-a", "org/model-b")
RIGHT_FOR_B = {"Which planet is known as the red planet?", "What is the chemical symbol for gold?",
               "How many sides does a hexagon have?", "Once upon a "}  # fmt: skip
EXPECTED = {  # accuracy by model and eval
    "dummy": dict.fromkeys(
        ["test-match.s1.simple-v0", "test-fuzzy-match.s1.simple-v0",
         "test-includes.s1.simple-v0", "test-includes-ignore-case.s1.simple-v0"], 0.0),
    "model-a": dict.fromkeys(
        ["test-match.s1.simple-v0", "test-fuzzy-match.s1.simple-v0",
         "test-includes.s1.simple-v0", "test-includes-ignore-case.s1.simple-v0"], 1.0),
    "org/model-b": {"test-match.s1.simple-v0": 1 / 3, "test-fuzzy-match.s1.simple-v0": 0.5,
                    "test-includes.s1.simple-v0": 0.5,
                    "test-includes-ignore-case.s1.simple-v0": 0.5},
}  # fmt: skip
TOKENS = {"dummy": 0, "model-a": 42, "org/model-b": 42}  # 21 requests of 2 tokens each


def ideal_answers() -> dict[str, str]:
    from oaievalset.registry import bundled_registry_path

    answers = {"Once upon a ": "time", "The first US president was ": "George Washington",
               "OpenAI was founded in 20": "15"}  # fmt: skip
    samples = bundled_registry_path() / "data" / "test_basic" / "samples.jsonl"
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        answers[sample["input"][-1]["content"]] = sample["ideal"][0]
    return answers


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A progress folder in which the three models have run test-basic."""
    ideal = ideal_answers()

    def answer(request: dict[str, Any]) -> str:
        question = request["messages"][-1]["content"]
        if request["model"] == "model-a" or question in RIGHT_FOR_B:
            return ideal[question]
        return "I am not sure."

    server = ChatServer(answer_fn=answer, models=("model-a", "org/model-b")).start()
    base = tmp_path_factory.mktemp("runs")
    env = {
        "OAIEVALSET_PROGRESS_DIR": str(base / "progress"),
        "OAIEVAL_RECORD_DIR": str(base / "evallogs"),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-page",
        "HOME": str(base),
    }
    try:
        for model in MODELS:
            done = run_cli([model, "test-basic"], env)
            assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    yield base / "progress"


def compare(runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["--compare", "test-basic", *args], {"OAIEVALSET_PROGRESS_DIR": str(runs)})


def test_the_comparison_gives_each_models_accuracy_and_tokens(runs: Path) -> None:
    done = compare(runs, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert sorted(data["models"]) == sorted(MODELS)
    for cell in data["cells"]:
        assert cell["metric"] == "accuracy"
        assert cell["value"] == pytest.approx(EXPECTED[cell["model"]][cell["eval"]])
        assert cell["status"] == "done" and cell["samples"] in (3, 6)
    for aggregate in data["aggregates"]:
        assert aggregate["usage"]["total_tokens"] == TOKENS[aggregate["model"]]
        assert aggregate["done"] == 4
    assert "page: " in done.stderr


def test_the_comparison_as_csv_markdown_and_text(runs: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(compare(runs, "--format", "csv").stdout)))
    assert len(rows) == 12
    b = {r["eval"]: r for r in rows if r["model"] == "org/model-b"}
    assert float(b["test-includes.s1.simple-v0"]["value"]) == 0.5
    assert b["test-includes.s1.simple-v0"]["total_tokens"] == "12"
    markdown = compare(runs, "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| eval |") and markdown[1].startswith("|---|")
    text = compare(runs, "--models", "model-a,dummy").stdout
    assert "model-a" in text and "org/model-b" not in text
    prices = tmp_path / "prices.yaml"
    prices.write_text("model-a: {input: 1000000, output: 2000000}\nnobody: {input: 1, output: 1}\n")
    priced = json.loads(compare(runs, "--json", "--prices", str(prices)).stdout)
    costs = {a["model"]: a["cost"] for a in priced["aggregates"]}
    assert costs["model-a"] == pytest.approx(21 * 1.0 + 21 * 2.0)  # 21 tokens in, 21 out
    assert costs["dummy"] is None
    assert any("nobody" in note for note in priced["notes"])


def test_a_set_no_model_has_run_is_a_one_line_error(runs: Path) -> None:
    done = run_cli(["--compare", "no-such-set"], {"OAIEVALSET_PROGRESS_DIR": str(runs)})
    assert done.returncode == 2
    assert done.stderr.startswith("oaievalset: error: no model has run eval set 'no-such-set'")


def test_bad_prices_are_a_one_line_error(runs: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("model-a: {input: cheap}\n")
    done = compare(runs, "--prices", str(prices))
    assert done.returncode == 2 and "model 'model-a' needs `input` and `output`" in done.stderr


def test_each_run_writes_its_page_and_the_table_shows_tokens(runs: Path) -> None:
    page = runs / "org" / "model-b.test-basic.progress.d" / "report.html"
    assert page.exists()
    report = json.loads(page.with_name("report.json").read_text())
    assert report["usage"]["total_tokens"] == 42
    assert all(Path(e["record"]).exists() for e in report["evals"])


# -- in the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a test extra
        pytest.fail("playwright is not installed: pip install '.[test]'")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs chromium-headless-shell")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium-headless-shell)")
    executable = CHROMIUM
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        # No network at all for the browser: the page must need none.
        wrapper = tmp_path_factory.mktemp("browser") / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec {unshare} -n {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        executable = str(wrapper)
    with sync_playwright() as playwright:
        # Playwright gives the browser a temporary profile of its own, removed on close.
        instance = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield instance
        instance.close()


class Page:
    """A page opened from file://, with every console error and every request it made."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 800})
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())

    def ready(self) -> None:
        """Wait until the opened eval's samples have loaded (their script runs on open)."""
        self.page.wait_for_function("() => !document.querySelector('#loading')", timeout=10_000)

    def rows(self) -> list[list[str]]:
        self.ready()
        return [
            [td.inner_text() for td in tr.query_selector_all("td")]
            for tr in self.page.query_selector_all("#samples tr[data-sample]")
        ]

    def close(self) -> None:
        self.page.close()


def test_the_page_shows_the_grid_and_the_wrong_samples(
    runs: Path, browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "compare.html"
    assert compare(runs, "--html", str(path)).returncode == 0
    page = Page(browser, path)
    try:
        grid = page.page.inner_text("#grid")
        assert "0.333 n=3" in grid and "0.500 n=6" in grid and "1.000 n=6" in grid
        assert page.page.query_selector_all("#chart rect")  # the bars
        page.page.click("a[data-eval='test-includes.s1.simple-v0']")
        page.page.select_option("select[name=model]", "org/model-b")
        assert len(page.rows()) == 6
        page.page.select_option("select[name=filter]", "wrong")
        wrong = page.rows()
        assert [r[0].rsplit(".", 1)[1] for r in wrong] == ["3", "4", "5"]
        assert all(r[2] == "I am not sure." and r[4] == "no" for r in wrong)
        page.page.select_option("select[name=other]", "model-a")
        page.page.select_option("select[name=filter]", "disagree")
        assert [r[0] for r in page.rows()] == [r[0] for r in wrong]
        shot = os.environ.get("OAIEVALSET_SCREENSHOT")
        page.page.screenshot(path=shot or str(tmp_path / "page.png"), full_page=True)
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), page.requests
    finally:
        page.close()


def test_a_large_record_is_paged(browser: Any, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    (root / "evals").mkdir(parents=True)
    (root / "data").mkdir()
    samples = [{"input": f"Question {i}", "ideal": f"Answer {i}"} for i in range(3000)]
    (root / "data" / "big.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (root / "evals" / "big.yaml").write_text(
        "big.dev.v0:\n  class: evals.elsuite.basic.includes:Includes\n"
        "  args:\n    samples_jsonl: big.jsonl\n"
    )
    (root / "eval_sets").mkdir()
    (root / "eval_sets" / "big.yaml").write_text("big:\n  evals: [big.dev.v0]\n")
    server = ChatServer(answer_fn=lambda r: "Answer 7", models=("m",)).start()
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-big", "EVALS_THREADS": "20"}
    try:
        done = run_cli(["m", "big", "--registry_path", str(root)], env, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    report = Path(done.stderr.split("oaievalset: page: ")[1].split()[0])
    page = Page(browser, report)
    try:
        page.page.click("a[data-eval='big.dev.v0']")
        page.ready()
        assert len(page.rows()) == 50
        assert "3000 sample(s), page 1 of 60" in page.page.inner_text("#pager")
        page.page.click("button[name=next]")
        assert page.rows()[0][0] == "big.dev.50"
        page.page.select_option("select[name=filter]", "wrong")
        assert "2999 sample(s)" in page.page.inner_text("#pager")
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), page.requests
    finally:
        page.close()


def test_missing_cut_and_unreadable_records_are_shown_not_fatal(
    runs: Path, browser: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "progress"
    shutil.copytree(runs, broken)
    journal = broken / "model-a.test-basic.progress.d" / "state.jsonl"
    journal.write_text(journal.read_text().replace(str(runs), str(broken)))  # its logs
    records = {}
    for log in (broken / "model-a.test-basic.progress.d" / "logs").glob("*.log"):
        record = log.read_text().split("Logged to ", 1)[1].split()[0]
        records[log.name.split(".")[0]] = Path(record)
    # One missing, one cut short, one not JSON at all (copies: the other tests read them).
    for name, path in records.items():
        copy = tmp_path / f"{name}.jsonl"
        shutil.copy(path, copy)
        for log in (broken / "model-a.test-basic.progress.d" / "logs").glob(f"{name}.*"):
            log.write_text(log.read_text().replace(str(path), str(copy)))
        journal.write_text(journal.read_text().replace(str(path), str(copy)))
        records[name] = copy
    records["test-match"].unlink()
    text = records["test-includes"].read_text()
    records["test-includes"].write_text(text[: len(text) - 40])
    records["test-fuzzy-match"].write_text("this is not a record\n")
    done = run_cli(["--compare", "test-basic", "--json"], {"OAIEVALSET_PROGRESS_DIR": str(broken)})
    assert done.returncode == 0, done.stderr
    problems = {
        c["eval"]: c["problems"]
        for c in json.loads(done.stdout)["cells"]
        if c["model"] == "model-a"
    }
    assert "the record is missing" in problems["test-match.s1.simple-v0"][0]
    assert "cut short" in problems["test-includes.s1.simple-v0"][0]
    assert "not JSON" in problems["test-fuzzy-match.s1.simple-v0"][0]
    page = Page(browser, broken / "test-basic.compare.html")
    try:
        page.page.click("a[data-eval='test-match.s1.simple-v0']")
        page.page.select_option("select[name=model]", "model-a")
        assert "the record is missing" in page.page.inner_text("#drill")
        assert page.errors == []
    finally:
        page.close()


def test_a_record_written_by_the_originals_oaieval_is_read(
    browser: Any, tmp_path: Path, test_cache: Path
) -> None:
    from helpers.openai_registry import original_venv

    try:
        venv = original_venv(test_cache)
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(str(exc))
    server = ChatServer(answer_fn=lambda r: "time", models=("gpt-4-page",)).start()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",  # its oaieval comes first
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-original",
    }
    try:
        done = run_cli(["gpt-4-page", "test-basic"], env, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    data = json.loads(run_cli(["--compare", "test-basic", "--json"]).stdout)
    cells = {c["eval"]: c for c in data["cells"]}
    assert cells["test-match.s1.simple-v0"]["value"] == pytest.approx(1 / 3)
    assert cells["test-match.s1.simple-v0"]["samples"] == 3
    assert cells["test-match.s1.simple-v0"]["usage"]["total_tokens"] == 6
    assert all(not c["problems"] for c in data["cells"])
    assert sys.executable  # our engine was not the one that ran
    assert "[oaieval.py:" in Path(cells["test-match.s1.simple-v0"]["log"]).read_text()


# -- hostile text, many models, long names ----------------------------------------------------

# Text that would end or change the page's scripts, or run code, if it reached the HTML as
# HTML: `<!--<script>` makes the parser swallow the next script when only `</` is escaped.
HOSTILE = "<!--<script>x</script>\"'&amp;<img src=x onerror=__pwned=1>\u2028\u2029 end"
HOSTILE_NAME = "h<!--<script>\"'&<img src=x onerror=__pwned=1>"  # no `.` or `/`: a name part


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of a real run whose eval, model, prompts, answers and ideal answers hold
    hostile text: an eval of FuzzyMatch (a score per sample), run with an argument."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "reg"
    for folder in ("evals", "data", "eval_sets"):
        (root / folder).mkdir(parents=True)
    samples = [
        {"input": [{"role": "user", "content": f"Q {HOSTILE}"}], "ideal": f"I {HOSTILE}"},
        {"input": f"S {HOSTILE}", "ideal": [f"I {HOSTILE}", "other"]},
    ]
    (root / "data" / "h.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    name = json.dumps(f"{HOSTILE_NAME}.dev.v0")
    (root / "evals" / "h.yaml").write_text(
        f"{name}:\n  class: evals.elsuite.basic.fuzzy_match:FuzzyMatch\n"
        "  args:\n    samples_jsonl: h.jsonl\n"
    )
    (root / "eval_sets" / "hostile.yaml").write_text(f"hostile:\n  evals: [{name}]\n")
    server = ChatServer(answer_fn=lambda r: f"A {HOSTILE}", models=(HOSTILE_NAME,)).start()
    env = {
        "OAIEVALSET_PROGRESS_DIR": str(base / "progress"),
        "OAIEVAL_RECORD_DIR": str(base / "evallogs"),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-hostile",
    }
    try:
        done = run_cli(
            [HOSTILE_NAME, "hostile", "--registry_path", str(root), "--max_samples", "2"], env
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    return Path(done.stderr.split("oaievalset: page: ")[1].splitlines()[0])


def test_the_pages_data_holds_no_angle_bracket_that_could_end_its_script(hostile: Path) -> None:
    text = hostile.read_text(encoding="utf-8")
    data = text.split('<script type="application/json" id="data">', 1)[1].split("</script>")[0]
    assert "<" not in data and ">" not in data and "&" not in data
    assert "\u2028" not in data and "\u2029" not in data
    parsed = json.loads(data)
    assert parsed["models"] == [HOSTILE_NAME]  # the escapes mean the same text
    cell = parsed["evals"][0]["cells"][HOSTILE_NAME]
    assert cell["n"] == 2
    # The samples are a script beside the page, held to the same rule.
    script = (hostile.parent / "report_files" / f"{cell['samples']}.js").read_text("utf-8")
    assert "<" not in script and ">" not in script and "&" not in script
    assert "\u2028" not in script and "\u2029" not in script
    prefix = f'oaievalsetSamples("{cell["samples"]}", '
    assert script.startswith(prefix) and script.endswith(");\n")
    samples = json.loads(script[len(prefix) : -len(");\n")])
    assert samples[0][2] == f"A {HOSTILE}"  # the escapes mean the same text


def test_hostile_text_is_shown_as_text_and_never_run(hostile: Path, browser: Any) -> None:
    page = Page(browser, hostile)
    try:
        assert page.page.inner_text("h1") == f"hostile: {HOSTILE_NAME}"
        assert HOSTILE_NAME in page.page.inner_text("#grid")
        page.page.click("a[data-eval]")
        cells = page.page.eval_on_selector_all(
            "#samples tr[data-sample]",
            "rows => rows.map(r => Array.from(r.cells).map(td => td.textContent))",
        )
        assert len(cells) == 2, page.page.inner_text("#drill")
        by_id = {row[0]: row for row in cells}
        first, second = by_id[f"{HOSTILE_NAME}.dev.0"], by_id[f"{HOSTILE_NAME}.dev.1"]
        assert first[1] == f"user: Q {HOSTILE}" and second[1] == f"system: S {HOSTILE}"
        assert first[2] == second[2] == f"A {HOSTILE}"
        assert first[3] == f"I {HOSTILE}" and second[3] == f"\u2022 I {HOSTILE}\n\u2022 other"
        assert page.page.inner_text("#drill h2") == f"Samples of {HOSTILE_NAME}.dev.v0"
        runs = page.page.inner_text("#runs")
        assert "--max_samples 2" in runs and HOSTILE_NAME in runs
        assert page.page.evaluate("typeof window.__pwned") == "undefined"
        assert not page.page.query_selector("#grid img, #drill img, #runs img")
        # The only scripts from files are the samples' scripts beside the page.
        scripts = page.page.eval_on_selector_all(
            "script[src]", "els => els.map(e => e.getAttribute('src'))"
        )
        assert scripts and all(re.fullmatch(r"report_files/[0-9a-f]{20}\.js", s) for s in scripts)
        assert page.errors == []
    finally:
        page.close()


def test_the_page_names_its_metric_and_when_and_how_each_model_ran(
    runs: Path, browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "compare.html"
    assert compare(runs, "--html", str(path)).returncode == 0
    page = Page(browser, path)
    try:
        assert "headline metric, accuracy," in page.page.inner_text("p.caption")
        assert page.page.inner_text("h2:has(+ .legend)") == "Headline metric per eval: accuracy"
        rows = page.page.eval_on_selector_all(
            "#runs tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))"
        )
        assert [r[0] for r in rows] == sorted(MODELS)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        for model, when, command in rows:
            assert command == f"oaievalset {shlex.quote(model)} test-basic"
            found = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d)( to [\d: -]+)? UTC", when)
            assert found, when
            started = datetime.strptime(found[1], "%Y-%m-%d %H:%M")
            assert now - timedelta(hours=1) < started <= now
        page.page.click("a[data-eval='test-match.s1.simple-v0']")
        page.page.select_option("select[name=model]", "org/model-b")
        meta = page.page.inner_text("#meta")
        assert "command oaieval org/model-b test-match.s1.simple-v0 · record /" in meta
        assert re.search(r"^run \d{4}-\d\d-\d\d \d\d:\d\d UTC · ", meta), meta
        assert page.errors == []
    finally:
        page.close()


def test_dummy_and_fuzzy_match_samples_show_prompt_answer_and_a_readable_score(
    runs: Path, browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "compare.html"
    assert compare(runs, "--html", str(path)).returncode == 0
    page = Page(browser, path)
    try:
        page.page.click("a[data-eval='test-fuzzy-match.s1.simple-v0']")
        page.page.select_option("select[name=model]", "dummy")
        rows = page.rows()
        assert len(rows) == 6
        for _, prompt, answer, _ideal, correct, score in rows:
            # The dummy records no prompt; FuzzyMatch records its answer only on a match.
            assert prompt == "not in the record" and answer == "This is a dummy response."
            assert correct == "no" and score == "f1 0"
        ideals = {r[0].rsplit(".", 1)[1]: r[3] for r in rows}
        assert ideals["0"] == "Mars" and ideals["2"] == "\u2022 6\n\u2022 six"
        page.page.select_option("select[name=model]", "org/model-b")
        rows = page.rows()
        assert len(rows) == 6
        for _, prompt, answer, _, correct, score in rows:
            assert prompt.startswith("system: Answer in as few words as you can.\nuser: ")
            assert answer == "I am not sure." if correct == "no" else answer != ""
            assert re.fullmatch(r"f1 (0|1|0\.\d\d?)", score), score
        page.page.click("a[data-eval='test-includes.s1.simple-v0']")
        page.page.select_option("select[name=model]", "dummy")
        assert {r[2] for r in page.rows()} == {"This is a dummy response."}
        assert page.errors == []
    finally:
        page.close()


# Where a name on the page wraps: only after `.`, `-`, `_`, `/`, `:` or a space.
LINE_BREAKS = """els => els.flatMap(el => {
  const bad = [], walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let top = null, last = null, node;
  while ((node = walker.nextNode())) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i); range.setEnd(node, i + 1);
      const rect = range.getBoundingClientRect();
      if (!rect.width) {  // a space that ends a line takes no room
        last = node.data[i];
        continue;
      }
      if (top !== null && rect.top > top + 4 && !"./_:- ".includes(last)) {
        bad.push(el.textContent.slice(0, 40) + "... broken before " + node.data.slice(i));
      }
      top = rect.top; last = node.data[i];
    }
  }
  return bad;
})"""


def test_eight_models_get_eight_colours_and_names_wrap_only_between_words(
    browser: Any, tmp_path: Path
) -> None:
    from oaievalset.compare import Cell, Comparison
    from oaievalset.present import page as htmlpage
    from oaievalset.summaries import SummaryCache

    models = [f"org_{i}/a_rather_long_model_name_{i}" for i in range(8)]
    evals = ["mmlu_high_school_macroeconomics_questions_and_answers.val.choice-v1", "tiny.dev.v0"]
    cells = {}
    for i, model in enumerate(models):
        for e, name in enumerate(evals):
            spec = {"created_at": "2025-01-31 12:00:00.5+00:00", "completion_fns": [model],
                    "run_config": {"command": f"oaieval {model} {name}"}}  # fmt: skip
            # A lone surrogate in an answer, as json.loads gives it for "\ud800" in a record.
            events = [
                {"sample_id": f"{name}.{n}", "type": t, "data": d}
                for n in range(3)
                for t, d in (
                    ("sampling", {"prompt": "Why?", "sampled": [f"answer \ud800 {n}"]}),
                    ("match", {"correct": n % 2 == 0, "expected": "because"}),
                )
            ]
            lines = [{"spec": spec}, *events, {"final_report": {"accuracy": i / 8}}]
            path = tmp_path / f"{i}-{e}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            record = SummaryCache(None).summary(path)
            cells[(model, name)] = Cell(
                model, name, "done", "accuracy", i / 8, {"accuracy": i / 8}, 3, 1.0,
                None, None, None, record, None,
            )  # fmt: skip
    path = tmp_path / "page.html"
    htmlpage.write(path, Comparison("big-set", models, evals, cells, []), "t")
    page = Page(browser, path)
    try:
        page.page.set_viewport_size({"width": 480, "height": 800})
        legend = page.page.eval_on_selector_all(
            ".legend i", "els => els.map(e => getComputedStyle(e).backgroundColor)"
        )
        assert len(legend) == 8 and len(set(legend)) == 8, legend
        bars = page.page.eval_on_selector_all(
            "#chart rect", "els => els.map(e => e.getAttribute('fill'))"
        )
        assert len(bars) == 16 and bars[:8] == bars[8:] and len(set(bars)) == 8
        labels = page.page.eval_on_selector_all(
            "#chart text.label", "els => els.map(e => e.textContent)"
        )
        assert labels == evals  # whole, not cut
        page.page.click(f"a[data-eval='{evals[0]}']")
        assert len(page.rows()) == 3
        names = "#grid thead th, #grid a, #drill h2, #samples td:first-child, #runs tbody th"
        assert page.page.eval_on_selector_all(names, LINE_BREAKS) == []
        widths = page.page.eval_on_selector_all(
            "#grid a", "els => els.map(e => e.getClientRects().length)"
        )
        assert widths[0] > 1  # the long name did wrap: the check above saw a break
        assert page.errors == []
    finally:
        page.close()


# -- a big set: the landing page, samples loaded on open, search, sort, status, difference --


def test_a_big_sets_page_holds_the_grid_and_loads_only_the_samples_opened(
    browser: Any, tmp_path: Path
) -> None:
    """60 evals of 200 samples, run for real with `dummy`, opened offline."""
    root = tmp_path / "reg"
    for folder in ("evals", "eval_sets", "data"):
        (root / folder).mkdir(parents=True)
    specs = []
    for n in range(60):
        lines = [{"input": f"Eval {n} question {i}", "ideal": f"A{i}"} for i in range(200)]
        (root / "data" / f"{n}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        specs.append(
            f"many{n:02}.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
            f"  args:\n    samples_jsonl: {n}.jsonl\n"
        )
    (root / "evals" / "many.yaml").write_text("".join(specs))
    (root / "eval_sets" / "many.yaml").write_text('many:\n  evals: ["many*"]\n')
    env = {"OAIEVALSET_PROGRESS_DIR": str(tmp_path / "progress")}
    done = run_cli(["dummy", "many", "--registry_path", str(root), "-j", "2"], env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = Path(done.stderr.split("oaievalset: page: ")[1].split()[0])
    scripts = sorted((report.parent / "report_files").glob("*.js"))
    assert len(scripts) == 60
    assert "dummy response" not in report.read_text()  # no sample in the landing page
    page = Page(browser, report)
    try:
        assert len(page.page.query_selector_all("#grid tbody tr")) == 60
        summary = page.page.eval_on_selector_all(
            "#summary tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))"
        )
        assert summary[0] == ["model", "evals", "done", "failed", "other", "mean accuracy",
                              "tokens", "cost"]  # fmt: skip
        assert summary[1] == ["dummy", "60", "60", "0", "0", "0.000", "-", "-"]
        assert "oaievalset dummy many --registry_path" in page.page.inner_text("#runs")
        assert "60 evals" in page.page.inner_text("#shown")
        assert "of 60" in page.page.inner_text("#chart-cut")
        assert len(page.page.query_selector_all("#chart text.label")) == 40
        assert len(page.requests) == 1  # the page alone: no samples until an eval is opened
        page.page.click("a[data-eval='many07.dev.v0']")
        assert len(page.rows()) == 50
        assert "200 sample(s), page 1 of 4" in page.page.inner_text("#pager")
        assert page.rows()[0][2] == "This is a dummy response."
        assert len(page.requests) == 2 and page.requests[1].endswith(".js")
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), page.requests
    finally:
        page.close()


def synthetic_comparison(tmp_path: Path, evals: int) -> Any:
    """Two models over `evals` evals with real records on disk: model-a's accuracy is
    (n % 10) / 10, model-b's 0.5; every seventh eval of model-b (14 of 100) failed, with
    no record."""
    from oaievalset.compare import Cell, Comparison
    from oaievalset.records import Usage
    from oaievalset.summaries import SummaryCache

    models, names = ["model-a", "model-b"], [f"ev-{n:03}.dev.v0" for n in range(evals)]
    cells = {}
    for model in models:
        for n, name in enumerate(names):
            if model == "model-b" and n % 7 == 3:
                cells[(model, name)] = Cell(
                    model, name, "failed", None, None, {}, None, None, None, None, None, None, None
                )
                continue
            value = (n % 10) / 10 if model == "model-a" else 0.5
            spec = {"completion_fns": [model], "created_at": "2025-02-01 10:00:00+00:00",
                    "run_config": {"command": f"oaieval {model} {name}"}}  # fmt: skip
            events = [
                {"sample_id": f"{name}.{i}", "type": "match",
                 "data": {"correct": i < value * 10, "expected": "x", "sampled": ["y"]}}
                for i in range(10)
            ]  # fmt: skip
            lines = [{"spec": spec}, *events, {"final_report": {"accuracy": value}}]
            path = tmp_path / f"{model}-{n}.jsonl"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            cells[(model, name)] = Cell(
                model, name, "done", "accuracy", value, {"accuracy": value}, 10, 1.0,
                Usage(10, 5, 15), None, None, SummaryCache(None).summary(path), None,
            )  # fmt: skip
    return Comparison("synthetic", models, names, cells, [])


def test_the_grid_searches_sorts_filters_and_shows_the_difference(
    browser: Any, tmp_path: Path
) -> None:
    from oaievalset.present import page as htmlpage

    path = tmp_path / "page.html"
    htmlpage.write(path, synthetic_comparison(tmp_path, 100), "synthetic")
    page = Page(browser, path)

    def names() -> list[str]:
        return list(page.page.eval_on_selector_all(
            "#grid tbody tr:not(.hidden) a", "els => els.map(e => e.dataset.eval)"
        ))  # fmt: skip

    def column(index: int) -> list[str]:
        return list(page.page.eval_on_selector_all(
            "#grid tbody tr:not(.hidden)",
            f"rows => rows.map(r => r.cells[{index}].innerText.split('\\n')[0])",
        ))  # fmt: skip

    try:
        summary = page.page.inner_text("#summary")
        assert "model-b\t100\t86\t14\t0\t0.500\t1,290\t-" in summary
        assert "model-a\t100\t100\t0\t0\t0.450\t1,500\t-" in summary
        # The difference, model-b minus model-a by default, each row.
        diffs = column(3)
        assert diffs[0] == "+0.500" and diffs[3] == "-" and diffs[9] == "\u22120.400"
        page.page.select_option("select[name=diff-a]", "0")
        page.page.select_option("select[name=diff-b]", "1")
        assert column(3)[9] == "+0.400"
        # Sorted by the difference, highest first, the failed cells (no difference) last.
        page.page.click("#grid th[data-sort=diff]")
        diffs = column(3)
        # (ev-059 has model-a's highest, but model-b failed it)
        assert diffs[:9] == ["+0.400"] * 9 and diffs[-14:] == ["-"] * 14
        values = [float(d.replace("\u2212", "-")) for d in diffs[:-14]]
        assert values == sorted(values, reverse=True)
        # By model-a's metric, then turned round.
        page.page.click("#grid th[data-sort='0']")
        first = [float(c.split()[0]) for c in column(1)]
        assert first == sorted(first, reverse=True) and first[0] == 0.9
        page.page.click("#grid th[data-sort='0']")
        assert [float(c.split()[0]) for c in column(1)] == sorted(first)
        page.page.click("#grid th[data-sort=name]")
        assert names() == sorted(names()) and len(names()) == 100
        # Search by name, and filter by status.
        page.page.fill("input[name=search]", "ev-05")
        assert names() == [f"ev-05{n}.dev.v0" for n in range(10)]
        assert page.page.inner_text("#shown") == "10 of 100 evals"
        page.page.select_option("select[name=status]", "failed")
        assert names() == ["ev-052.dev.v0", "ev-059.dev.v0"]
        page.page.fill("input[name=search]", "")
        assert len(names()) == 14
        # The chart: the 20 highest and the 20 lowest means of 100.
        labels = page.page.eval_on_selector_all(
            "#chart text.label", "els => els.map(e => e.textContent)"
        )
        # ev-059 first: its mean is model-a's 0.9 alone, model-b has no value for it.
        assert len(labels) == 40 and labels[:3] == [
            "ev-059.dev.v0",
            "ev-038.dev.v0",
            "ev-009.dev.v0",
        ]
        # A filtered grid still opens an eval, and the totals stay at the foot.
        page.page.click("a[data-eval='ev-059.dev.v0']")
        assert len(page.rows()) == 10
        assert "mean / tokens" in page.page.inner_text("#grid tfoot")
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), page.requests
    finally:
        page.close()


def test_a_page_without_its_folder_says_so_when_an_eval_is_opened(
    runs: Path, browser: Any, tmp_path: Path
) -> None:
    path = tmp_path / "moved.html"
    assert compare(runs, "--html", str(path)).returncode == 0
    shutil.rmtree(tmp_path / "moved_files")  # the page sent without its folder
    page = Page(browser, path)
    try:
        assert "1.000 n=6" in page.page.inner_text("#grid")  # the landing page is whole
        page.page.click("a[data-eval='test-match.s1.simple-v0']")
        page.ready()
        drill = page.page.inner_text("#drill")
        assert "could not be read: keep the folder moved_files beside the page" in drill
        assert not page.page.query_selector("#samples")
        # The browser's own note of the missing file, and nothing else.
        assert page.errors and all("ERR_FILE_NOT_FOUND" in e for e in page.errors), page.errors
    finally:
        page.close()
