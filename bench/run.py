"""Benchmarks: oaievalset and its oaieval against the original (openai/evals 3.0.1.post1) or a
bare shell loop, measured side by side in one run, printed as ratios.

    python bench/run.py                 # everything
    python bench/run.py startup engine  # some sections
    python bench/run.py small           # small evals (6 and 20 samples) at 0.5 s a request
    python bench/run.py warm            # 30 evals of 3 samples: the warm engine
    BASELINE=REV python bench/run.py baseline   # this checkout against an earlier revision

The original is installed once into bench/.work/original (its own virtual environment, as
SPEC.md says: `pip install --no-deps evals==3.0.1.post1` plus what its import needs), or taken
from ORIGINAL_VENV. Run it from an environment where oaievalset is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT / "tests"))

OURS_BIN = Path(sys.executable).parent


def say(text: str = "") -> None:
    print(text, flush=True)


def timed(cmd: Sequence[str], env: dict[str, str] | None = None, ok: Sequence[int] = (0,)) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - began
    if done.returncode not in ok:
        raise SystemExit(f"benchmark command failed ({done.returncode}): {cmd}\n{done.stderr}")
    return elapsed


def side_by_side(
    a: Callable[[], float], b: Callable[[], float], rounds: int
) -> tuple[float, float]:
    """Median times of a and b, run alternately so that both see the same machine load,
    after one untimed run of each (caches filled, bytecode compiled)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)


def original_venv() -> Path:
    from helpers.openai_registry import original_venv as installed

    say("(the original: ORIGINAL_VENV, or installed once into bench/.work/original)")
    return installed(WORK)


