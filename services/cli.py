"""The ``goblin`` command for operators (typer + rich)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from services.common.logs import configure_logging
from services.common.settings import ConfigError, load_settings

app = typer.Typer(
    help="Goblin: self-hosted AI assistant platform.", no_args_is_help=True, add_completion=False
)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]goblin:[/] {message}")
    return typer.Exit(code)


@app.command()
def up() -> None:
    """Start the whole suite (embedded PostgreSQL/Redis/Chroma unless URLs are set) until Ctrl-C."""
    from services.common.process import AlreadyRunning
    from services.supervisor import SuiteSettings, Supervisor

    try:
        settings = load_settings(SuiteSettings)
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}") from None
    configure_logging("supervisor", settings.log_level)

    def announce(supervisor: Supervisor, ready: bool) -> None:
        s = supervisor.settings
        table = Table.grid(padding=(0, 2))
        table.add_row("API", f"https://127.0.0.1:{s.gateway_port}  (OpenAI-compatible: /v1)")
        if not os.environ.get("GOBLIN_TLS_CERT_FILE"):
            table.add_row("CA certificate", str(s.goblin_home / "tls" / "ca.pem"))
        table.add_row("Admin API key", str(s.goblin_home / "admin.key"))
        table.add_row("Health", f"https://127.0.0.1:{s.gateway_port}/health/ready")
        table.add_row("Metrics", f"https://127.0.0.1:{s.gateway_port}/metrics and 127.0.0.1:9101..9105")
        for name in ("router", "inference", "rag", "auth", "executor"):
            table.add_row(f"  {name}", f"gRPC 127.0.0.1:{getattr(s, f'{name}_port')}")
        title = "[green]Goblin is ready[/]" if ready else "[yellow]Goblin started, not ready yet[/]"
        console.print(Panel(table, title=title, subtitle="Ctrl-C to stop"))

    try:
        code = asyncio.run(Supervisor(settings, on_ready=announce).run())
    except AlreadyRunning as exc:
        raise _fail(str(exc), code=1) from None
    raise typer.Exit(code)


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL", help="PostgreSQL URL")] = None,
) -> None:
    """Apply pending database migrations (safe to run twice, and from two processes at once)."""
    from services.common import db
    from services.common.embedded import EmbeddedPostgres
    from services.common.settings import default_home

    embedded = None
    if not database_url:
        embedded = EmbeddedPostgres(default_home() / "pg")
        database_url = embedded.create_database("goblin")
    try:
        applied = asyncio.run(db.migrate(database_url))
        version = asyncio.run(db.schema_version(database_url))
    except (db.MigrationError, OSError) as exc:
        raise _fail(f"migration failed: {exc}", code=1) from None
    finally:
        if embedded is not None:
            embedded.stop()
    if applied:
        console.print(f"applied {', '.join(f'{v:04d}' for v in applied)}; schema at version {version:04d}")
    else:
        console.print(f"schema up to date at version {version:04d}")


@app.command()
def doctor() -> None:
    """Check every dependency and print what is reachable."""
    from services.doctor import run_checks

    results = asyncio.run(run_checks())
    table = Table(title="goblin doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    failed = False
    for check in results:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}[check.status]
        table.add_row(check.name, f"[{colour}]{check.status}[/]", check.detail)
        failed |= check.status == "fail"
    Console().print(table)
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
