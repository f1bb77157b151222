"""One scenario of the Ray tests, run inside a private network namespace (only loopback, so
that Ray uses 127.0.0.1): a real Ray cluster of a head and two worker nodes, started here
with ray.cluster_utils.Cluster, and oaievalset run against it as a user runs it. What
happened is printed as JSON on the last line.

    python ray_scenario.py SCENARIO ARGS_JSON
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEALTH = {  # a dead node is seen in about 2 s instead of about 13
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
    "health_check_initial_delay_ms": 0,
}


def starts(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in events if e["event"] == "start"]


def wait_until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting")
        time.sleep(0.1)


def quiet(log: Path, seconds: float) -> Any:
    """A condition: no eval alive, and no eval started, for `seconds`."""
    last = {"count": -1, "since": time.monotonic()}

    def check() -> bool:
        events = starts(log)
        if any(alive(e["pid"]) for e in events) or len(events) != last["count"]:
            last.update(count=len(events), since=time.monotonic())
            return False
        return time.monotonic() - last["since"] >= seconds

    return check


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and line.split()[1] in "ZX" for line in f)
    except OSError:
        return False


def raylet(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def driver_node(gcs_address: str, pid: int) -> str | None:
    """The id of the node whose raylet the driver of process `pid` is attached to, from
    the cluster's job table (read without connecting a driver of our own)."""
    from ray._private import services
    from ray._raylet import GlobalStateAccessor  # type: ignore[attr-defined,unused-ignore]
    from ray.core.generated import gcs_pb2

    options = services._get_gcs_client_options(gcs_address)  # type: ignore[no-untyped-call,unused-ignore]
    accessor = GlobalStateAccessor(options)
    accessor.connect()
    jobs = accessor.get_job_table(
        skip_submission_job_info_field=True, skip_is_running_tasks_field=True
    )
    for raw in jobs:
        job = gcs_pb2.JobTableData.FromString(raw)  # type: ignore[attr-defined,unused-ignore]
        if job.driver_pid == pid and not job.is_dead:
            return job.driver_address.node_id.hex()  # type: ignore[no-any-return]
    return None


def main(scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    # The nodes' own environment (the fake oaieval's settings reach it only this way: the
    # driver passes on only the model's and the engine's settings).
    os.environ.update(args.get("env", {}))
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEALTH}
    )
    workers = [cluster.add_node(num_cpus=3) for _ in range(2)]
    cluster.wait_for_nodes()
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    command = [args["oaievalset"], *args["argv"]]
    log = Path(os.environ.get("FAKE_OAIEVAL_LOG", "/nonexistent"))
    server = None
    try:
        if scenario == "engine":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from helpers.chat_server import ChatServer

            server = ChatServer(answer_fn=lambda r: "Mars", models=("m",)).start()
            env.update({"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-ray"})
        began = time.monotonic()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if scenario == "kill-node":
            wait_until(lambda: len(starts(log)) >= 6)  # both workers busy
            time.sleep(0.5)
            running = {e["pid"] for e in starts(log)}
            # Not the node the driver is attached to (on one machine it may be any of
            # them): a driver whose own raylet dies can submit nothing more, on any cluster.
            theirs = driver_node(cluster.gcs_address, proc.pid)
            others = [node for node in workers if node.node_id != theirs]
            busiest = max(others, key=lambda node: len(running & descendants(raylet(node))))
            cluster.remove_node(busiest, allow_graceful=False)  # type: ignore[no-untyped-call,unused-ignore]
        elif scenario == "kill-driver":
            progress = Path(args["progress_file"])

            def recorded() -> list[str]:
                text = progress.read_text() if progress.exists() else ""
                return [json.loads(line)[2] for line in text.splitlines() if line.strip()]

            wait_until(lambda: len(recorded()) >= 2 and len(starts(log)) >= 4)
            proc.kill()
            proc.wait()
            args["recorded_at_kill"] = recorded()
            # Ray ends a dead driver's tasks, and the evals die with them; then a resume.
            # A task handed to a worker just before the kill may still start its eval a
            # moment after the others died: wait until nothing runs and nothing new started
            # for a few seconds.
            wait_until(quiet(log, seconds=3), timeout=60)
            args["first_starts"] = len(starts(log))
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        elif scenario == "interrupt":
            wait_until(lambda: len(starts(log)) >= 2)
            time.sleep(max(0.0, 3 - (time.monotonic() - began)))
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=240)
        elapsed = time.monotonic() - began
        requests = len(server.requests) if server else None
    finally:
        if server is not None:
            server.stop()
        cluster.shutdown()  # type: ignore[no-untyped-call,unused-ignore]
    return {"code": proc.returncode, "stdout": out, "stderr": err, "elapsed": elapsed,
            "requests": requests, "first_starts": args.get("first_starts"),
            "recorded_at_kill": args.get("recorded_at_kill")}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
