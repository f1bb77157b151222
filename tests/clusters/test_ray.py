"""The Ray executor on a real Ray cluster of a head and two worker nodes on this machine,
inside a private network namespace (see ray_scenario.py): every eval one Ray task, a worker
node killed mid-run, an interrupted driver, and our engine against a loopback server."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.fake import DATA, Fake, oaievalset_exe, progress_file
from helpers.processes import recorded_keys
from helpers.slurm_cluster import alive

R1 = ["--registry_path", str(DATA / "reg1")]
R3 = ["--registry_path", str(DATA / "reg3")]
EIGHT = [f"ee-{i}.dev.v0" for i in range(1, 9)]
SCENARIO = Path(__file__).resolve().parents[1] / "helpers" / "ray_scenario.py"


def why_not() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install '.[ray]'; it is not on every Python we support)"
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        return "a private network namespace (unshare -n, as root) is needed for a Ray cluster"
    return None


pytestmark = pytest.mark.skipif(why_not() is not None, reason=str(why_not()))


def scenario(
    name: str, argv: list[str], env: dict[str, str] | None = None, **extra: str
) -> dict[str, Any]:
    args = json.dumps({"oaievalset": oaievalset_exe(), "argv": argv, "env": env or {}, **extra})
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f'ip link set lo up && exec "{sys.executable}" "{SCENARIO}" "$0" "$1"', name, args],
        capture_output=True, text=True, timeout=400, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def no_eval_left(fake: Fake) -> bool:
    return not any(alive(e["pid"]) for e in fake.events() if e["event"] == "start")


def test_a_worker_node_killed_mid_run_costs_reruns_never_records(
    fake: Fake, isolated: Path
) -> None:
    result = scenario(
        "kill-node",
        ["dummy", "ee-eight", *R3, "--executor", "ray", "-j", "6"],
        {"FAKE_OAIEVAL_SLEEP": "2"},
    )
    assert result["code"] == 0, result["stderr"][-3000:]
    path = progress_file(isolated, "dummy", "ee-eight")
    assert sorted(recorded_keys(path)) == EIGHT, "every eval recorded exactly once"
    for line in path.read_text().splitlines():
        assert line == json.dumps(json.loads(line))  # the original's format
    assert set(fake.keys()) == set(EIGHT) and len(fake.keys()) > 8, "some ran again elsewhere"
    deadline = time.monotonic() + 20
    while not no_eval_left(fake) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert no_eval_left(fake), "no oaieval left running"
    assert "ray node" in result["stderr"]  # the table says where each ran
    lines = result["stdout"].splitlines()
    assert lines[0] == "Going to run the following commands:" and lines[-1] == ">>> All done!"


def test_ctrl_c_cancels_the_tasks_and_leaves_no_eval_running(fake: Fake, isolated: Path) -> None:
    result = scenario(
        "interrupt", ["dummy", "ee-eight", *R3, "--executor", "ray"], {"FAKE_OAIEVAL_SLEEP": "60"}
    )
    assert result["code"] == 130, result["stderr"][-3000:]
    assert result["elapsed"] < 30
    assert recorded_keys(progress_file(isolated, "dummy", "ee-eight")) == []
    deadline = time.monotonic() + 20
    while not no_eval_left(fake) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert no_eval_left(fake)


def test_after_kill_9_of_the_driver_a_resume_runs_exactly_what_is_not_recorded(
    fake: Fake, isolated: Path
) -> None:
    path = progress_file(isolated, "dummy", "ee-eight")
    result = scenario(
        "kill-driver",
        ["dummy", "ee-eight", *R3, "--executor", "ray", "-j", "4"],
        {"FAKE_OAIEVAL_SLEEP_FOR": "ee-1.dev.v0=0,ee-2.dev.v0=0", "FAKE_OAIEVAL_SLEEP": "6"},
        progress_file=str(path),
    )
    assert result["code"] == 0, result["stderr"][-3000:]
    done_before = result["recorded_at_kill"]
    assert len(done_before) >= 2
    resumed = [e["argv"][1] for e in fake.events() if e["event"] == "start"]
    resumed = resumed[result["first_starts"] :]
    assert sorted(resumed) == sorted(set(EIGHT) - set(done_before)), "exactly the rest"
    assert sorted(recorded_keys(path)) == EIGHT, "each recorded once"
    assert no_eval_left(fake)


def test_our_engine_runs_test_basic_on_ray_and_the_records_come_back(isolated: Path) -> None:
    result = scenario("engine", ["m", "test-basic", "--executor", "ray"])
    assert result["code"] == 0, result["stderr"][-3000:]
    assert result["requests"] == 21  # the driver's key and server reached the workers
    report = json.loads((isolated / "m.test-basic.progress.d" / "report.json").read_text())
    for entry in report["evals"]:
        record = Path(entry["record"])
        assert record.is_relative_to(isolated) and record.exists()  # in the state folder
        assert entry["where"].startswith("ray node ")


def test_a_record_too_large_to_bring_back_is_said_and_left_where_it_is(
    fake: Fake, isolated: Path, tmp_path: Path
) -> None:
    on_node = tmp_path / "records-on-the-node"
    on_node.mkdir()
    big = 513 * 2**20  # sparse: over the 512 MiB a task brings back, yet no disk used
    result = scenario(
        "run",
        ["dummy", "zz-order", *R1, "--executor", "ray"],
        {"FAKE_OAIEVAL_RECORD_FOR": f"zz-a.dev.v0={big},zz-b.dev.v0=100",
         "FAKE_OAIEVAL_RECORD_DIR": str(on_node)},
    )  # fmt: skip
    assert result["code"] == 0, result["stderr"][-3000:]
    warnings = [
        line for line in result["stderr"].splitlines() if line.startswith("oaievalset: warning:")
    ]
    assert len(warnings) == 1, result["stderr"]
    assert warnings[0].startswith(
        "oaievalset: warning: the record of zz-a.dev.v0 is 513 MiB, over the 512 MiB a Ray "
        "task brings back; it stays on ray node "
    )
    assert warnings[0].endswith(f" at {on_node / 'zz-a.dev.v0.jsonl'}")
    report = json.loads((isolated / "dummy.zz-order.progress.d" / "report.json").read_text())
    records = {entry["eval"]: entry["record"] for entry in report["evals"]}
    small = Path(records["zz-b.dev.v0"])
    assert small.is_relative_to(isolated) and small.stat().st_size == 100  # brought back
    # Not brought back: the report names it where it is only if that is on this machine
    # (here it is: the nodes run beside the driver).
    assert records["zz-a.dev.v0"] is None or Path(records["zz-a.dev.v0"]).exists()
    assert not list((isolated / "dummy.zz-order.progress.d" / "records").glob("*zz-a*"))


def test_without_a_cluster_the_run_stops_with_one_line(fake: Fake, isolated: Path) -> None:
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "$0" dummy ee-eight {R3[0]} '
         f'{R3[1]} --executor ray', oaievalset_exe()],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "oaievalset: error: no Ray cluster at 127.0.0.1:1" in done.stderr
    assert fake.started() == []