def original_env(venv: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # The original needs a key set even for `dummy`; nothing here reaches OpenAI.
    return {**os.environ, "OPENAI_API_KEY": "sk-benchmark", **(extra or {})}


def fake_bin(name: str, script: str | None = None) -> Path:
    """A folder holding an `oaieval`: the script given, or else /bin/true itself."""
    folder = WORK / f"bin-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "oaieval"
    exe.unlink(missing_ok=True)
    if script is None:
        exe.symlink_to(shutil.which("true") or "/bin/true")
    else:
        exe.write_text(script)
        exe.chmod(0o755)
    return folder


def with_path(folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", **(extra or {})}
    env["OAIEVALSET_PROGRESS_DIR"] = str(WORK / "progress")
    return env


def generated_registry(evals: int, files: int) -> Path:
    root = WORK / f"registry-{evals}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "evals").mkdir(parents=True)
    (root / "eval_sets").mkdir()
    per_file = evals // files
    for f in range(files):
        lines = []
        for e in range(per_file):
            name = f"gen{f:05d}-{e:03d}"
            lines.append(f"{name}:\n  id: {name}.dev.v0\n  description: generated eval {name}\n")
            lines.append(
                f"{name}.dev.v0:\n  class: oaievalset.engine.evals:Match\n"
                f"  args:\n    samples_jsonl: gen/{name}.jsonl\n"
            )
        (root / "evals" / f"gen{f:05d}.yaml").write_text("".join(lines))
    (root / "eval_sets" / "gen.yaml").write_text(
        'gen-all:\n  evals: ["gen*"]\n'
        f"gen-some:\n  evals: [{', '.join(f'gen{f:05d}-000' for f in range(0, files, 10))}]\n"
    )
    (root / ".complete").write_text("")
    return root


def peak_rss_mb(
    cmd: Sequence[str], env: dict[str, str], any_exit: bool = False
) -> tuple[float, float]:
    """Wall time and peak resident memory (MB) of one run of cmd; it must succeed unless
    `any_exit` (a set with failing evals exits 1), and then its stderr is not shown."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "quiet = subprocess.DEVNULL if sys.argv[1] == '1' else None; "
        "r = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=quiet); "
        "t = time.perf_counter() - t; "
        "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(int(any_exit)), *cmd],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if out[2] != "0" and not any_exit:
        raise SystemExit(f"benchmark command failed: {cmd}")
    return float(out[0]), float(out[1])


# -- sections ----------------------------------------------------------------------------


def bench_startup(rounds: int) -> None:
    venv = original_venv()
    env = original_env(venv)
    for command, target in (("oaievalset", " (target <= 0.1)"), ("oaieval", "")):
        ours, theirs = side_by_side(
            lambda c=command: timed([str(OURS_BIN / c), "--help"]),  # type: ignore[misc]
            lambda c=command: timed([str(venv / "bin" / c), "--help"], env),  # type: ignore[misc]
            rounds,
        )
        say(
            f"{f'start-up, {command} --help:':31}ours {ours * 1000:7.0f} ms   original "
            f"{theirs * 1000:7.0f} ms   ratio {ours / theirs:.3f}{target}"
        )


def bench_plan(rounds: int) -> None:
    from helpers.openai_registry import openai_evals_registry

    venv = original_venv()
    upstream = openai_evals_registry(WORK)
    true_bin = fake_bin("true")
    ours_env = with_path(true_bin)
    theirs_env = original_env(venv, {"PATH": f"{true_bin}{os.pathsep}{os.environ['PATH']}"})
    ours, theirs = side_by_side(
        lambda: timed(
            [
                str(OURS_BIN / "oaievalset"),
                "dummy",
                "test",
                "--registry_path",
                str(upstream),
                "--no-resume",
            ],
            ours_env,
        ),
        # The original's own registry is this same folder: it needs no --registry_path.
        lambda: timed(
            [str(venv / "bin" / "oaievalset"), "dummy", "test", "--no-resume"], theirs_env
        ),
        rounds,
    )
    say(
        f"openai/evals registry, set 'test' (19 evals, /bin/true children):\n"
        f"                               ours {ours * 1000:7.0f} ms   original "
        f"{theirs * 1000:7.0f} ms   ratio {ours / theirs:.3f} (target <= 0.1)"
    )


def bench_scale() -> None:
    say("generated registries, `oaievalset dummy gen-all --plan` (resolve every eval):")
    env = with_path(WORK)
    base = None
    for evals, files in ((500, 50), (5_000, 500), (50_000, 5_000)):
        root = generated_registry(evals, files)
        cmd = [
            str(OURS_BIN / "oaievalset"),
            "dummy",
            "gen-all",
            "--registry_path",
            str(root),
            "--plan",
            "--json",
        ]
        runs = [peak_rss_mb(cmd, env) for _ in range(3)]
        wall = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        base = base or (evals, wall)
        growth = (wall / base[1]) / (evals / base[0])
        say(
            f"  {evals:6d} evals in {files:5d} files: {wall * 1000:7.0f} ms, peak {rss:6.1f} MB,"
            f" time per eval relative to 500 evals: {growth:.2f}"
        )
    bench_report_scale()


def bench_overhead(rounds: int = 3) -> None:
    """Per-eval cost beyond spawning the child, against a shell loop running the same
    commands: in total (start-up included) and at the margin (the slope from 100 to 500
    evals, which leaves start-up and registry loading out)."""
    root = generated_registry(500, 50)
    first100 = root / "eval_sets" / "first100.yaml"
    if not first100.exists():  # written once: a fresh file is not cached, and would be parsed
        first100.write_text('gen-first100:\n  evals: ["gen0000*"]\n')
    true_bin = fake_bin("true")
    env = with_path(true_bin)
    keys = [f"gen{f:05d}-{e:03d}.dev.v0" for f in range(50) for e in range(10)]
    times: dict[int, tuple[float, float]] = {}
    for n, eval_set in ((100, "gen-first100"), (500, "gen-all")):
        loop = f'for k in {" ".join(keys[:n])}; do oaieval dummy "$k" || exit 1; done'
        times[n] = side_by_side(
            lambda s=eval_set: timed(  # type: ignore[misc]
                [
                    str(OURS_BIN / "oaievalset"),
                    "dummy",
                    s,
                    "--registry_path",
                    str(root),
                    "--no-resume",
                ],
                env,
            ),
            lambda loop=loop: timed(["sh", "-c", loop], env),  # type: ignore[misc]
            rounds,
        )
    ours, shell = times[500]
    total = (ours - shell) / 500 * 1000
    margin = ((ours - times[100][0]) - (shell - times[100][1])) / 400 * 1000
    say(
        f"overhead per eval, /bin/true children: 500 evals ours {ours:5.2f} s, shell loop "
        f"{shell:5.2f} s;\n"
        f"                               {total:.2f} ms per eval in total (start-up and registry "
        f"included), {margin:.2f} ms at the margin (target < 2 ms)"
    )


def bench_parallel(sleep: float = 1.0, count: int = 8) -> None:
    """Efficiency as speed-up over -j 1 divided by the jobs: T(1) / (j * T(j)), in one run."""
    root = WORK / "parallel-registry"
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "eval_sets").mkdir(exist_ok=True)
    (root / "evals" / "par.yaml").write_text(
        "".join(f"par-{i}.dev.v0:\n  class: m:C\n" for i in range(count))
    )
    (root / "eval_sets" / "par.yaml").write_text('par:\n  evals: ["par-*"]\n')
    sleeper = fake_bin("sleep", f"#!/bin/sh\nsleep {sleep}\n")
    env = with_path(sleeper)
    say(f"parallel efficiency, {count} evals that each sleep {sleep:g} s:")
    walls: dict[int, float] = {}
    cmd = [str(OURS_BIN / "oaievalset"), "dummy", "par", "--registry_path", str(root)]
    timed([*cmd, "--no-resume", "-j", str(count)], env)  # untimed: caches filled
    for jobs in (1, 2, 4, 8):
        walls[jobs] = timed([*cmd, "--no-resume", "-j", str(jobs)], env)
        efficiency = walls[1] / (jobs * walls[jobs])
        note = "  (target >= 0.85)" if jobs == 8 else ""
        say(f"  -j {jobs}: {walls[jobs]:5.2f} s, efficiency {efficiency:.2f}{note}")


def _qa_registry(samples: int) -> tuple[Path, dict[str, str]]:
    """A registry with one Match eval of `samples` questions, and the right answers."""
    root = WORK / "engine-registry"
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "data" / "qa").mkdir(parents=True, exist_ok=True)
    answers = {f"Question {i}?": f"Answer {i}" for i in range(samples)}
    (root / "data" / "qa" / "samples.jsonl").write_text(
        "".join(
            json.dumps({"input": [{"role": "user", "content": q}], "ideal": a}) + "\n"
            for q, a in answers.items()
        )
    )
    (root / "evals" / "qa.yaml").write_text(
        "bench-qa.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
        "  args:\n    samples_jsonl: qa/samples.jsonl\n"
    )
    return root, answers


def _engine_command(exe: Path, root: Path) -> list[str]:
    record = WORK / "engine-record.jsonl"
    return [str(exe), "gpt-4", "bench-qa.dev.v0", "--registry_path", str(root),
            "--record_path", str(record)]  # fmt: skip


def _server_env(server: Any) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "EVALS_THREADS": "10",
    }


def bench_engine(rounds: int = 3, samples: int = 40, latency: float = 0.05) -> None:
    from helpers.chat_server import ChatServer

    venv = original_venv()
    root, answers = _qa_registry(samples)
    server = ChatServer(answers=answers, latency=latency, models=("gpt-4",)).start()
    try:
        env = _server_env(server)
        ours, theirs = side_by_side(
            lambda: timed(_engine_command(OURS_BIN / "oaieval", root), env),
            lambda: timed(_engine_command(venv / "bin" / "oaieval", root), env),
            rounds,
        )
    finally:
        server.stop()
    say(
        f"engine, {samples} samples, {latency * 1000:.0f} ms per request, 10 threads:\n"
        f"                               ours {ours:7.2f} s    original {theirs:7.2f} s    "
        f"ratio {ours / theirs:.3f} (target <= 1)"
    )


def _small_registry(sizes: Sequence[int]) -> tuple[Path, dict[str, str]]:
    """A registry with a FuzzyMatch eval (the original's class path, which both engines run)
    of each size, `bench-small-N.dev.v0`, and the right answers."""
    root = WORK / "small-registry"
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "data" / "small").mkdir(parents=True, exist_ok=True)
    answers: dict[str, str] = {}
    specs = []
    for size in sizes:
        questions = {f"Small eval of {size}, question {i}?": f"Answer {i}" for i in range(size)}
        answers.update(questions)
        (root / "data" / "small" / f"{size}.jsonl").write_text(
            "".join(
                json.dumps({"input": [{"role": "user", "content": q}], "ideal": [a]}) + "\n"
                for q, a in questions.items()
            )
        )
        specs.append(
            f"bench-small-{size}.dev.v0:\n  class: evals.elsuite.basic.fuzzy_match:FuzzyMatch\n"
            f"  args:\n    samples_jsonl: small/{size}.jsonl\n"
        )
    (root / "evals" / "small.yaml").write_text("".join(specs))
    return root, answers


def bench_small(rounds: int = 3, sizes: Sequence[int] = (6, 20), latency: float = 0.5) -> None:
    """Evals smaller than the thread count, where it shows whether requests overlap: our
    oaieval and the original's, 10 threads, against one server answering in `latency` s."""
    from helpers.chat_server import ChatServer

    venv = original_venv()
    root, answers = _small_registry(sizes)
    server = ChatServer(answers=answers, latency=latency, models=("gpt-4",)).start()
    say(f"small evals, {latency * 1000:.0f} ms per request, 10 threads:")
    try:
        env = _server_env(server)
        for size in sizes:
            record = WORK / "small-record.jsonl"
            args = ["gpt-4", f"bench-small-{size}.dev.v0", "--registry_path", str(root),
                    "--record_path", str(record)]  # fmt: skip
            ours, theirs = side_by_side(
                lambda a=args: timed([str(OURS_BIN / "oaieval"), *a], env),  # type: ignore[misc]
                lambda a=args: timed([str(venv / "bin" / "oaieval"), *a], env),  # type: ignore[misc]
                rounds,
            )
            say(
                f"  {size:3} samples (one at a time: {size * latency:4.1f} s): ours {ours:5.2f} s"
                f"   original {theirs:5.2f} s   ratio {ours / theirs:.3f}"
            )
    finally:
        server.stop()


def _big_set_registry(count: int, samples: int) -> Path:
    """A registry of `count` Match evals of `samples` questions each, in set `big-set`."""
    root = WORK / f"big-set-{count}x{samples}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("evals", "eval_sets", "data/big"):
        (root / folder).mkdir(parents=True)
    specs = []
    for n in range(count):
        lines = (
            {"input": [{"role": "user", "content": f"Eval {n}, question {i}?"}], "ideal": f"A{i}"}
            for i in range(samples)
        )
        (root / "data" / "big" / f"{n}.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines)
        )
        specs.append(
            f"big{n:04}.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
            f"  args:\n    samples_jsonl: big/{n}.jsonl\n"
        )
    (root / "evals" / "big.yaml").write_text("".join(specs))
    (root / "eval_sets" / "big.yaml").write_text('big-set:\n  evals: ["big*"]\n')
    (root / ".complete").write_text("")
    return root


def bench_report_scale(count: int = 300, samples: int = 2_000, rounds: int = 3) -> None:
    """The report of a big set: `count` evals of `samples` samples run with `dummy`, then a
    resume with nothing to run (it writes the table, report.json and the page again), and
    `--compare` of the set: their time and peak memory, and the page's size."""
    say(f"a set of {count} evals of {samples:,} samples, `oaievalset dummy big-set`:")
    root = _big_set_registry(count, samples)
    progress = WORK / "big-set-progress"
    shutil.rmtree(progress, ignore_errors=True)
    env = {
        **os.environ,
        "OAIEVALSET_PROGRESS_DIR": str(progress),
        "OAIEVAL_RECORD_DIR": str(WORK / "big-set-records"),
    }
    shutil.rmtree(WORK / "big-set-records", ignore_errors=True)
    run = [str(OURS_BIN / "oaievalset"), "dummy", "big-set", "--registry_path", str(root)]
    wall, rss, code = driver_peak([*run, "-j", "2"], env)
    if code != 0:
        raise SystemExit(f"benchmark command failed ({code}): {run}")
    say(f"  the run (-j 2):                    {wall:7.2f} s, oaievalset itself {rss:.1f} MB")
    resumes = [peak_rss_mb(run, env) for _ in range(rounds)]
    wall = statistics.median(r[0] for r in resumes)
    rss = max(r[1] for r in resumes)
    say(f"  a resume with nothing to run:      {wall:7.2f} s, peak {rss:6.1f} MB"
        "  (target: 3 s, 150 MB)")  # fmt: skip
    compares = [
        peak_rss_mb([str(OURS_BIN / "oaievalset"), "--compare", "big-set"], env)
        for _ in range(rounds + 1)
    ]
    wall = statistics.median(r[0] for r in compares[1:])
    rss = max(r[1] for r in compares)
    say(f"  --compare big-set: first {compares[0][0]:.2f} s (its samples' scripts linked from "
        f"the run's page), then {wall:.2f} s; peak {rss:.1f} MB")  # fmt: skip
    say(f"  {cold_compare('big-set', progress / 'dummy.big-set.progress.d', env)}")
    state = progress / "dummy.big-set.progress.d"
    page = (state / "report.html").stat().st_size
    scripts = list((state / "report_files").glob("*.js"))
    size = sum(p.stat().st_size for p in scripts)
    say(f"  report.html {page / 2**20:.2f} MB (target < 5 MB); its samples: {len(scripts)} "
        f"scripts beside it, {size / 2**20:.1f} MB")  # fmt: skip
    say(f"  in headless Chromium, offline: {open_page(state / 'report.html')}")


def cold_compare(eval_set: str, state: Path, env: dict[str, str]) -> str:
    """--compare with nothing kept: no summaries, and a page elsewhere (so every record is
    read, once, for its summary and its samples' script)."""
    (state / "record-summaries.json").unlink(missing_ok=True)
    page = WORK / f"cold-{eval_set}" / "page.html"
    shutil.rmtree(page.parent, ignore_errors=True)
    cmd = [str(OURS_BIN / "oaievalset"), "--compare", eval_set, "--html", str(page)]
    wall, rss = peak_rss_mb(cmd, env)
    scripts = len(list(page.with_name("page_files").glob("*.js")))
    return (
        f"--compare with nothing kept (no summaries, a page elsewhere): {wall:.2f} s, peak "
        f"{rss:.1f} MB, {scripts} records read"
    )


def open_page(path: Path) -> str:
    """The page opened from file:// in Debian's headless Chromium without a network (when
    `unshare -n` works): its first paint, the grid's rows, the first eval opened, and what
    it asked for and complained of."""
    chromium = os.environ.get("OAIEVALSET_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "not measured (pip install playwright)"
    if not os.path.exists(chromium):
        return f"not measured ({chromium} is missing)"
    executable = chromium
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        executable = str(WORK / "chromium-offline")
        Path(executable).write_text(f'#!/bin/sh\nexec {unshare} -n {chromium} "$@"\n')
        Path(executable).chmod(0o755)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            paint = page.evaluate(
                """() => new Promise(resolve => {
                  new PerformanceObserver(list => {
                    const e = list.getEntries().find(e => e.name === 'first-contentful-paint');
                    if (e) resolve(e.startTime);
                  }).observe({type: 'paint', buffered: true});
                  setTimeout(() => resolve(-1), 5000);
                })"""
            )
            loaded = page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
            )
            rows = len(page.query_selector_all("#grid tbody tr"))
            began = time.perf_counter()
            page.click("#grid tbody a[data-eval]")
            page.wait_for_selector("#samples tr[data-sample]")
            opened = time.perf_counter() - began
            shown = page.inner_text("#pager").split(",")[0]
            outside = [u for u in requests if not u.startswith("file://")]
        finally:
            browser.close()
    return (
        f"first contentful paint {paint:.0f} ms, loaded in {loaded:.0f} ms, {rows} rows in "
        f"the grid; the first eval "
        f"opened in {opened * 1000:.0f} ms ({shown}); {len(requests)} requests, "
        f"{len(outside)} outside file://; {len(errors)} console errors"
    )


def _full_openai_registry() -> Path:
    """The whole registry of openai/evals 3.0.1.post1, data included (about 750 MB), with
    a set `all-dev` of every `*.dev.v0` eval in it."""
    import zipfile

    from helpers.openai_registry import VERSION, WHEEL, openai_evals_registry

    target = WORK / f"evals-{VERSION}-full" / "registry"
    if (target / ".complete").exists():
        return target
    openai_evals_registry(WORK)  # downloads the wheel once
    with zipfile.ZipFile(WORK / WHEEL) as archive:
        for name in archive.namelist():
            if name.startswith("evals/registry/"):
                archive.extract(name, WORK / f"evals-{VERSION}-full" / "_unpack")
    shutil.rmtree(target, ignore_errors=True)
    (WORK / f"evals-{VERSION}-full" / "_unpack" / "evals" / "registry").rename(target)
    (target / "eval_sets" / "zz-all-dev.yaml").write_text('all-dev:\n  evals: ["*.dev.v0"]\n')
    (target / ".complete").write_text("")
    return target


def bench_report_openai(rounds: int = 3) -> None:
    """The report of every `*.dev.v0` eval of the openai/evals registry run with `dummy`
    (some of them fail: classes our oaieval does not have), then a resume with nothing to
    run and --compare: time, peak memory and the page's size."""
    root = _full_openai_registry()
    progress, records = WORK / "all-dev-progress", WORK / "all-dev-records"
    for folder in (progress, records):
        shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "OAIEVALSET_PROGRESS_DIR": str(progress),
           "OAIEVAL_RECORD_DIR": str(records)}  # fmt: skip
    run = [str(OURS_BIN / "oaievalset"), "dummy", "all-dev", "--registry_path", str(root)]
    # --no-exit-on-error: the evals that fail do not stop the others (the run exits 1).
    wall, peak, code = driver_peak([*run, "-j", "2", "--no-exit-on-error"], env)
    state = progress / "dummy.all-dev.progress.d"
    report = json.loads((state / "report.json").read_text())
    say(f"openai/evals registry, every *.dev.v0 eval ({len(report['evals'])}) with dummy:")
    say(f"  the run (-j 2): {wall:.1f} s, exit {code}, {report['counts']}; "
        f"oaievalset itself peaked at {peak:.1f} MB")  # fmt: skip
    # A resume runs the failed evals again (they are never recorded): it is work, and the
    # report is written for the whole set after it.
    resumes = [peak_rss_mb([*run, "--no-exit-on-error"], env, any_exit=True) for _ in range(rounds)]
    say(f"  a resume (runs the failed ones again): {statistics.median(r[0] for r in resumes):.2f}"
        f" s, peak {max(r[1] for r in resumes):.1f} MB")  # fmt: skip
    compares = [
        peak_rss_mb([str(OURS_BIN / "oaievalset"), "--compare", "all-dev"], env)
        for _ in range(rounds)
    ]
    say(f"  {cold_compare('all-dev', state, env)}")
    say(f"  --compare all-dev: first {compares[0][0]:.2f} s (its samples' scripts linked), "
        f"then {statistics.median(r[0] for r in compares[1:]):.2f} s; "
        f"peak {max(r[1] for r in compares):.1f} MB")  # fmt: skip
    page = (state / "report.html").stat().st_size
    scripts = list((state / "report_files").glob("*.js"))
    size = sum(p.stat().st_size for p in scripts)
    say(f"  report.html {page / 2**20:.2f} MB; its samples: {len(scripts)} scripts beside it, "
        f"{size / 2**20:.1f} MB")  # fmt: skip
    say(f"  in headless Chromium, offline: {open_page(state / 'report.html')}")


def driver_peak(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall time, the peak memory (MB) of the oaievalset process alone (its VmHWM, read
    until it exits; the evals it starts are not counted) and its exit code."""
    began = time.perf_counter()
    process = subprocess.Popen(
        list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = 0.0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
        time.sleep(0.05)
    code = process.wait()
    return time.perf_counter() - began, peak, code


def _many_small_registry(count: int, samples: int) -> tuple[Path, dict[str, str]]:
    """A registry of `count` Match evals of `samples` questions in set `many-small`."""
    root = WORK / "many-small-registry"
    for folder in ("evals", "eval_sets", "data/ms"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    answers: dict[str, str] = {}
    specs = []
    for n in range(count):
        questions = {f"Eval {n}, question {i}?": f"Answer {i}" for i in range(samples)}
        answers.update(questions)
        (root / "data" / "ms" / f"{n}.jsonl").write_text(
            "".join(
                json.dumps({"input": [{"role": "user", "content": q}], "ideal": a}) + "\n"
                for q, a in questions.items()
            )
        )
        specs.append(
            f"ms{n:02}.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
            f"  args:\n    samples_jsonl: ms/{n}.jsonl\n"
        )
    (root / "evals" / "ms.yaml").write_text("".join(specs))
    (root / "eval_sets" / "ms.yaml").write_text('many-small:\n  evals: ["ms*"]\n')
    return root, answers


def bench_warm(rounds: int = 9, count: int = 30, samples: int = 3, cold_rounds: int = 3) -> None:
    """A set of many small evals against a loopback server, each eval forked from the warm
    engine, side by side with the same set with `dummy` (no requests, no `openai`), itself
    forked too; then both with each eval a fresh process (OAIEVALSET_WARM=0). The ratio
    is the median of each round's (its two runs one after the other): a set takes a second
    or two, and the load of a shared machine drifts over a round less than over all."""
    from helpers.chat_server import ChatServer

    root, answers = _many_small_registry(count, samples)
    server = ChatServer(answers=answers, models=("gpt-4",)).start()
    say(f"{count} evals of {samples} samples, loopback server, -j 1:")
    try:
        env = {**_server_env(server), "OAIEVAL_RECORD_DIR": str(WORK / "many-small-records")}
        fresh = {**env, "OAIEVALSET_WARM": "0"}
        ours = str(OURS_BIN / "oaievalset")
        args = ["many-small", "--registry_path", str(root), "--no-resume"]
        pairs = []
        for _ in range(rounds + 1):  # the first pair untimed: caches filled
            pairs.append((timed([ours, "gpt-4", *args], env), timed([ours, "dummy", *args], env)))
        pairs = pairs[1:]
        cold, cold_dummy = side_by_side(
            lambda: timed([ours, "gpt-4", *args], fresh),
            lambda: timed([ours, "dummy", *args], fresh),
            cold_rounds,
        )
    finally:
        server.stop()
    warm = statistics.median(w for w, _ in pairs)
    dummy = statistics.median(d for _, d in pairs)
    ratios = sorted(w / d for w, d in pairs)
    say(
        f"  warm engine: gpt-4 {warm:5.2f} s   dummy {dummy:5.2f} s   ratio "
        f"{statistics.median(ratios):.2f} (target <= 2; rounds {ratios[0]:.2f} to "
        f"{ratios[-1]:.2f})\n  fresh processes: gpt-4 {cold:5.2f} s   dummy {cold_dummy:5.2f} s   "
        f"ratio {cold / cold_dummy:.2f}\n  gpt-4 warm against dummy in fresh processes: "
        f"{warm / cold_dummy:.2f}; against gpt-4 in fresh processes: {warm / cold:.2f}"
    )


def bench_unhealthy(rounds: int = 3, samples: int = 40, latency: float = 0.05) -> None:
    """What retries cost: the same eval against a healthy server, one that fails 30% of
    requests (429 and 500, no Retry-After), and one that answers 429 to everything for
    3 s (with Retry-After: 1) and then recovers. Each result is checked against the
    healthy one."""
    from helpers.chat_server import ChatServer

    root, answers = _qa_registry(samples)
    kinds: dict[str, dict[str, Any]] = {
        "healthy": {},
        "30% 429/500": {"fail_when": lambda n, r: {1: 429, 4: 500, 7: 429}.get(n % 10)},
        "429 for 3 s": {"fail_for": 3.0, "fail_status": 429, "retry_after": "1"},
    }
    say(
        f"engine against unhealthy servers, {samples} samples, {latency * 1000:.0f} ms, 10 threads:"
    )
    healthy_time, healthy_report = 0.0, None
    for name, settings in kinds.items():
        times = []
        for _ in range(rounds):
            server = ChatServer(answers=answers, latency=latency, models=("gpt-4",), **settings)
            server.start()
            try:
                times.append(
                    timed(_engine_command(OURS_BIN / "oaieval", root), _server_env(server))
                )
            finally:
                server.stop()
            lines = (WORK / "engine-record.jsonl").read_text().splitlines()
            report = json.loads(lines[-1])["final_report"]
            healthy_report = healthy_report or report
            if report != healthy_report:
                raise SystemExit(f"{name}: {report} differs from the healthy {healthy_report}")
        median = statistics.median(times)
        healthy_time = healthy_time or median
        say(
            f"  {name:12} {median:6.2f} s   {median / healthy_time:5.2f}x the healthy time, "
            f"same results"
        )


def bench_resume(samples: int = 600, latency: float = 0.05) -> None:
    """What the answer journal saves: our oaieval killed (SIGKILL) halfway through an eval,
    then run again with its journal, side by side with a run again without one (what a
    resume cost before, and still costs with another oaieval): requests, tokens and time."""
    import signal

    from helpers.chat_server import ChatServer

    root, answers = _qa_registry(samples)
    journal = WORK / "resume-answers.jsonl"
    server = ChatServer(answers=answers, latency=latency, models=("gpt-4",)).start()
    try:
        env = {**_server_env(server), "OAIEVAL_ANSWER_JOURNAL": str(journal)}
        journal.unlink(missing_ok=True)
        command = _engine_command(OURS_BIN / "oaieval", root)
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        while len(server.requests) < samples // 2:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(server.requests)
        lines = journal.read_text().splitlines()
        kept = len(lines) - 1
        tokens = sum(json.loads(line)["usage"]["total_tokens"] for line in lines[1:])
        with_journal = timed(command, env)
        asked_with = len(server.requests) - killed_at
        without = timed(command, {**env, "OAIEVAL_ANSWER_JOURNAL": ""})
        asked_without = len(server.requests) - killed_at - asked_with
    finally:
        server.stop()
    say(
        f"resume after kill -9 at {killed_at} of {samples} requests ({kept} answers kept, "
        f"{latency * 1000:.0f} ms per request):\n"
        f"  with the journal    {asked_with:5} requests  {with_journal:6.2f} s\n"
        f"  without             {asked_without:5} requests  {without:6.2f} s\n"
        f"  saved               {asked_without - asked_with:5} requests, {tokens:,} tokens; "
        f"time ratio {with_journal / without:.2f}"
    )


def bench_coverage(samples: int = 3) -> None:
    """How many evals of the openai/evals registry our oaieval runs, by class: each one run
    for real (`oaieval dummy EVAL --max_samples 3 --dry-run`, its data from the original's
    wheel), counted as run when it exits 0."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from oaievalset.registry import Registry

    venv = original_venv()
    upstream = sorted(venv.glob("lib/python3*/site-packages/evals/registry"))[0]
    registry = Registry([upstream])
    evals = [e for e in registry.eval_names() if registry._entries("evals")[e].alias is None]
    classes = {key: registry.require_eval(key).cls for key in evals}
    exe = str(OURS_BIN / "oaieval")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}

    def runs(key: str) -> tuple[bool, str]:
        # An eval that compares several models (multicomp_n: from_models) gets three.
        several = registry.require_eval(key).args.get("multicomp_n") == "from_models"
        model = "dummy,dummy,dummy" if several else "dummy"
        cmd = [exe, model, key, "--registry_path", str(upstream), "--max_samples",
               str(samples), "--dry-run"]  # fmt: skip
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return False, "timed out"
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return done.returncode == 0, last.split(": ", 2)[-1][:60]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcome = dict(zip(evals, pool.map(runs, evals)))
    total, ran = (
        Counter(classes.values()),
        Counter(classes[k] for k, (ok, _) in outcome.items() if ok),
    )
    say(f"openai/evals registry: {sum(ran.values())} of {len(evals)} evals run with our oaieval "
        f"(target >= 566), by class:")  # fmt: skip
    for cls, count in total.most_common():
        if ran[cls]:
            say(f"  {ran[cls]:4} of {count:4}  {cls}")
    others = sum(count for cls, count in total.items() if not ran[cls])
    say(f"  {0:4} of {others:4}  {len(total) - len(ran)} other classes")
    failed = Counter(why for key, (ok, why) in outcome.items() if not ok and ran[classes[key]])
    for why, count in failed.most_common(5):
        say(f"  not run, of a class we run: {count} x {why}")


def set_registry(name: str, count: int) -> Path:
    """A registry of `count` evals (never loaded: a fake oaieval runs them) in set `name`."""
    root = WORK / f"{name}-registry"
    (root / "evals").mkdir(parents=True, exist_ok=True)
    (root / "eval_sets").mkdir(parents=True, exist_ok=True)
    (root / "evals" / f"{name}.yaml").write_text(
        "".join(f"{name}-{i}.dev.v0:\n  class: x:Y\n" for i in range(count))
    )
    (root / "eval_sets" / f"{name}.yaml").write_text(f'{name}:\n  evals: ["{name}-*"]\n')
    return root


def bench_slurm(count: int = 16, jobs: int = 2) -> None:
    """Overhead per eval of --executor slurm against local processes: the same evals (a
    fake oaieval that sleeps 0.5 s) at the same -j, on a two-node cluster of this machine."""
    from helpers.slurm_cluster import Cluster, available

    why = available()
    if why is not None:
        say(f"slurm: skipped ({why})")
        return
    root = set_registry("sl", count)
    sleeper = fake_bin("half-second", "#!/bin/sh\nsleep 0.5\n")
    shutil.rmtree(WORK / "slurm-cluster", ignore_errors=True)
    cluster = Cluster(WORK / "slurm-cluster").start()
    try:
        env = {**with_path(sleeper), **cluster.env, "OAIEVALSET_PROGRESS_DIR": str(WORK / "sl")}
        cmd = [str(OURS_BIN / "oaievalset"), "dummy", "sl", "--registry_path", str(root),
               "--no-resume", "-j", str(jobs)]  # fmt: skip
        local, slurm = side_by_side(
            lambda: timed(cmd, env),
            lambda: timed([*cmd, "--executor", "slurm", "--slurm-shared"], env),
            rounds=2,
        )
    finally:
        cluster.stop()
    say(
        f"slurm, {count} evals of 0.5 s at -j {jobs} on 2 nodes: local {local:.2f} s, slurm "
        f"{slurm:.2f} s: {(slurm - local) / count * 1000:.0f} ms more per eval"
    )


def bench_ray(count: int = 8, sleep: float = 2.0, jobs: int = 6) -> None:
    """--executor ray on a cluster of a head and two worker nodes (3 CPUs each) on this
    machine, inside a private network namespace: efficiency against the ideal (evals of
    `sleep` s, `jobs` at once), and overhead per eval against local processes at the same -j.
    Ray's own start-up (about 3 s for a new driver) is part of what is measured."""
    import importlib.util
    import math

    if importlib.util.find_spec("ray") is None or shutil.which("unshare") is None:
        say("ray: skipped (pip install '.[ray]', and unshare -n as root)")
        return
    root = set_registry("ry", count)
    sleeper = fake_bin("ray-sleep", f"#!/bin/sh\nsleep {sleep}\n")
    argv = ["dummy", "ry", "--registry_path", str(root), "--no-resume", "-j", str(jobs)]
    env = with_path(sleeper)
    local = timed([str(OURS_BIN / "oaievalset"), *argv], env)
    args = json.dumps({"oaievalset": str(OURS_BIN / "oaievalset"),
                       "argv": [*argv, "--executor", "ray"], "env": {}})  # fmt: skip
    scenario = ROOT / "tests" / "helpers" / "ray_scenario.py"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" '
         f'"{scenario}" plain "$0"', args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"ray benchmark failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"ray benchmark run failed: {result['stderr'][-2000:]}")
    ray_time = result["elapsed"]
    ideal = math.ceil(count / jobs) * sleep
    say(
        f"ray, {count} evals of {sleep:g} s at -j {jobs} on 2 worker nodes: {ray_time:.2f} s, "
        f"efficiency {ideal / ray_time:.2f} of the ideal {ideal:g} s; local {local:.2f} s: "
        f"{(ray_time - local) / count * 1000:.0f} ms more per eval"
    )


def bench_install() -> None:
    """A real install of ours (size on disk, time), and both dependency trees by a
    dry-run resolution, compared by package count and by the size of the archives pip
    would fetch (each wheel or sdist, measured at its index: a local file, or a HEAD request)."""
    venv = WORK / "install-ours"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    before = _size(venv)
    began = time.perf_counter()
    _pip(pip, "install", str(ROOT))
    took = time.perf_counter() - began
    added = (_size(venv) - before) / 1e6
    say(f"install: ours {added:.0f} MB on disk, {took:.1f} s (pip, from the index);")

    wheel_dir = WORK / "install-wheel"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    _pip(pip, "wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(ROOT))
    own_wheel = sum(f.stat().st_size for f in wheel_dir.glob("*.whl"))
    trees = {}
    for side, requirement in (("ours", str(ROOT)), ("original", "evals==3.0.1.post1")):
        report = WORK / f"{side}-install-report.json"
        _pip(
            pip, "install", "--dry-run", "--ignore-installed", "--report", str(report), requirement
        )
        urls = [item["download_info"]["url"] for item in json.loads(report.read_text())["install"]]
        sizes = _archive_sizes([u for u in urls if not u.startswith("file://" + str(ROOT))])
        trees[side] = (len(urls), sum(sizes) + (own_wheel if side == "ours" else 0))
    (n_ours, b_ours), (n_theirs, b_theirs) = trees["ours"], trees["original"]
    say(
        f"         resolution: ours {n_ours} packages, {b_ours / 1e6:.1f} MB of archives; "
        f"original {n_theirs} packages, {b_theirs / 1e6:.0f} MB;"
    )
    say(
        f"         ratio {n_ours / n_theirs:.3f} in packages, "
        f"{b_ours / b_theirs:.3f} in download size"
    )
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(wheel_dir, ignore_errors=True)


def _pip(pip: Sequence[str], *args: str) -> None:
    # Quiet unless it fails: pip's warnings about this machine's index settings are noise.
    done = subprocess.run([*pip, *args, "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip {' '.join(args)} failed:\n{done.stderr}")


def _archive_sizes(urls: Sequence[str]) -> list[int]:
    """The size of each archive: a local file's, or the Content-Length its server gives."""
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def size(url: str) -> int:
        if url.startswith("file://"):
            return os.path.getsize(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
            return int(r.headers["Content-Length"])

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(size, urls))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def baseline_venv(rev: str) -> Path:
    """oaievalset as of a git revision, installed once into its own virtual environment."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    venv = WORK / f"baseline-{sha[:12]}"
    if not (venv / "bin" / "oaievalset").exists():
        source = WORK / f"baseline-src-{sha[:12]}"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], check=True)
    say(f"(the baseline: {rev} = {sha[:12]}, in {venv})")
    return venv


def bench_baseline(rounds: int = 7) -> None:
    """This checkout against an earlier revision of itself (BASELINE, default origin/main or
    HEAD~1): start-up, planning the openai/evals registry's `test` set with /bin/true
    children, and the overhead of 200 /bin/true evals."""
    from helpers.openai_registry import openai_evals_registry

    rev = os.environ.get("BASELINE", "HEAD~1")
    base = baseline_venv(rev)
    for command in ("oaievalset", "oaieval"):
        ours, theirs = side_by_side(
            lambda c=command: timed([str(OURS_BIN / c), "--help"]),  # type: ignore[misc]
            lambda c=command: timed([str(base / "bin" / c), "--help"]),  # type: ignore[misc]
            rounds,
        )
        say(
            f"{f'{command} --help:':31}this {ours * 1000:7.0f} ms   {rev} "
            f"{theirs * 1000:7.0f} ms   ratio {ours / theirs:.3f}"
        )
    upstream = openai_evals_registry(WORK)
    env = with_path(fake_bin("true"))
    run = ["dummy", "test", "--registry_path", str(upstream), "--no-resume"]
    ours, theirs = side_by_side(
        lambda: timed([str(OURS_BIN / "oaievalset"), *run], env),
        lambda: timed([str(base / "bin" / "oaievalset"), *run], env),
        rounds,
    )
    say(
        f"{'openai/evals set test (19):':31}this {ours * 1000:7.0f} ms   {rev} "
        f"{theirs * 1000:7.0f} ms   ratio {ours / theirs:.3f}"
    )
    root = generated_registry(500, 50)
    few = root / "eval_sets" / "first200.yaml"
    if not few.exists():
        few.write_text('gen-first200:\n  evals: ["gen0000*", "gen0001*"]\n')
    run = ["dummy", "gen-first200", "--registry_path", str(root), "--no-resume"]
    ours, theirs = side_by_side(
        lambda: timed([str(OURS_BIN / "oaievalset"), *run], env),
        lambda: timed([str(base / "bin" / "oaievalset"), *run], env),
        max(3, rounds // 2),
    )
    say(
        f"{'200 /bin/true evals:':31}this {ours * 1000:7.0f} ms   {rev} "
        f"{theirs * 1000:7.0f} ms   ratio {ours / theirs:.3f} "
        f"({(ours - theirs) / 200 * 1000:+.2f} ms per eval)"
    )


SECTIONS: dict[str, Callable[[], None]] = {
    "startup": lambda: bench_startup(rounds=7),
    "plan": lambda: bench_plan(rounds=5),
    "scale": bench_scale,  # the plan over big registries, then the report of a big set
    "report": bench_report_scale,  # that report alone
    "report-openai": bench_report_openai,  # every *.dev.v0 of openai/evals, with dummy
    "overhead": bench_overhead,
    "parallel": bench_parallel,
    "engine": bench_engine,
    "small": bench_small,
    "unhealthy": bench_unhealthy,
    "warm": bench_warm,
    "resume": bench_resume,
    "coverage": bench_coverage,
    "slurm": bench_slurm,
    "ray": bench_ray,
    "install": bench_install,
    "baseline": bench_baseline,  # not in the default run: BASELINE=REV python bench/run.py baseline
}
DEFAULT = [name for name in SECTIONS if name not in ("baseline", "report", "report-openai")]


def main(argv: Sequence[str]) -> int:
    chosen = list(argv) or DEFAULT
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        say(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        return 2
    WORK.mkdir(exist_ok=True)
    # Both sides run with their bytecode cached, as installed packages do: pip compiled the
    # original's at install time, and an editable install of ours compiles on first import,
    # which this variable (set on some machines) would forbid on every run.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    say(f"# oaievalset benchmarks on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for name in chosen:
        SECTIONS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
