"""A cap on what a run spends: --max-cost and --max-tokens against a loopback server that
counts every request, with our oaieval."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import REG1, Fake, progress_file, run_cli
from helpers.processes import recorded_keys, run_on_pty

SAMPLES = 100
THREADS = 10
EVALS = ["b1.dev.v0", "b2.dev.v0", "b3.dev.v0"]
PER_ANSWER = 1 / 300  # dollars: the server's usage is 1 input and 1 output token


@pytest.fixture
def registry(tmp_path: Path) -> list[str]:
    """A set of three Match evals of SAMPLES samples each."""
    root = tmp_path / "registry"
    for folder in ("evals", "eval_sets", "data/b"):
        (root / folder).mkdir(parents=True)
    entries = ""
    for name in EVALS:
        base = name.split(".")[0]
        entries += (
            f"{base}:\n  id: {name}\n{name}:\n  class: evals.elsuite.basic.match:Match\n"
            f"  args:\n    samples_jsonl: b/{base}.jsonl\n"
        )
        with open(root / "data" / "b" / f"{base}.jsonl", "w") as f:
            for i in range(SAMPLES):
                sample = {"input": [{"role": "user", "content": f"{base} q{i}"}], "ideal": "yes"}
                f.write(json.dumps(sample) + "\n")
    (root / "evals" / "b.yaml").write_text(entries)
    (root / "eval_sets" / "b.yaml").write_text("three:\n  evals: [b1, b2, b3]\n")
    return ["--registry_path", str(root)]


@pytest.fixture
def prices(tmp_path: Path) -> list[str]:
    """Prices at which the whole set costs a dollar."""
    path = tmp_path / "prices.yaml"
    each = PER_ANSWER / 2 * 1e6  # per million tokens, input and output alike
    path.write_text(f"m: {{input: {each}, output: {each}}}\n")
    return ["--prices", str(path)]


def env_for(server: ChatServer) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # our oaieval
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": server.base_url,
        "EVALS_THREADS": str(THREADS),
    }


def report(isolated: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((isolated / "m.three.progress.d" / "report.json").read_text())
    return data


def test_a_run_stops_at_its_budget_and_a_higher_one_goes_on_from_there(
    isolated: Path, registry: list[str], prices: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.02, models=("m",)).start()
    try:
        env = env_for(server)
        capped = run_cli(["m", "three", *registry, *prices, "--max-cost", "0.40", "-j", "2"], env)
        asked = len(server.requests)
        statuses = {e["eval"]: e["status"] for e in report(isolated)["evals"]}
        more = run_cli(["m", "three", *registry, *prices, "--max-cost", "5"], env)
        asked_in_all = len(server.requests)
    finally:
        server.stop()
    assert capped.returncode == 3, capped.stderr
    in_flight = 2 * THREADS  # two evals at once
    assert asked * PER_ANSWER <= 0.40 + (in_flight + 2) * PER_ANSWER, asked
    assert asked * PER_ANSWER >= 0.40 - 1e-9, "it spent up to the cap"
    last = capped.stderr.strip().splitlines()[-1]
    assert last.startswith("oaievalset: the budget is spent: $0.4")
    assert last.endswith(
        "of $0.40 in the answers of this run; 0 of 3 evals are recorded. Run the same command "
        "with a higher --max-cost to go on: the answers received are kept, and only those "
        "missing are asked"
    )
    assert statuses == {"b1.dev.v0": "stopped", "b2.dev.v0": "stopped", "b3.dev.v0": "not run"}
    assert more.returncode == 0, more.stderr
    assert sorted(recorded_keys(progress_file(isolated, "m", "three"))) == EVALS
    assert asked_in_all <= 3 * SAMPLES + in_flight, "only what was in flight is asked twice"
    assert not list((isolated / "m.three.progress.d" / "budget").iterdir()), "no ledger left"


def test_max_tokens_caps_the_tokens(isolated: Path, registry: list[str]) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", models=("m",)).start()
    try:
        capped = run_cli(["m", "three", *registry, "--max-tokens", "60"], env_for(server))
        asked = len(server.requests)
    finally:
        server.stop()
    assert capped.returncode == 3, capped.stderr
    assert 30 <= asked <= 30 + THREADS + 1  # 2 tokens an answer
    spent = re.search(r"the budget is spent: (\d+) of 60 tokens", capped.stderr)
    assert spent is not None, capped.stderr
    # The cap is reached, and past it by no more than the answers of requests in flight.
    assert 60 <= int(spent[1]) <= 2 * asked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-cost", "1"], "--max-cost needs the price of model 'm' (give --prices FILE): "
                              "without it the spend cannot be counted"),
        (["--max-cost", "1", "--max-tokens", "5"], "give --max-cost or --max-tokens, not both"),
        (["--max-tokens", "5", "--executor", "ray"],
         "--max-tokens is not kept on Ray: its nodes need not share the state folder, where "
         "the evals count what they spend; run the set locally or on Slurm"),
        (["--max-cost", "-1"], "argument --max-cost: must be a positive number of dollars, "
                               "got -1; see 'oaievalset --help'"),
    ],
)  # fmt: skip
def test_a_budget_that_could_not_count_is_refused_before_anything_runs(
    isolated: Path, registry: list[str], args: list[str], message: str
) -> None:
    server = ChatServer(models=("m",)).start()
    try:
        result = run_cli(["m", "three", *registry, *args], env_for(server))
    finally:
        server.stop()
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"oaievalset: error: {message}"
    assert server.requests == []


def test_a_budget_with_another_oaieval_is_refused(fake: Fake, tmp_path: Path) -> None:
    result = run_cli(["dummy", "zz-chain", "--registry_path", str(REG1), "--max-tokens", "9"])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"oaievalset: error: --max-tokens is kept by this package's oaieval; "
        f"{fake.bin / 'oaieval'} is another one, which would not stop at it (put this "
        f"package's oaieval first on PATH)"
    )


def test_a_budget_spent_between_evals_starts_no_other_and_exits_3(isolated: Path) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", models=("m",)).start()
    try:  # test-match asks 3 questions of 2 tokens each: the cap, exactly
        result = run_cli(["m", "test-basic", "--max-tokens", "6"], env_for(server))
        asked = len(server.requests)
    finally:
        server.stop()
    assert result.returncode == 3, result.stderr
    assert asked == 3
    assert recorded_keys(progress_file(isolated, "m", "test-basic")) == ["test-match.s1.simple-v0"]
    assert "All done!" not in result.stdout
    assert "the budget is spent: 6 of 6 tokens" in result.stderr.splitlines()[-1]


def test_the_flex_tier_is_asked_for_priced_at_its_rates_and_shown(
    isolated: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("m: {input: 10, output: 20, flex: {input: 5, output: 10}}\n")
    server = ChatServer(answer_fn=lambda r: "yes", models=("m",)).start()
    try:
        args = ["--completion_args", "service_tier=flex", "--prices", str(prices)]
        result = run_cli(["m", "test-basic", *args], env_for(server))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert {r.get("service_tier") for r in server.requests} == {"flex"}
    table = result.stderr.split("\n\n", 1)[-1].splitlines()
    assert table[0].split()[:7] == ["eval", "status", "time", "tries", "tokens", "cost", "(flex)"]
    total = next(line for line in table if line.startswith("total"))
    # 21 answers of 1 input and 1 output token: $0.000315 at flex rates, twice that without.
    assert "$0.0003" in total.split()
    compared = run_cli(["--compare", "test-basic", "--prices", str(prices), "--json"])
    assert compared.returncode == 0, compared.stderr
    costs = [cell["cost"] for cell in json.loads(compared.stdout)["cells"]]
    assert sum(costs) == pytest.approx(21 * 15 / 1e6), "the comparison prices it at flex rates"


def test_flex_requests_may_wait_longer_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from oaievalset.engine.completions import OpenAIChatCompletionFn

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    flex = OpenAIChatCompletionFn("m", service_tier="flex")
    standard = OpenAIChatCompletionFn("m")
    assert (flex._try_timeout, flex._budget) == (900.0, 3600.0)
    assert (standard._try_timeout, standard._budget) == (600.0, 600.0)
    monkeypatch.setenv("OAIEVAL_REQUEST_TIMEOUT", "30")
    assert OpenAIChatCompletionFn("m", service_tier="flex")._try_timeout == 30.0


# -- the progress inside the evals -------------------------------------------------------

PROGRESS = re.compile(r"(\d+)/(\d+) answers, ([\d,]+) tokens, \$([\d.]+), [\d.]+ req/s")


def test_the_live_line_shows_the_answers_tokens_and_cost_so_far(
    isolated: Path, registry: list[str], prices: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.02, models=("m",)).start()
    try:
        env = {**env_for(server), "NO_COLOR": "1"}
        code, screen, err = run_on_pty(["m", "three", *registry, *prices, "-j", "2"], env, 160)
    finally:
        server.stop()
    assert code == 0, err
    seen = [tuple(int(n) for n in m[:2]) for m in PROGRESS.findall(screen)]
    assert len(seen) >= 2, screen
    assert seen == sorted(seen), "the counts only grow"
    assert seen[-1] == (3 * SAMPLES, 3 * SAMPLES), "the last drawing has every answer"
    last = PROGRESS.findall(screen)[-1]
    assert last[2] == f"{2 * 3 * SAMPLES:,}" and float(last[3]) == pytest.approx(1.0, abs=1e-3)
    # Room left on a wide terminal: each running eval's own count, after the set's.
    each = re.findall(r"\| (b\d\.dev\.v0 \d+/100)(?:, (b\d\.dev\.v0 \d+/100))?", screen)
    assert each, screen
    named = {part.split()[0] for pair in each for part in pair if part}
    assert named and named <= set(EVALS), each  # which ones a drawing catches is timing
    for pair in each:
        for part in filter(None, pair):
            assert int(part.split()[1].split("/")[0]) <= SAMPLES


def test_a_narrow_live_line_keeps_the_set_progress_and_drops_each_evals(
    isolated: Path, registry: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.02, models=("m",)).start()
    try:
        env = {**env_for(server), "NO_COLOR": "1"}
        code, screen, err = run_on_pty(["m", "three", *registry, "-j", "2"], env, 72)
    finally:
        server.stop()
    assert code == 0, err
    pieces = re.split(r"[\r\n]", screen.replace("\033[K", ""))
    drawn = [line for line in pieces if line.startswith("[")]
    assert any("answers" in line for line in drawn), screen
    assert all(len(line) < 72 and "|" not in line for line in drawn), drawn


def test_a_run_not_on_a_terminal_says_its_progress_now_and_then(
    isolated: Path, registry: list[str]
) -> None:
    server = ChatServer(answer_fn=lambda r: "yes", latency=0.02, models=("m",)).start()
    try:
        env = {**env_for(server), "OAIEVALSET_PROGRESS_EVERY": "0.3"}
        result = run_cli(["m", "three", *registry], env)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "progress:" in line]
    assert len(lines) >= 2, result.stderr
    counts = [int(re.search(r"progress: (\d+)/", line)[1]) for line in lines]  # type: ignore[index]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert all(line.startswith("oaievalset: progress: ") for line in lines)


# -- the estimate before a run -----------------------------------------------------------


def plan_of(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = run_cli([*args, "--plan", "--json"], env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_plan_estimates_requests_and_tokens_and_then_uses_what_a_run_measured(
    isolated: Path, registry: list[str], prices: list[str]
) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    server = ChatServer(answer_fn=lambda r: "yes", usage=lambda r: usage, models=("m",)).start()
    try:
        env = env_for(server)
        before = plan_of(["m", "three", *registry, *prices], env)
        ran = run_cli(["m", "three", *registry, *prices, "--max_samples", "20"], env)
        after = plan_of(["m", "three", *registry, *prices], env)
        # The plan reads the records through the state folder's summaries, as the report
        # does: a summary that says twice the usage (the record unchanged) is what it uses.
        summaries = isolated / "m.three.progress.d" / "record-summaries.json"
        cache = json.loads(summaries.read_text())
        for entry in cache["records"].values():
            entry["usage"] = [2 * n for n in entry["usage"]]
        summaries.write_text(json.dumps(cache))
        cached = plan_of(["m", "three", *registry, *prices], env)
    finally:
        server.stop()
    assert ran.returncode == 0, ran.stderr
    total = before["estimate"]
    assert (total["samples"], total["requests"], total["output_tokens"]) == (300, 300, None)
    assert total["method"].startswith("approximate: 4 characters a token")
    # "b1 q17": 6 characters and one message a request, about 6 tokens: near the 7 measured.
    assert 5 * 300 <= total["input_tokens"] <= 8 * 300
    assert total["cost"] == pytest.approx(total["input_tokens"] * PER_ANSWER / 2)
    # After a run of 20 samples of each eval, the plan of the whole set uses what it measured.
    total = after["estimate"]
    assert total["method"].startswith("measured: the tokens per sample of an earlier run")
    assert (total["input_tokens"], total["output_tokens"]) == (7 * 300, 3 * 300)
    spent = sum(e["usage"]["total_tokens"] for e in json.loads(
        (isolated / "m.three.progress.d" / "report.json").read_text())["evals"])  # fmt: skip
    assert spent == 10 * 60 and total["input_tokens"] + total["output_tokens"] == spent * 5
    total = cached["estimate"]
    assert (total["input_tokens"], total["output_tokens"]) == (14 * 300, 6 * 300)


def test_the_plan_counts_a_graders_requests_and_the_answers_a_journal_has(
    isolated: Path, registry: list[str]
) -> None:
    graded = plan_of(["dummy", "test-graded"], {})
    for entry in graded["commands"]:
        estimate = entry["estimate"]
        assert estimate["requests"] == 2 * estimate["samples"] > 0  # an answer, its grading
    server = _failing_after(40)
    try:
        env = {**env_for(server), "OAIEVAL_RETRY_BUDGET": "0.3"}
        assert run_cli(["m", "three", *registry], env).returncode == 1
        entry = plan_of(["m", "three", *registry], env)["commands"][0]
    finally:
        server.stop()
    assert entry["status"] == "failed"
    journal = isolated / "m.three.progress.d" / "answers" / "b1.dev.v0.jsonl"
    answers = len(journal.read_text().splitlines()) - 1  # less what was in flight at the end
    assert 40 - THREADS <= answers <= 40
    assert (entry["estimate"]["requests"], entry["estimate"]["answered"]) == (SAMPLES, answers)


def _failing_after(answered: int) -> ChatServer:
    """A server that answers `answered` requests, then fails every one (HTTP 503)."""

    def fail(number: int, request: dict[str, Any]) -> int | None:
        return None if number < answered else 503

    return ChatServer(answer_fn=lambda r: "yes", fail_when=fail, models=("m",)).start()
