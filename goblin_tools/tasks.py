"""``goblin tasks run``: run a goblin through the gateway's HTTPS API and follow its events live.

By default it talks to the local suite (``https://127.0.0.1:$GOBLIN_GATEWAY_PORT``) with the admin key
``goblin up`` wrote to ``GOBLIN_HOME/admin.key`` and the suite's CA (``GOBLIN_HOME/tls/ca.pem``);
``GOBLIN_GATEWAY_URL``, ``GOBLIN_API_KEY`` and ``GOBLIN_CA_FILE`` point it elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from services.common.settings import default_home

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
# Exit codes for endings without one of the process's own, as shells use them.
TIMED_OUT_EXIT = 124
CANCELLED_EXIT = 130
FAILED_EXIT = 1


class TaskCliError(Exception):
    """A refusal or failure to report (the message is the gateway's)."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    key: str
    ca_file: Path | None

    @classmethod
    def local(cls) -> Endpoint:
        """The gateway of ``GOBLIN_HOME``'s suite unless the environment names another."""
        home = default_home()
        url = (
            os.environ.get("GOBLIN_GATEWAY_URL") or f"https://127.0.0.1:{os.environ.get('GOBLIN_GATEWAY_PORT', '8443')}"
        )
        key = os.environ.get("GOBLIN_API_KEY", "")
        if not key:
            key_file = home / "admin.key"
            if not key_file.exists():
                raise TaskCliError(f"no API key: set GOBLIN_API_KEY or start the suite ({key_file} is missing)")
            key = key_file.read_text().strip()
        ca = os.environ.get("GOBLIN_CA_FILE")
        ca_file = Path(ca) if ca else home / "tls" / "ca.pem"
        return cls(url.rstrip("/"), key, ca_file if ca_file.exists() else None)

    def client(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
        return httpx.Client(
            base_url=self.url, verify=verify, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )


def parse_args(items: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``k=v`` items as the goblin's arguments, each value typed by its JSON Schema property (integer,
    number, boolean, array of comma-separated items); anything else stays a string, and the executor
    names the field if it is wrong."""
    properties = schema.get("properties", {})
    args: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise TaskCliError(f"--arg {item!r}: expected NAME=VALUE")
        args[name] = _typed(value, properties.get(name, {}).get("type"))
    return args


def _typed(value: str, kind: Any) -> Any:
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean" and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if kind == "array":
            return [part for part in value.split(",") if part]
    except ValueError:
        pass
    return value


def _check(reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code >= 400:
        try:
            body = reply.json()
            detail = f"{body.get('error')}: {body.get('message')}"
        except ValueError:
            detail = reply.text[:300]
        raise TaskCliError(f"HTTP {reply.status_code} {detail}")
    return reply.json()


def exit_code(task: dict[str, Any]) -> int:
    """The task's own exit code; else 128+signal, 124 for a timeout, 130 for a cancel, 1 otherwise."""
    if task.get("exit_code") is not None:
        return int(task["exit_code"])
    if task.get("signal"):
        try:
            return 128 + signal.Signals[task["signal"]].value
        except KeyError:
            return FAILED_EXIT
    return {"timed_out": TIMED_OUT_EXIT, "cancelled": CANCELLED_EXIT}.get(task["status"], FAILED_EXIT)


def run(goblin: str, arg_items: list[str], *, dry_run: bool, timeout_s: int, console: Console) -> int:
    """Run ``goblin`` and follow it; returns the exit code the CLI exits with."""
    endpoint = Endpoint.local()
    out = Console()
    with endpoint.client() as client:
        goblins = {g["name"]: g for g in _check(client.get("/v1/goblins"))["data"]}
        if goblin not in goblins:
            raise TaskCliError(f"no goblin named {goblin!r}; there are: {', '.join(sorted(goblins))}")
        args = parse_args(arg_items, goblins[goblin]["args_schema"])
        body = {"goblin": goblin, "args": args, "dry_run": dry_run, "timeout_s": timeout_s}
        task = _check(client.post("/v1/tasks", json=body))
        if dry_run:
            out.print_json(json.dumps(task["plan"]))
            return 0
        console.print(f"[dim]task {task['id']} {task['status']}[/]")
        follow(client, task["id"], out, console)
        task = _check(client.get(f"/v1/tasks/{task['id']}"))
    colour = "green" if task["status"] == "succeeded" else "red"
    console.print(
        f"[{colour}]{task['status']}[/] {task.get('error') or ''} [dim]({task.get('duration_s') or 0:.2f} s)[/]"
    )
    return exit_code(task)


def follow(client: httpx.Client, task_id: str, out: Console, console: Console) -> None:
    """Print the task's events until its final status, reconnecting with Last-Event-ID when the
    stream breaks (a gateway or executor restart)."""
    last = 0
    for attempt in range(10):
        try:
            headers = {"Last-Event-ID": str(last)} if last else {}
            with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers, timeout=None) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    _check(reply)
                event: dict[str, str] = {}
                for line in reply.iter_lines():
                    if line:
                        field, _, value = line.partition(": ")
                        event[field] = value
                        continue
                    if "data" in event:
                        data = json.loads(event["data"])
                        last = int(event.get("id", last))
                        if event.get("event") == "stdout":
                            out.print(data["data"], markup=False, highlight=False)
                        elif event.get("event") == "stderr":
                            console.print(data["data"], markup=False, highlight=False, style="yellow")
                        elif event.get("event") == "status":
                            console.print(f"[dim]{data['data']}[/]")
                            if data["data"] in FINAL:
                                return
                    event = {}
            return
        except httpx.TransportError:
            time.sleep(min(0.5 * (attempt + 1), 3))
    raise TaskCliError("lost the event stream (the task goes on; see GET /v1/tasks/ID)")
