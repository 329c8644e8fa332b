"""Tasks end to end through the gateway, on a suite of real processes: real Postgres queue, real
subprocesses in the sandbox. Then the queue's durability with executors as real processes: one killed
with tasks queued and running, and two sharing the queue without ever running a task twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from goblin.v1 import executor_pb2
from goblin_tools.suite import Suite
from tests.integration.executor_support import (
    MAX_QUEUED,
    ExecutorProcess,
    bearer,
    direct_stub,
    executor_suite_fixture,
    get_task,
    new_user,
    query,
    read_events,
    signed_admin,
    submit,
    wait_final,
    wait_status,
)

exec_suite = executor_suite_fixture()
# Built at run time, so the script itself holds no secret (a script with one is refused).
GITHUB_TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
PRINT_TOKEN = "t='ghp_'; echo \"token=${t}abcdefghijklmnopqrstuvwxyz0123456789\""


@pytest.fixture(scope="module")
def admin(exec_suite: Suite) -> Iterator[httpx.Client]:
    with exec_suite.admin_client() as client:
        yield client


@pytest.fixture(scope="module")
def user(exec_suite: Suite) -> Iterator[httpx.Client]:
    with exec_suite.client(headers=bearer(new_user(exec_suite))) as client:
        yield client


def script(client: httpx.Client, text: str, **body: object) -> dict:
    return submit(client, script=text, **body)


def test_goblins_are_listed_with_their_argument_schemas(user: httpx.Client) -> None:
    reply = user.get("/v1/goblins")
    assert reply.status_code == 200, reply.text
    goblins = reply.json()["data"]
    assert goblins, "the default catalog has goblins"
    for goblin in goblins:
        assert goblin["name"] and goblin["description"]
        assert goblin["args_schema"].get("type") == "object"
        assert goblin["default_timeout_s"] > 0


def test_a_goblin_runs_and_succeeds(user: httpx.Client) -> None:
    goblins = {g["name"]: g for g in user.get("/v1/goblins").json()["data"]}
    name = next(n for n in ("hello", "echo") if n in goblins)
    required = goblins[name]["args_schema"].get("required", [])
    args = {key: "goblin" for key in required}
    task = submit(user, goblin=name, args=args)
    assert task["status"] == "queued" and task["goblin"] == name and task["requester"]
    done = wait_final(user, task["id"])
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0 and done["started_at"] and done["finished_at"] and done["attempts"] == 1


def test_a_script_succeeds_with_its_output_and_events_in_order(admin: httpx.Client) -> None:
    task = script(admin, "echo one; echo two >&2; echo three")
    done = wait_final(admin, task["id"])
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0 and done["signal"] is None
    assert done["stdout"] == "one\nthree" and done["stderr"] == "two"
    assert done["stdout_bytes"] == len("one\nthree\n") and done["stderr_bytes"] == len("two\n")
    events = read_events(admin, task["id"])
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    statuses = [e["data"]["data"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    stdout = [e["data"]["data"] for e in events if e["event"] == "stdout"]
    assert stdout == ["one", "three"]
    assert [e["data"]["data"] for e in events if e["event"] == "stderr"] == ["two"]


def test_events_resume_after_last_event_id(admin: httpx.Client) -> None:
    task = script(admin, "for i in 1 2 3 4 5; do echo line$i; done")
    wait_final(admin, task["id"])
    everything = read_events(admin, task["id"])
    resumed = read_events(admin, task["id"], headers={"Last-Event-ID": "3"})
    assert resumed == everything[3:]
    assert resumed[-1]["event"] == "status" and resumed[-1]["data"]["data"] == "succeeded"
    # Past the final event: the stream ends at once with nothing.
    assert read_events(admin, task["id"], headers={"Last-Event-ID": everything[-1]["id"]}) == []
    bad = admin.get(f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_events_stream_live_while_the_task_runs(admin: httpx.Client) -> None:
    task = script(admin, "echo first; sleep 1; echo second")
    seen: list[tuple[str, float]] = []
    started = time.monotonic()
    with admin.stream("GET", f"/v1/tasks/{task['id']}/events", timeout=30) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and '"first"' in line or '"second"' in line:
                seen.append((line, time.monotonic() - started))
    assert len(seen) == 2
    assert seen[1][1] - seen[0][1] > 0.5, "the first line arrived before the task ended"


def test_a_failure_keeps_its_exit_code(admin: httpx.Client) -> None:
    done = wait_final(admin, script(admin, "echo failing >&2; exit 3")["id"])
    assert (done["status"], done["exit_code"], done["stderr"]) == ("failed", 3, "failing"), done


def test_a_timeout_kills_the_task(admin: httpx.Client) -> None:
    started = time.monotonic()
    done = wait_final(admin, script(admin, "echo going; sleep 60", timeout_s=1)["id"], timeout_s=20)
    assert done["status"] == "timed_out", done
    assert time.monotonic() - started < 15
    assert done["timeout_s"] == 1 and done["error"]


def test_cancel_kills_a_running_task(admin: httpx.Client) -> None:
    task = script(admin, "echo started; sleep 60")
    wait_status(admin, task["id"], "running")
    reply = admin.post(f"/v1/tasks/{task['id']}/cancel")
    assert reply.status_code == 200, reply.text
    started = time.monotonic()
    done = wait_final(admin, task["id"], timeout_s=15)
    assert done["status"] == "cancelled", done
    assert time.monotonic() - started < 10
    # Cancelling a finished task changes nothing.
    assert admin.post(f"/v1/tasks/{task['id']}/cancel").json()["status"] == "cancelled"


def test_a_killed_zygote_is_replaced_and_the_next_task_runs(exec_suite: Suite, admin: httpx.Client) -> None:
    executor = exec_suite.service_process("executor")
    zygotes = [p for p in executor.children() if _alive(p) and p.name() == "goblin-zygote"]
    assert len(zygotes) == 1, [(p.name(), p.cmdline()) for p in executor.children()]
    zygotes[0].kill()
    done = wait_final(admin, script(admin, "echo after")["id"])
    assert done["status"] == "succeeded" and done["stdout"].strip() == "after", done
    now = [p for p in executor.children() if _alive(p) and p.name() == "goblin-zygote"]
    assert len(now) == 1 and now[0].pid != zygotes[0].pid


def test_a_dry_run_returns_the_plan_and_runs_nothing(admin: httpx.Client, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"goblin-dry-run-{uuid.uuid4().hex}"
    task = script(admin, f"touch {marker}", dry_run=True)
    assert task["dry_run"] and task["status"] == "succeeded"
    plan = task["plan"]
    assert plan["argv"] and "limits" in plan and "env" in str(plan)
    assert all("=" not in name for name in plan.get("env", plan.get("env_names", [])))
    time.sleep(1.5)
    assert not marker.exists()
    events = read_events(admin, task["id"])
    assert [e["data"]["data"] for e in events] == ["succeeded"]


def test_unknown_goblin_and_bad_arguments_are_400s_naming_the_field(user: httpx.Client) -> None:
    reply = user.post("/v1/tasks", json={"goblin": "no-such-goblin"})
    assert reply.status_code == 400 and "goblin" in reply.json()["message"]
    goblins = user.get("/v1/goblins").json()["data"]
    with_args = next(g for g in goblins if g["args_schema"].get("properties"))
    reply = user.post("/v1/tasks", json={"goblin": with_args["name"], "args": {"no_such_argument": 1}})
    assert reply.status_code == 400, reply.text
    assert "args" in reply.json()["message"]
    reply = user.post("/v1/tasks", json={"goblin": with_args["name"], "script": "echo"})
    assert reply.status_code in (400, 422), reply.text


def test_scripts_are_for_admins_only(user: httpx.Client) -> None:
    reply = user.post("/v1/tasks", json={"script": "echo hi"})
    assert reply.status_code == 403, reply.text
    assert "admin" in reply.json()["message"]


def test_scripts_are_refused_when_disabled(exec_suite: Suite, tmp_path: Path) -> None:
    replica = ExecutorProcess(
        exec_suite, tmp_path / "no-scripts.log", GOBLIN_EXECUTOR_ALLOW_SCRIPTS="false", GOBLIN_EXECUTOR_CONCURRENCY="0"
    )
    try:
        replica.wait_serving()
        channel, stub = direct_stub(exec_suite, replica.address)
        with channel:
            with pytest.raises(grpc.RpcError) as refused:
                stub.RunTask(executor_pb2.RunTaskRequest(script="echo hi"), metadata=signed_admin(exec_suite))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "disabled" in refused.value.details()
    finally:
        replica.stop()


def test_an_idempotency_key_returns_the_same_task(exec_suite: Suite, admin: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = script(admin, "echo once", headers=key)
    again = script(admin, "echo once", headers=key)
    assert again["id"] == first["id"]
    wait_final(admin, first["id"])
    rows = query(
        exec_suite, "SELECT count(*) AS n FROM executor.tasks WHERE idempotency_key = $1", key["Idempotency-Key"]
    )
    assert rows[0]["n"] == 1


def test_a_secret_printed_by_a_task_never_reaches_the_database_or_the_stream(
    exec_suite: Suite, admin: httpx.Client
) -> None:
    task = script(admin, PRINT_TOKEN)
    done = wait_final(admin, task["id"])
    assert done["status"] == "succeeded", done
    assert GITHUB_TOKEN not in done["stdout"] and "[REDACTED:" in done["stdout"]
    events = read_events(admin, task["id"])
    assert any("[REDACTED:" in e["data"]["data"] for e in events)
    assert all(GITHUB_TOKEN not in str(e) for e in events)
    leaked = query(
        exec_suite,
        """SELECT (SELECT count(*) FROM executor.task_events WHERE data LIKE '%' || $1 || '%')
                + (SELECT count(*) FROM executor.tasks
                    WHERE stdout LIKE '%' || $1 || '%' OR stderr LIKE '%' || $1 || '%')
                + (SELECT count(*) FROM audit.audit_events WHERE details::text LIKE '%' || $1 || '%') AS n""",
        GITHUB_TOKEN[4:20],
    )
    assert leaked[0]["n"] == 0


def test_own_tasks_listed_admins_see_all(admin: httpx.Client, user: httpx.Client) -> None:
    goblins = {g["name"]: g for g in user.get("/v1/goblins").json()["data"]}
    name = next(n for n in ("hello", "echo") if n in goblins)
    args = {key: "x" for key in goblins[name]["args_schema"].get("required", [])}
    mine = submit(user, goblin=name, args=args)
    wait_final(user, mine["id"])
    listed = user.get("/v1/tasks").json()["data"]
    assert mine["id"] in {t["id"] for t in listed}
    assert {t["requester"] for t in listed} == {mine["requester"]}
    everyone = admin.get("/v1/tasks", params={"limit": 200}).json()["data"]
    assert mine["id"] in {t["id"] for t in everyone}
    assert len({t["requester"] for t in everyone}) >= 2
    succeeded = user.get("/v1/tasks", params={"status": "succeeded"}).json()["data"]
    assert all(t["status"] == "succeeded" for t in succeeded)
    assert user.get("/v1/tasks", params={"status": "bogus"}).status_code in (400, 422)


def test_a_task_cancelled_while_queued_never_runs(exec_suite: Suite, admin: httpx.Client) -> None:
    # Both of the suite's workers busy: the next task must wait in the queue.
    busy = [script(admin, "echo busy; sleep 30")["id"] for _ in range(2)]
    try:
        for task_id in busy:
            wait_status(admin, task_id, "running")
        waiting = script(admin, "echo this must never run")
        assert get_task(admin, waiting["id"])["status"] == "queued"
        reply = admin.post(f"/v1/tasks/{waiting['id']}/cancel")
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "cancelled"
    finally:
        for task_id in busy:
            admin.post(f"/v1/tasks/{task_id}/cancel")
        for task_id in busy:
            wait_final(admin, task_id)
    # The workers are free again and have looked at the queue since (they poll every 0.5 s).
    time.sleep(1.5)
    done = get_task(admin, waiting["id"])
    assert done["status"] == "cancelled" and done["attempts"] == 0, done
    assert done["started_at"] is None and done["exit_code"] is None and done["stdout"] == ""
    events = read_events(admin, waiting["id"])
    assert [(e["event"], e["data"]["data"]) for e in events] == [("status", "queued"), ("status", "cancelled")]
    ran = query(
        exec_suite,
        "SELECT count(*) AS n FROM audit.audit_events WHERE event_type = 'task_finished' AND details->>'task_id' = $1",
        waiting["id"],
    )
    assert ran[0]["n"] == 0


def test_a_full_queue_is_a_429(admin: httpx.Client) -> None:
    submitted = []
    try:
        for _ in range(MAX_QUEUED):
            submitted.append(script(admin, "sleep 30")["id"])
        reply = admin.post("/v1/tasks", json={"script": "sleep 30"})
        assert reply.status_code == 429, reply.text
        assert reply.json()["error"] == "task_queue_full"
    finally:
        for task_id in submitted:
            admin.post(f"/v1/tasks/{task_id}/cancel")
        for task_id in submitted:
            wait_final(admin, task_id)


def test_metrics(exec_suite: Suite) -> None:
    text = httpx.get(exec_suite.metrics_url("executor"), timeout=10).text
    assert 'goblin_executor_tasks_total{status="succeeded"}' in text
    assert "goblin_executor_task_duration_seconds_bucket" in text
    assert "goblin_executor_queue_depth" in text


# -- durability: executors as real processes --------------------------------------------------------


def test_a_killed_executor_loses_no_queued_task_and_fails_the_running_one(
    exec_suite: Suite, admin: httpx.Client
) -> None:
    executor = exec_suite.service_process("executor")
    running = [script(admin, "echo up; sleep 60")["id"] for _ in range(2)]
    for task_id in running:
        wait_status(admin, task_id, "running")
    queued = [script(admin, f"echo queued-{i}")["id"] for i in range(3)]
    children = executor.children(recursive=True)
    os.kill(executor.pid, signal.SIGKILL)
    # The supervisor restarts it; the queued tasks then run, the running ones are failed with the reason.
    for task_id in queued:
        done = wait_final(admin, task_id, timeout_s=60)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1
    for task_id in running:
        done = wait_final(admin, task_id, timeout_s=60)
        assert done["status"] == "failed", done
        assert "executor lost" in done["error"]
    # The dead executor's task processes did not outlive their task for long (they die with their
    # parent launcher, or the sandbox's own reaping); at the least nothing is left running as its child.
    psutil.wait_procs([c for c in children if c.is_running()], timeout=10)


# The task's main process ignores SIGTERM and leaves a grandchild that left its session (also
# ignoring SIGTERM): nothing of it may outlive a killed executor for long.
STUBBORN = "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 300\" & echo up; sleep 300"


def _cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_executor_leaves_no_launcher_and_no_task_process(exec_suite: Suite, admin: httpx.Client) -> None:
    executor = exec_suite.service_process("executor")
    task = script(admin, STUBBORN, timeout_s=600)
    wait_status(admin, task["id"], "running")
    deadline = time.monotonic() + 20
    while True:  # the launcher, (bwrap,) sh and both sleeps
        tree = executor.children(recursive=True)
        if sum(1 for p in tree if _alive(p) and p.name() == "sleep") >= 2:
            break
        assert time.monotonic() < deadline, [p.cmdline() for p in tree]
        time.sleep(0.1)
    # The zygote (one per executor) and the task's launcher, a fork of it (zygote.py names both).
    zygotes = [p for p in tree if p.name() == "goblin-zygote"]
    launchers = [p for p in tree if p.name() == "goblin-launch"]
    assert len(zygotes) == 1 and len(launchers) == 1, [(p.name(), p.cmdline()) for p in tree]
    assert launchers[0].ppid() == zygotes[0].pid
    cpu_before = {p.pid: _cpu_s(p) for p in launchers}
    os.kill(executor.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    cpu_last = dict(cpu_before)
    # The grace (2 s) and the launcher's last sweep, with room for a loaded machine.
    while any(_alive(p) for p in tree):
        for p in launchers:
            if _alive(p):
                cpu_last[p.pid] = max(cpu_last[p.pid], _cpu_s(p))
        assert time.monotonic() - killed_at < 15, [(p.pid, p.cmdline()) for p in tree if _alive(p)]
        time.sleep(0.1)
    assert all(cpu_last[pid] - cpu_before[pid] < 0.5 for pid in cpu_before), (cpu_before, cpu_last)
    done = wait_final(admin, task["id"], timeout_s=60)
    assert done["status"] == "failed" and "executor lost" in done["error"], done


def test_two_executors_never_run_the_same_task(exec_suite: Suite, admin: httpx.Client, tmp_path: Path) -> None:
    replica = ExecutorProcess(exec_suite, tmp_path / "replica.log")
    try:
        replica.wait_serving()
        ids: list[str] = []
        while len(ids) < 30:
            # Each takes a moment, so the suite's two workers are busy and the replica must take work.
            reply = admin.post("/v1/tasks", json={"script": f"sleep 0.3; echo task-{len(ids)}"})
            if reply.status_code == 429:  # the tenant's bound: wait for the queue to drain a little
                time.sleep(0.1)
                continue
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["id"])
        for task_id in ids:
            done = wait_final(admin, task_id, timeout_s=60)
            assert done["status"] == "succeeded" and done["attempts"] == 1, json.dumps(done)
        runs = query(
            exec_suite,
            """SELECT details->>'task_id' AS task_id, details->>'owner' AS owner FROM audit.audit_events
                WHERE event_type = 'task_finished' AND details->>'task_id' = ANY($1::text[])""",
            ids,
        )
        assert sorted(r["task_id"] for r in runs) == sorted(ids), "each task finished exactly once"
        starts = query(
            exec_suite,
            """SELECT task_id, count(*) AS n FROM executor.task_events
                WHERE kind = 'status' AND data = 'running' AND task_id = ANY($1::text[]) GROUP BY task_id""",
            ids,
        )
        assert len(starts) == len(ids) and all(r["n"] == 1 for r in starts)
        assert len({r["owner"] for r in runs}) == 2, "both executors took work"
    finally:
        replica.stop()


def test_the_cli_runs_a_goblin_and_exits_with_its_code(exec_suite: Suite) -> None:
    env = {**exec_suite.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    goblin = str(Path(sys.executable).parent / "goblin")
    ran = subprocess.run(
        [goblin, "tasks", "run", "hello", "--arg", "name=cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert "hello, cli" in ran.stdout and "succeeded" in ran.stderr
    dry = subprocess.run(
        [goblin, "tasks", "run", "sleep", "--arg", "seconds=5", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert '"argv"' in dry.stdout
    bad = subprocess.run(
        [goblin, "tasks", "run", "sleep", "--arg", "seconds=-1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "seconds" in bad.stderr
