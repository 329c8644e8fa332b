"""Attacks on the task routes and the executor: another tenant's task by id, a narrower credential,
hostile arguments and bodies, and the executor called directly without (or with a forged) principal.
Every refusal is a clear 4xx JSON error; nothing here may be a 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest

from goblin.v1 import executor_pb2
from goblin_tools.suite import Suite
from services.common.principal import PRINCIPAL_METADATA_KEY
from tests.integration.executor_support import (
    api_key,
    bearer,
    direct_stub,
    executor_suite_fixture,
    new_user,
    submit,
    wait_final,
)
from tests.integration.principals import as_caller

exec_suite = executor_suite_fixture()


@pytest.fixture(scope="module")
def owner(exec_suite: Suite) -> Iterator[httpx.Client]:
    with exec_suite.client(headers=bearer(new_user(exec_suite, tenant_id=f"own-{uuid.uuid4().hex[:8]}"))) as client:
        yield client


@pytest.fixture(scope="module")
def stranger(exec_suite: Suite) -> Iterator[httpx.Client]:
    with exec_suite.client(headers=bearer(new_user(exec_suite, tenant_id=f"oth-{uuid.uuid4().hex[:8]}"))) as client:
        yield client


@pytest.fixture(scope="module")
def goblin_name(owner: httpx.Client) -> str:
    goblins = {g["name"]: g for g in owner.get("/v1/goblins").json()["data"]}
    return next(n for n in ("hello", "echo") if n in goblins)


@pytest.fixture(scope="module")
def owned_task(owner: httpx.Client, goblin_name: str) -> dict:
    required = {g["name"]: g for g in owner.get("/v1/goblins").json()["data"]}[goblin_name]["args_schema"]
    task = submit(owner, goblin=goblin_name, args={k: "x" for k in required.get("required", [])})
    wait_final(owner, task["id"])
    return task


def test_another_tenants_task_is_not_found(stranger: httpx.Client, owned_task: dict) -> None:
    task_id = owned_task["id"]
    for method, path in (
        ("GET", f"/v1/tasks/{task_id}"),
        ("POST", f"/v1/tasks/{task_id}/cancel"),
        ("GET", f"/v1/tasks/{task_id}/events"),
    ):
        reply = stranger.request(method, path)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error"] == "not_found"
    assert task_id not in {t["id"] for t in stranger.get("/v1/tasks").json()["data"]}


def test_another_user_of_the_same_tenant_cannot_see_it_either(exec_suite: Suite, owner: httpx.Client) -> None:
    me = owner.get("/auth/me").json()
    with exec_suite.client(headers=bearer(new_user(exec_suite, tenant_id=me["tenant_id"]))) as colleague:
        task = owner.get("/v1/tasks").json()["data"][0]
        assert colleague.get(f"/v1/tasks/{task['id']}").status_code == 404


def test_a_chat_only_key_cannot_touch_tasks(exec_suite: Suite, owner: httpx.Client, owned_task: dict) -> None:
    token = owner.headers["Authorization"].removeprefix("Bearer ")
    key = api_key(exec_suite, token, ["chat"])
    with exec_suite.client(headers=bearer(key)) as chat_only:
        for method, path in (
            ("GET", "/v1/goblins"),
            ("GET", "/v1/tasks"),
            ("POST", "/v1/tasks"),
            ("GET", f"/v1/tasks/{owned_task['id']}"),
            ("POST", f"/v1/tasks/{owned_task['id']}/cancel"),
        ):
            reply = chat_only.request(method, path, json={"goblin": "hello"} if method == "POST" else None)
            assert reply.status_code == 403, (path, reply.text)
            assert reply.json()["error"] == "insufficient_scope"
    key = api_key(exec_suite, token, ["tasks"])
    with exec_suite.client(headers=bearer(key)) as tasks_key:
        assert tasks_key.get("/v1/goblins").status_code == 200
        # A user's tasks-scoped key is still not an admin: no scripts.
        assert tasks_key.post("/v1/tasks", json={"script": "id"}).status_code == 403


def test_no_credential_is_a_401(exec_suite: Suite) -> None:
    with exec_suite.client() as anonymous:
        assert anonymous.get("/v1/tasks").status_code == 401
        assert anonymous.post("/v1/tasks", json={"goblin": "hello"}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"goblin": "hello", "args": {"name": "; rm -rf / #"}},
        {"goblin": "hello", "args": {"name": "$(touch /tmp/pwned)"}},
        {"goblin": "hello", "args": {"name": "--help"}},
        {"goblin": "hello", "args": {"name": "a\u0000b"}},
        {"goblin": "hello", "args": {"name": {"nested": [[[[[[[[[[1]]]]]]]]]]}}},
        {"goblin": "hello", "args": {"x" * 10_000: 1}},
        {"goblin": "../../bin/sh"},
        {"goblin": "hello\u0000"},
        {"goblin": "hello", "timeout_s": -1},
        {"goblin": "hello", "timeout_s": 10**12},
        {"goblin": "hello", "script": "id"},
        {"goblin": "hello", "unexpected": True},
        {"args": {}},
        {},
        [],
        "text",
    ],
)
def test_hostile_bodies_are_4xx_or_run_as_literal_arguments(owner: httpx.Client, body: object) -> None:
    reply = owner.post("/v1/tasks", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert reply.status_code < 500, reply.text
    if reply.status_code == 202:
        done = wait_final(owner, reply.json()["id"])
        # Accepted only as plain argv items: no shell ever saw them.
        assert done["status"] in ("succeeded", "failed"), done
    else:
        assert reply.status_code in (400, 403, 404, 422), reply.text
        assert reply.json()["message"]


def test_hostile_ids_and_headers(owner: httpx.Client) -> None:
    for task_id in ("../../etc/passwd", "' OR 1=1 --", "0" * 31, "g" * 32, "%00"):
        assert owner.get(f"/v1/tasks/{task_id}").status_code in (400, 404, 422)
    missing = uuid.uuid4().hex
    assert owner.get(f"/v1/tasks/{missing}").status_code == 404
    assert owner.post("/v1/tasks", json={"goblin": "hello"}, headers={"Idempotency-Key": "k" * 500}).status_code in (
        400,
        422,
    )
    assert owner.get(f"/v1/tasks/{missing}/events", headers={"Last-Event-ID": "-5"}).status_code in (400, 404)


def test_direct_grpc_without_a_principal_is_refused(exec_suite: Suite) -> None:
    channel, stub = direct_stub(exec_suite)
    with channel:
        for call, request in (
            (stub.ListGoblins, executor_pb2.ListGoblinsRequest()),
            (stub.RunTask, executor_pb2.RunTaskRequest(goblin="hello")),
            (stub.ListTasks, executor_pb2.ListTasksRequest()),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            with pytest.raises(grpc.RpcError) as forged:
                call(request, timeout=10, metadata=((PRINCIPAL_METADATA_KEY, "forged.assertion"),))
            assert forged.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_direct_grpc_with_a_principal_sees_only_its_own(exec_suite: Suite, owned_task: dict) -> None:
    channel, stub = direct_stub(exec_suite)
    with channel:
        stranger = as_caller(exec_suite, user_id="someone-else", tenant_id="elsewhere", scopes=("tasks",))
        with pytest.raises(grpc.RpcError) as hidden:
            stub.GetTask(executor_pb2.GetTaskRequest(task_id=owned_task["id"]), metadata=stranger, timeout=10)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        no_scope = as_caller(exec_suite, user_id="u", tenant_id="default", scopes=("chat",))
        with pytest.raises(grpc.RpcError) as narrow:
            stub.ListTasks(executor_pb2.ListTasksRequest(), metadata=no_scope, timeout=10)
        assert narrow.value.code() == grpc.StatusCode.PERMISSION_DENIED
