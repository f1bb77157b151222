"""A Ray task lost with its node, which Ray itself does not retry (LocalRayletDiedError
raised as the task is handed to a raylet that is dying), is submitted again by the
executor, a few times at most. The race cannot be produced at will on a real cluster (the
node-kill scenario in tests/clusters hits it now and then), so here Ray's answers are
played by a stand-in; the exceptions are Ray's own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed"
)


class Cluster:
    """Plays ray.get/ray.wait: each submitted task's outcome comes from `outcomes`."""

    def __init__(self, outcomes: list[Any]) -> None:
        import ray

        self.exceptions = ray.exceptions
        self.outcomes = outcomes
        self.submitted: list[int] = []
        self.dead: set[str] = set()

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": n, "Alive": n not in self.dead} for n in ("n1", "n2")]

    def options(self, **_: Any) -> Cluster:
        return self

    def remote(self, *_: Any) -> int:
        self.submitted.append(len(self.submitted))
        return self.submitted[-1]

    def wait(self, refs: list[int], num_returns: int, timeout: float | None) -> Any:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: int) -> Any:
        outcome = self.outcomes[ref]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def executor(cluster: Cluster, tmp_path: Path) -> Any:
    from oaievalset.executors.ray import LOST_WITH_A_NODE, RayExecutor

    ray: Any = RayExecutor.__new__(RayExecutor)  # no cluster to connect to
    ray.ray = SimpleNamespace(
        exceptions=cluster.exceptions, get=cluster.get, wait=cluster.wait, nodes=cluster.nodes
    )
    ray.records = tmp_path / "records"
    ray._task = cluster
    ray._lost = tuple(getattr(cluster.exceptions, name) for name in LOST_WITH_A_NODE)
    ray._jobs = {}
    return ray


def ran(code: int) -> dict[str, Any]:
    return {"code": code, "output": b"ok\n", "record": None, "record_size": None, "node": "n1"}


def ended(ray: Any) -> list[Any]:
    every = []
    while ray._jobs:
        every += ray.wait(0)
    return every


def test_a_task_lost_with_its_node_is_submitted_again(tmp_path: Path) -> None:
    from oaievalset.executors.base import JobSpec

    lost = Cluster([]).exceptions.LocalRayletDiedError()
    cluster = Cluster([lost, ran(0)])
    ray = executor(cluster, tmp_path)
    log = tmp_path / "e.log"
    ray.start(JobSpec(["oaieval", "m", "e"], log))
    [end] = ended(ray)
    assert end.exit_code == 0 and end.where == "ray node n1"
    assert cluster.submitted == [0, 1]
    assert "its Ray task was lost (LocalRayletDiedError); submitted again" in log.read_text()


def test_a_task_lost_again_and_again_fails_with_the_reason(tmp_path: Path) -> None:
    from oaievalset.executors.base import JobSpec
    from oaievalset.executors.ray import LOSS_LIMIT

    exceptions = Cluster([]).exceptions
    cluster = Cluster([exceptions.WorkerCrashedError()] * (LOSS_LIMIT + 1))
    ray = executor(cluster, tmp_path)
    ray.start(JobSpec(["oaieval", "m", "e"], tmp_path / "e.log"))
    [end] = ended(ray)
    assert end.exit_code == 1
    assert end.reason == f"its Ray task was lost {LOSS_LIMIT + 1} times (WorkerCrashedError)"
    assert len(cluster.submitted) == LOSS_LIMIT + 1


def test_a_failing_task_is_not_submitted_again(tmp_path: Path) -> None:
    from oaievalset.executors.base import JobSpec

    exceptions = Cluster([]).exceptions
    cluster = Cluster([exceptions.RaySystemError("broken")])
    ray = executor(cluster, tmp_path)
    ray.start(JobSpec(["oaieval", "m", "e"], tmp_path / "e.log"))
    [end] = ended(ray)
    assert end.exit_code == 1 and "RaySystemError" in (end.reason or "")
    assert cluster.submitted == [0]


@pytest.mark.parametrize("node_died", [True, False])
def test_an_eval_killed_as_its_node_died_is_submitted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_died: bool
) -> None:
    from oaievalset.executors import ray as backend
    from oaievalset.executors.base import JobSpec

    monkeypatch.setattr(backend, "NODE_DEATH_WAIT", 0.3)
    killed = {**ran(-9), "node": "n2"}
    cluster = Cluster([killed, ran(0)])
    if node_died:
        cluster.dead.add("n2")
    ray = executor(cluster, tmp_path)
    ray.start(JobSpec(["oaieval", "m", "e"], tmp_path / "e.log"))
    [end] = ended(ray)
    if node_died:  # killed with its node (the task came back before it was lost)
        assert end.exit_code == 0 and cluster.submitted == [0, 1]
    else:  # killed otherwise (an OOM killer): a failure, as any eval's
        assert end.exit_code == -9 and cluster.submitted == [0]
