"""The Slurm executor on a real cluster of two nodes started on this machine (Debian's
slurmctld, slurmd and munge): every eval one batch job, the driver the only writer of the
progress file; interrupts, timeouts, a node that dies, and a driver killed with kill -9."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.chat_server import ChatServer
from helpers.fake import DATA, REG1, Fake, oaievalset_exe, progress_file, run_cli
from helpers.processes import recorded_keys, start, wait_for
from helpers.slurm_cluster import Cluster, alive, available

R1 = ["--registry_path", str(REG1)]
R3 = ["--registry_path", str(DATA / "reg3")]
EIGHT = [f"ee-{i}.dev.v0" for i in range(1, 9)]
SLURM = ["--executor", "slurm", "--slurm-shared"]  # the test's /tmp is one machine's


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    started = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield started
    started.stop()


@pytest.fixture
def slurm_env(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    yield cluster
    assert cluster.queue() == [], "a test left jobs in the queue"


def test_eight_evals_run_as_jobs_on_both_nodes_and_are_recorded_once(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    result = run_cli(
        ["dummy", "ee-eight", *R3, *SLURM, "-j", "4"], {"FAKE_OAIEVAL_SLEEP": "1"}, timeout=120
    )
    assert result.returncode == 0, result.stderr
    started = [e for e in fake.events() if e["event"] == "start"]
    assert sorted(e["argv"][1] for e in started) == EIGHT, "each eval ran once"
    assert all(e["job"] for e in started), "each inside a Slurm job"
    assert {e["node"] for e in started} == {"node1", "node2"}
    path = progress_file(isolated, "dummy", "ee-eight")
    assert sorted(recorded_keys(path)) == EIGHT
    # The progress file is the original's: one json.dumps(command) per line.
    for line in path.read_text().splitlines():
        command = json.loads(line)
        assert line == json.dumps(command) and command[:2] == ["oaieval", "dummy"]
    lines = result.stdout.splitlines()
    assert lines[0] == "Going to run the following commands:" and lines[-1] == ">>> All done!"
    assert sum(line.startswith(">>> Saved progress to ") for line in lines) == 8
    assert "slurm job" in result.stderr and "on node" in result.stderr  # the table says where


def test_ctrl_c_cancels_every_job_and_leaves_no_eval_running(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    proc = start(
        ["dummy", "ee-eight", *R3, *SLURM, "-j", "4", "--no-resume"], {"FAKE_OAIEVAL_SLEEP": "60"}
    )
    time.sleep(3)
    wait_for(lambda: len(fake.started()) >= 2, timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    wait_for(lambda: slurm_env.queue() == [], timeout=20)
    pids = [e["pid"] for e in fake.events() if e["event"] == "start"]
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=20)
    assert recorded_keys(progress_file(isolated, "dummy", "ee-eight")) == []


def test_failures_timeouts_and_retries_behave_as_locally(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    env = {"FAKE_OAIEVAL_EXIT": "zz-a.dev.v0=3", "FAKE_OAIEVAL_SLEEP_FOR": "zz-c.dev.v0=60",
           "FAKE_OAIEVAL_FAIL_TIMES": "zz-x1.v0=1"}  # fmt: skip
    result = run_cli(
        ["dummy", "zz-glob", *R1, *SLURM, "-j", "4", "--no-exit-on-error", "--timeout", "4",
         "--attempts", "2"],
        env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = {line.split()[0]: line for line in result.stderr.splitlines() if line.startswith("zz-")}
    assert " failed " in rows["zz-a.dev.v0"] and " timed out " in rows["zz-c.dev.v0"]
    assert " done " in rows["zz-x1.v0"] and " done " in rows["zz-b.dev.v0"]
    assert sorted(recorded_keys(progress_file(isolated, "dummy", "zz-glob"))) == [
        "zz-b.dev.v0",
        "zz-x1.v0",
    ]
    assert "exit code 3" in result.stderr


def test_sbatch_refusing_a_job_mid_run_ends_the_run_with_its_report_and_one_line(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    # zz-b and zz-a run as jobs; then the partition stops taking jobs, so that sbatch refuses
    # the next one (zz-c) while zz-a still runs.
    env = {"FAKE_OAIEVAL_SLEEP_FOR": "zz-b.dev.v0=2,zz-a.dev.v0=60"}
    proc = start(["dummy", "zz-glob", *R1, *SLURM, "-j", "2"], env)
    try:
        wait_for(lambda: len(fake.started()) == 2, timeout=60)
        drained = slurm_env.run("scontrol", "update", "PartitionName=debug", "State=DRAIN")
        assert drained.returncode == 0, drained.stderr
        _, err = proc.communicate(timeout=90)
    finally:
        slurm_env.run("scontrol", "update", "PartitionName=debug", "State=UP")
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    lines = err.splitlines()
    assert lines[-1].startswith(
        "oaievalset: error: the run stopped midway: sbatch refused the job of oaieval dummy "
        "zz-c.dev.v0 "
    ), err
    assert lines[-1].endswith("Required partition not available (inactive or drain)")
    assert sum(line.startswith("oaievalset: error:") for line in lines) == 1, err
    assert "Traceback" not in err
    rows = {line.split()[0]: line.split()[1] for line in lines if line.startswith("zz-")}
    assert rows == {"zz-b.dev.v0": "done", "zz-a.dev.v0": "interrupted",
                    "zz-c.dev.v0": "failed", "zz-x1.v0": "not"}  # fmt: skip
    report = json.loads((isolated / "dummy.zz-glob.progress.d" / "report.json").read_text())
    assert report["state"] == "ended" and report["exit_code"] == 1
    assert [e["status"] for e in report["evals"]] == ["done", "interrupted", "failed", "not run"]
    assert report["evals"][2]["reason"].startswith("sbatch refused the job of")
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == ["zz-b.dev.v0"]
    # zz-a's job was cancelled: nothing is left in the queue (the fixture checks) or running.
    wait_for(lambda: slurm_env.queue() == [], timeout=20)
    pids = [e["pid"] for e in fake.events() if e["event"] == "start"]
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=20)


def test_a_damaged_exit_file_is_a_failure_saying_so_and_its_job_is_cancelled(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    proc = start(["dummy", "zz-chain", *R1, *SLURM], {"FAKE_OAIEVAL_SLEEP": "60"})
    wait_for(lambda: len(fake.started()) == 1, timeout=30)
    folder = isolated / "dummy.zz-chain.progress.d" / "slurm"
    (marker,) = folder.glob("*.job")
    exit_file = marker.with_suffix(".exit")
    exit_file.write_text("garbage\n")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"its exit file {exit_file} holds 'garbage', not an exit code" in err
    assert "Traceback" not in err
    report = json.loads((folder.parent / "report.json").read_text())
    assert report["state"] == "ended" and report["evals"][0]["status"] == "failed"
    wait_for(lambda: slurm_env.queue() == [], timeout=20)
    assert not alive(fake.events()[0]["pid"])


def test_a_job_cancelled_from_outside_is_a_failure_with_slurms_reason(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    proc = start(["dummy", "zz-chain", *R1, *SLURM], {"FAKE_OAIEVAL_SLEEP": "60"})
    wait_for(lambda: len(fake.started()) == 1, timeout=30)
    job = slurm_env.queue()[0]
    slurm_env.run("scancel", job)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"Slurm job {job} ended CANCELLED without an exit code" in err


def test_a_job_whose_node_dies_runs_again_elsewhere_and_is_recorded_once(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    proc = start(["dummy", "zz-chain", *R1, *SLURM], {"FAKE_OAIEVAL_SLEEP": "8"})
    wait_for(lambda: len(fake.started()) == 1, timeout=30)
    node = fake.events()[0]["node"]
    slurm_env.crash(node)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        slurm_env.restart(node)
    assert proc.returncode == 0, err
    starts = fake.started()
    assert len(starts) == 2, "the job ran again after its node died"
    assert {e["node"] for e in fake.events() if e["event"] == "start"} == {"node1", "node2"}
    assert recorded_keys(progress_file(isolated, "dummy", "zz-chain")) == ["zz-c.dev.v0"]
    wait_for(slurm_env._all_idle, timeout=60)  # the node is back for the next tests


def test_after_kill_9_of_the_driver_a_resume_takes_what_its_jobs_completed(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    proc = start(["dummy", "zz-glob", *R1, *SLURM, "-j", "4"], {"FAKE_OAIEVAL_SLEEP": "3"})
    wait_for(lambda: len(fake.started()) == 2, timeout=30)
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: slurm_env.queue() == [], timeout=60)  # its jobs finish on their own
    finished = {e["argv"][1] for e in fake.events() if e["event"] == "end"}
    assert len(finished) >= 2
    assert recorded_keys(progress_file(isolated, "dummy", "zz-glob")) == []  # no driver left
    result = run_cli(["dummy", "zz-glob", *R1, *SLURM, "-j", "4"], timeout=120)
    assert result.returncode == 0, result.stderr
    # What the jobs completed is taken, not run again; only the rest runs.
    assert sorted(fake.keys()) == ["zz-a.dev.v0", "zz-b.dev.v0", "zz-c.dev.v0", "zz-x1.v0"]
    assert sorted(recorded_keys(progress_file(isolated, "dummy", "zz-glob"))) == sorted(fake.keys())


def test_our_engine_runs_test_basic_on_the_cluster_against_a_loopback_server(
    isolated: Path, slurm_env: Cluster
) -> None:
    server = ChatServer(answer_fn=lambda r: "Mars", models=("m",)).start()
    try:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-slurm"}
        result = run_cli(["m", "test-basic", *SLURM, "-j", "2"], env, timeout=180)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 21  # the driver's key and base URL reached the jobs
    assert "accuracy=" in result.stderr
    # Each job kept its answers in the shared state folder (where a requeued job on another
    # node finds them), and the driver removed each journal once the eval was recorded.
    state = isolated / "m.test-basic.progress.d"
    logs = sorted((state / "logs").glob("*.log"))
    assert len(logs) == 4
    for log in logs:
        assert f" reused from {state / 'answers'}/" in log.read_text(), log
    assert list((state / "answers").iterdir()) == []


def test_a_state_folder_under_tmp_on_several_nodes_is_refused(
    fake: Fake, isolated: Path, slurm_env: Cluster
) -> None:
    result = run_cli(["dummy", "zz-chain", *R1, "--executor", "slurm"])
    assert result.returncode == 2
    assert "do not share; set OAIEVALSET_PROGRESS_DIR to a shared folder" in result.stderr
    assert fake.started() == []


def test_no_sbatch_or_no_controller_is_one_line_and_nothing_runs(
    fake: Fake, isolated: Path, tmp_path: Path
) -> None:
    bare = {"PATH": f"{fake.bin}{os.pathsep}/usr/bin/nonexistent"}
    result = run_cli(["dummy", "zz-chain", *R1, *SLURM], bare)
    assert result.returncode == 1 and "'sbatch' not found on PATH" in result.stderr
    if available() is None:
        dead = tmp_path / "dead.conf"
        dead.write_text("ClusterName=dead\nSlurmctldHost=localhost\nSlurmctldPort=9\n"
                        "NodeName=n1 CPUs=1\nPartitionName=p Nodes=n1\n")  # fmt: skip
        result = run_cli(["dummy", "zz-chain", *R1, *SLURM], {"SLURM_CONF": str(dead)}, timeout=120)
        assert result.returncode == 1 and "no Slurm controller answers" in result.stderr
    assert fake.started() == []
    assert oaievalset_exe()
