"""A whole openai/evals registry loads beside ours and resolves as the original resolves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.fake import DATA, Fake
from helpers.openai_registry import openai_evals_registry

from oaievalset.cli import main
from oaievalset.registry import Registry

# What the original (evals 3.0.1.post1, its own registry) resolves each of its sets to.
EXPECTED: dict[str, list[str]] = json.loads(
    (DATA / "openai_evals_3.0.1.post1_sets.json").read_text()
)


@pytest.fixture(scope="module")
def upstream(test_cache: Path) -> Path:
    try:
        return openai_evals_registry(test_cache)
    except RuntimeError as exc:  # pragma: no cover - only without access to PyPI
        pytest.skip(str(exc))


def test_every_set_resolves_to_the_originals_evals(upstream: Path) -> None:
    registry = Registry()
    registry.add_registry_paths([upstream])
    names = registry.eval_set_names()
    # Its sets, and of ours only those it does not have.
    assert sorted(set(names) - set(EXPECTED)) == ["mmlu", "test-graded"]
    assert set(EXPECTED) <= set(names)
    for name, keys in EXPECTED.items():
        ours = [spec.key for spec in registry.resolve(name).evals]
        assert sorted(ours) == sorted(keys), name
        assert len(ours) == len(set(ours))


def test_the_bundled_mmlu_set_runs_its_57_subjects_as_it_defines_them(upstream: Path) -> None:
    registry = Registry()
    registry.add_registry_paths([upstream])
    specs = registry.resolve("mmlu").evals
    assert len(specs) == 57
    assert all(spec.registry_path == upstream for spec in specs)  # its definitions win
    entries = yaml.safe_load((upstream / "evals" / "mmlu.yaml").read_text())
    assert sorted(spec.key for spec in specs) == sorted(
        k for k, v in entries.items() if "class" in v
    )
    alone = Registry().resolve("mmlu").evals  # the bundled ones are the same evals
    assert [(s.key, s.cls, s.args) for s in alone] == [(s.key, s.cls, s.args) for s in specs]


def test_its_names_take_over_from_the_bundled_registry(upstream: Path) -> None:
    registry = Registry()
    registry.add_registry_paths([upstream])
    spec = registry.require_eval("test-match")
    assert spec.cls == "evals.elsuite.test.match:TestMatch"
    assert spec.registry_path == upstream


def test_oaievalset_runs_its_test_set_with_a_fake_oaieval(fake: Fake, upstream: Path) -> None:
    assert main(["dummy", "test", "--registry_path", str(upstream)]) == 0
    assert sorted(fake.keys()) == sorted(EXPECTED["test"])


def test_our_engine_runs_its_test_basic_evals(upstream: Path, tmp_path: Path) -> None:
    from oaievalset.engine.cli import main as oaieval

    for key in EXPECTED["test-basic"]:
        record = tmp_path / f"{key}.jsonl"
        args = ["dummy", key, "--registry_path", str(upstream), "--record_path", str(record)]
        assert oaieval(args) == 0
        assert "final_report" in json.loads(record.read_text().splitlines()[-1])
