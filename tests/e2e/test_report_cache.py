"""The report reads each record once: a summary of it is kept in the state folder, keyed by
the record's path, size, modification time and inode, and each record's samples are a
script beside the page, written when the record is read. A run of test-basic with `dummy`
(our real oaieval), then resumes and comparisons that find the records as they were, or
one of them changed; what was read is counted by the cache's own bookkeeping (the pass in
which each entry was read) and by the scripts on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers.fake import run_cli

from oaievalset.records import read_record
from oaievalset.summaries import SummaryCache


def cache_of(state: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state / "record-summaries.json").read_text())
    return data


def scripts_of(state: Path) -> dict[str, tuple[int, int]]:
    """Each samples' script beside the page, with its inode and modification time."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (state / "report_files").glob("*.js")
    }


@pytest.fixture
def state(isolated: Path) -> Path:
    done = run_cli(["dummy", "test-basic"])
    assert done.returncode == 0, done.stderr
    return isolated / "dummy.test-basic.progress.d"


def test_a_run_summarises_each_record_once_and_writes_its_samples_beside_the_page(
    state: Path,
) -> None:
    cache = cache_of(state)
    assert cache["generation"] == 1
    assert len(cache["records"]) == 4
    for path, entry in cache["records"].items():
        stat = os.stat(path)
        assert entry["key"] == [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        assert entry["read_in"] == 1
        assert entry["samples"] == len(read_record(path).samples) > 0
    assert len(scripts_of(state)) == 4
    page = (state / "report.html").read_text()
    assert "This is a dummy response." not in page  # the samples are not in the page


def test_a_resume_with_nothing_to_run_reads_no_record_and_rewrites_no_script(
    state: Path,
) -> None:
    cache_before = (state / "record-summaries.json").read_bytes()
    scripts = scripts_of(state)
    page_before = (state / "report.html").stat().st_mtime_ns
    done = run_cli(["dummy", "test-basic"])
    assert done.returncode == 0, done.stderr
    assert "4/4 evals already completed" in done.stdout
    # Nothing read: the cache is not even written again, and no script is.
    assert (state / "record-summaries.json").read_bytes() == cache_before
    assert scripts_of(state) == scripts
    assert (state / "report.html").stat().st_mtime_ns != page_before  # the page itself is


def test_a_changed_record_is_read_again_and_only_it(state: Path, isolated: Path) -> None:
    records = sorted(cache_of(state)["records"])
    scripts = scripts_of(state)
    changed = Path(records[0])
    text = changed.read_text()
    # Another answer for its first sample, at the same size: the modification time tells.
    assert "This is a dummy response." in text or '"correct": false' in text
    changed.write_text(text.replace('"correct": false', '"correct": true ', 1))
    done = run_cli(["--compare", "test-basic", "--json"])
    assert done.returncode == 0, done.stderr
    cache = cache_of(state)
    assert cache["generation"] == 2
    read_in = {path: entry["read_in"] for path, entry in cache["records"].items()}
    assert read_in == {path: 2 if path == str(changed) else 1 for path in records}
    # The compare page's scripts are its own; the run's page keeps its until it is written.
    compare_files = {p.name for p in (isolated / "test-basic.compare_files").glob("*.js")}
    assert len(compare_files) == 4
    # The unchanged records' scripts are the run's own, linked: not made again.
    shared = compare_files & set(scripts)
    assert len(shared) == 3
    for name in shared:
        assert (isolated / "test-basic.compare_files" / name).stat().st_ino == scripts[name][0]
    again = run_cli(["dummy", "test-basic"])
    assert again.returncode == 0, again.stderr
    now = scripts_of(state)
    kept = set(now) & set(scripts)
    assert len(kept) == 3 and all(now[name] == scripts[name] for name in kept)
    (new,) = set(now) - set(scripts)  # the changed record's, under a new name; the old gone
    assert new in compare_files
    assert cache_of(state)["generation"] == 2  # the resume read nothing: all were known


def test_a_record_that_grows_is_read_again(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    lines: list[dict[str, Any]] = [{"spec": {"completion_fns": ["m"]}}]
    lines += [{"sample_id": "e.0", "type": "match", "data": {"correct": True}}]
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = SummaryCache(tmp_path / "cache.json")
    first = cache.summary(record)
    assert first.samples == 1 and first.final_report is None and cache.read == 1
    cache.save()
    with record.open("a") as f:
        f.write(json.dumps({"final_report": {"accuracy": 1.0}}) + "\n")
    again = SummaryCache(tmp_path / "cache.json")
    second = again.summary(record)
    assert again.read == 1 and second.final_report == {"accuracy": 1.0} and second.complete
    assert again.summary(record) == second and again.read == 1  # known now


def test_a_corrupt_cache_is_rebuilt_not_fatal(state: Path) -> None:
    (state / "record-summaries.json").write_text("{not json")
    done = run_cli(["dummy", "test-basic"])
    assert done.returncode == 0, done.stderr
    cache = cache_of(state)
    assert len(cache["records"]) == 4 and cache["generation"] == 1


def test_a_record_is_read_as_a_stream_as_far_as_it_goes(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    report = {"final_report": {"accuracy": 0.5}}  # the original writes it before the events
    events = [
        {"sample_id": "e.10", "type": "match", "data": {"correct": False, "sampled": ["a\u2028b"]}},
        {"sample_id": "e.2", "type": "match", "data": {"correct": True, "sampled": ["c"]}},
    ]
    body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in [report, *events])
    record.write_text(body + "not json\n" * 30 + '{"cut')
    read = read_record(record)
    assert [s.id for s in read.samples] == ["e.2", "e.10"]  # by index
    assert read.samples[1].answer == "a\u2028b"  # a U+2028 inside a string ends no line
    assert read.final_report == {"accuracy": 0.5}
    assert len(read.problems) == 21  # 20 named, then a count of the rest
    assert read.problems[0].endswith(":4: not JSON")
    assert read.problems[-1].endswith("and 11 more lines like these")
    summary = read.summary()
    assert (summary.samples, summary.wrong, summary.errored) == (2, 1, 0)


@pytest.mark.parametrize(
    "ids",
    [
        ["e.dev.2", "e.dev.10", "e.dev.0"],  # one prefix: each event one packed integer
        ["e.dev.2", "f.dev.1", "e.dev.007"],  # another prefix, a leading zero: by id
    ],
)
def test_interleaved_events_are_folded_per_sample_in_index_order(
    tmp_path: Path, ids: list[str]
) -> None:
    record = tmp_path / "r.jsonl"
    lines: list[dict[str, Any]] = [{"spec": {"completion_fns": ["m"]}}]
    # Every sample's sampling event first, then every match: as threads write them.
    lines += [
        {"sample_id": i, "type": "sampling", "data": {"prompt": f"p {i}", "sampled": [f"a {i}"]}}
        for i in ids
    ]
    lines += [{"sample_id": i, "type": "match", "data": {"correct": i.endswith("0")}} for i in ids]
    lines.append({"final_report": {"accuracy": 0.5}})
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))
    samples = read_record(record).samples
    order = sorted(ids, key=lambda i: (int(i.rsplit(".", 1)[1]), i))
    assert [s.id for s in samples] == order
    for s in samples:
        assert (s.prompt, s.answer, s.correct) == (f"p {s.id}", f"a {s.id}", s.id.endswith("0"))
    summary = SummaryCache(None).summary(record)
    assert (summary.samples, summary.wrong) == (3, sum(not i.endswith("0") for i in ids))


def test_a_page_given_as_a_folder_is_a_one_line_error(state: Path, tmp_path: Path) -> None:
    done = run_cli(["--compare", "test-basic", "--html", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"oaievalset: error: --html {tmp_path} is a folder; give the page's file, e.g. "
        f"--html {tmp_path / 'test-basic.html'}"
    ]
    assert not tmp_path.with_name(f"{tmp_path.name}_files").exists()


def test_a_summary_with_a_lone_surrogate_is_kept_and_read_back(tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    lines = [{"spec": {"eval_name": "e\ud800"}}, {"final_report": {"note": "x\udcff"}}]
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))  # as \ud800 escapes
    cache = SummaryCache(tmp_path / "cache.json")
    first = cache.summary(record)
    cache.save()
    again = SummaryCache(tmp_path / "cache.json")
    assert again.summary(record) == first and again.read == 0
    assert first.final_report == {"note": "x\udcff"}
