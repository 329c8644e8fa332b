"""``goblin top``: the admin page's KPIs live in the terminal, for an operator on the machine.

It reads the same JSON document the page polls (``GET /mcp/v1/admin/dashboard`` with
``Accept: application/json``) with the admin key ``goblin up`` wrote to ``GOBLIN_HOME/admin.key`` and
the suite's CA, like ``goblin tasks run`` (``GOBLIN_GATEWAY_URL``, ``GOBLIN_API_KEY`` and
``GOBLIN_CA_FILE`` point it elsewhere). ``--once`` prints one frame and exits.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from goblin_tools.tasks import Endpoint, TaskCliError

DASHBOARD = "/mcp/v1/admin/dashboard"
STYLES = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "dim", "info": "cyan"}


class TopError(TaskCliError):
    """The gateway refused or did not answer; the message says why."""


def fetch(client: httpx.Client) -> dict[str, Any]:
    """One KPI document; :class:`TopError` with the gateway's own message on a refusal."""
    try:
        reply = client.get(DASHBOARD, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TopError(f"the gateway at {client.base_url} did not answer: {type(exc).__name__}") from None
    if reply.status_code != 200:
        try:
            message = reply.json().get("message", reply.text)
        except ValueError:
            message = reply.text[:200]
        raise TopError(f"HTTP {reply.status_code}: {message}")
    return reply.json()


def format_value(value: float | None, unit: str) -> str:
    """A KPI's value as the page shows it."""
    if value is None:
        return "–"
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "usd":
        return f"${value:.4f}"
    if unit == "tokens/s":
        return f"{value:.1f}"
    return f"{value:g}"


def kpi_table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"Goblin KPIs ({doc['scope']}) · {doc['generated_at']}", expand=True)
    for column in ("KPI", "value", "status", "warning", "critical", "detail"):
        table.add_column(column, overflow="fold")
    for k in doc["kpis"]:
        style = STYLES.get(k["status"], "")
        sign = "<" if k.get("direction") == "below" else ">"
        limits = [f"{sign} {format_value(k[n], k['unit'])}" if n in k else "" for n in ("warning", "critical")]
        table.add_row(
            escape(k["label"]),
            Text(format_value(k["value"], k["unit"]), style=style),
            Text(k["status"], style=style),
            *limits,
            escape(k.get("detail", "")),
        )
    return table


def detail_tables(doc: dict[str, Any]) -> list[Table]:
    """Services, providers, budgets, inference and traffic: the page's panels as tables."""
    services = Table("service", "status", "latency", title="Services")
    for s in doc["services"]:
        latency = f"{s['latency_ms']:.1f} ms" if "latency_ms" in s else "–"
        services.add_row(
            s["name"], Text(s["status"], style="green" if s["status"] == "SERVING" else "bold red"), latency
        )
    providers = Table("provider", "configured", "circuit", "failures", title="Providers")
    for p in doc["providers"]:
        circuit_style = {"closed": "green", "open": "bold red"}.get(p["circuit"], "yellow")
        providers.add_row(
            escape(p["name"]),
            "yes" if p["configured"] else "no",
            Text(p["circuit"], style=circuit_style),
            str(p["consecutive_failures"]),
        )
    budgets = Table("tenant", "spent", "budget", "used", title="Budgets today")
    for t in doc["budget"]["tenants"]:
        used = "–" if t["used"] is None else f"{t['used'] * 100:.1f} %"
        budget = f"${t['budget_usd']:.2f}" if t["budget_usd"] else "none"
        budgets.add_row(escape(t["name"] or t["id"]), format_value(t["cost_usd"], "usd"), budget, used)
    traffic, inference = doc["traffic"], doc["inference"]
    totals = Table("requests", "5xx", "429", "chats", "queue", "capacity", "model", title="Traffic and inference")
    totals.add_row(
        str(traffic["requests"]),
        str(traffic["errors_5xx"]),
        str(traffic["rate_limited"]),
        str(traffic["chat_completions"]),
        str(inference["queue_length"]),
        str(inference["queue_capacity"]),
        "loaded" if inference["model_loaded"] else "not loaded",
    )
    return [services, providers, budgets, totals]


def frame(doc: dict[str, Any]) -> Group:
    """One screen: the KPIs, the panels, and any source that did not answer."""
    parts: list[Any] = [kpi_table(doc), *detail_tables(doc)]
    if doc.get("errors"):
        parts.append(Text("Not answering: " + "; ".join(doc["errors"]), style="yellow"))
    return Group(*parts)


def run(*, once: bool, interval_s: float, console: Console) -> None:
    """Print one frame (``once``) or refresh one every ``interval_s`` seconds until Ctrl-C."""
    endpoint = Endpoint.local()
    with endpoint.client() as client:
        if once:
            console.print(frame(fetch(client)))
            return
        with Live(frame(fetch(client)), console=console, screen=False, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval_s)
                    live.update(frame(fetch(client)), refresh=True)
            except KeyboardInterrupt:
                return
