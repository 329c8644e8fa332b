"""The ``goblin`` command for operators (typer + rich)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from goblin_tools.embedded import EmbeddedPostgres, EmbeddedStoreError
from services.common.logs import configure_logging
from services.common.settings import ConfigError, load_settings
from services.common.topology import BACKEND_SERVICES

app = typer.Typer(help="Goblin: self-hosted AI assistant platform.", no_args_is_help=True, add_completion=False)
# soft_wrap: a message is one line whatever the terminal width, so scripts and logs can grep it
console = Console(stderr=True, soft_wrap=True)
ROOT = Path(__file__).resolve().parents[1]  # the checkout or installed tree holding services/


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]goblin:[/] {escape(message)}")
    return typer.Exit(code)


@app.command()
def up() -> None:
    """Start the whole suite (embedded PostgreSQL/Redis/Chroma unless URLs are set) until Ctrl-C."""
    from goblin_tools.supervisor import SuiteSettings, Supervisor
    from services.common.process import AlreadyRunning

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
        table.add_row("Metrics", f"https://127.0.0.1:{s.gateway_port}/metrics and each service's below")
        for name in BACKEND_SERVICES:
            table.add_row(
                f"  {name}",
                f"gRPC 127.0.0.1:{getattr(s, f'{name}_port')}, "
                f"metrics http://127.0.0.1:{getattr(s, f'{name}_metrics_port')}/metrics",
            )
        title = "[green]Goblin is ready[/]" if ready else "[yellow]Goblin started, not ready yet[/]"
        console.print(Panel(table, title=title, subtitle="Ctrl-C to stop"))

    try:
        code = asyncio.run(Supervisor(settings, on_ready=announce).run())
    except AlreadyRunning as exc:
        raise _fail(str(exc), code=1) from None
    except EmbeddedStoreError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def _database(database_url: str | None) -> tuple[EmbeddedPostgres | None, str]:
    """The database a command works on: ``database_url`` (``--database-url`` or DATABASE_URL), else the
    file DATABASE_URL_FILE names (how Kubernetes and systemd hand over secrets), else, outside production,
    the embedded database of GOBLIN_HOME (started if need be; the caller stops it). Bad input: one line
    and exit status 2."""
    from services.common.settings import Environment, default_home, secret_file

    try:
        database_url = database_url or secret_file("DATABASE_URL")
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if database_url:
        return None, database_url
    if os.environ.get("GOBLIN_ENV", "").lower() == Environment.production.value:
        raise _fail("DATABASE_URL (or DATABASE_URL_FILE) is required in production: no embedded database there")
    try:
        embedded = EmbeddedPostgres(default_home() / "pg")
    except EmbeddedStoreError as exc:
        raise _fail(str(exc)) from None
    return embedded, embedded.create_database("goblin")


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(envvar="DATABASE_URL", help="PostgreSQL URL")] = None,
) -> None:
    """Apply pending migrations to every service's schema (safe to run twice, and from two processes
    at once). A database of the single-schema layout moves to the service schemas, every row kept."""
    from services.common import db

    embedded, database_url = _database(database_url)
    try:
        applied = asyncio.run(db.migrate_all(database_url))
        versions = {schema: asyncio.run(db.schema_version(database_url, s)) for schema, s in db.SETS.items()}
    except (db.MigrationError, OSError) as exc:
        raise _fail(f"migration failed: {exc}", code=1) from None
    finally:
        if embedded is not None:
            embedded.stop()
    for schema, done in applied.items():
        if done:
            listed = ", ".join(f"{v:04d}" for v in done)
            console.print(f"{schema}: applied {listed}; schema at version {versions[schema]:04d}")
        else:
            console.print(f"{schema}: up to date at version {versions[schema]:04d}")


db_app = typer.Typer(help="The database: roles and grants.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("roles")
def db_roles(
    database_url: Annotated[
        str | None,
        typer.Option(envvar="DATABASE_URL", help="an administrator's PostgreSQL URL (default: the embedded database)"),
    ] = None,
) -> None:
    """Migrate, then create a login role per service (goblin_auth, goblin_router, goblin_executor,
    goblin_rag, goblin_gateway), each owning only its schema and allowed to append audit rows.
    Idempotent. A role's password is the one in GOBLIN_<SERVICE>_DATABASE_URL (or its _FILE) when that
    URL names the role; otherwise it is left as it is."""
    import asyncpg

    from goblin_tools.supervisor import SuiteSettings
    from services.common import db

    try:
        settings = load_settings(SuiteSettings)
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}") from None
    passwords = {}
    for service, role in db.SERVICE_ROLES.items():
        url = urlsplit(getattr(settings, f"{service}_database_url") or "")
        if url.username == role and url.password:
            passwords[service] = unquote(url.password)
    embedded, database_url = _database(database_url)
    try:
        asyncio.run(db.provision_roles(database_url, passwords))
    except (db.MigrationError, OSError, asyncpg.PostgresError) as exc:
        raise _fail(f"could not provision the roles: {exc}", code=1) from None
    finally:
        if embedded is not None:
            embedded.stop()
    for service, role in db.SERVICE_ROLES.items():
        owns = f"owns schema {service}" if service in db.SETS else "owns no schema"
        password = "password set" if service in passwords else "password unchanged"
        console.print(f"{role}: {owns}, appends audit rows; {password}")


@app.command()
def doctor() -> None:
    """Check every dependency and print what is reachable."""
    from goblin_tools.doctor import run_checks

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


# -- accounts and keys, straight at the database (the auth service need not be running) -----------
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (create) and the token-signing keys (rotate).", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")

DatabaseUrlOption = Annotated[
    str | None, typer.Option(envvar="DATABASE_URL", help="PostgreSQL URL (default: the embedded database)")
]
T = TypeVar("T")


def _with_auth(database_url: str | None, action: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``action(repository, settings)`` against the database, migrated first; domain errors (and
    a key-encryption key that does not open the stored keys) become one line and exit status 1."""
    from services.auth.config import AuthPolicySettings
    from services.auth.keyring import SealError
    from services.auth.repository import AuthRepository
    from services.common.errors import GoblinError
    from services.common.stores import PostgresStore

    try:
        settings = load_settings(AuthPolicySettings)
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}") from None
    embedded, database_url = _database(database_url)

    async def run() -> T:
        store = PostgresStore(database_url, schema="auth", max_size=2)
        await store.start()
        try:
            return await action(AuthRepository(store), settings)
        finally:
            await store.stop()

    try:
        return asyncio.run(run())
    except GoblinError as exc:
        raise _fail(exc.message, code=1) from None
    except SealError as exc:
        raise _fail(str(exc), code=1) from None
    finally:
        if embedded is not None:
            embedded.stop()


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="the sign-in email")],
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    tenant: Annotated[str, typer.Option(help="the tenant's id")] = "default",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="no password: passkeys and API keys only")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user (the password is prompted for unless --password-stdin or --no-password)."""
    from services.auth.accounts import Accounts
    from services.auth.server import make_passwords

    if no_password:
        password = None
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)

    async def create(repository: Any, settings: Any) -> Any:
        accounts = Accounts(repository, make_passwords(settings))
        return await accounts.create_user(email=email, password=password, role=role, tenant_id=tenant, by="cli")

    user = _with_auth(database_url, create)
    console.print(f"created {user.role} [bold]{user.email}[/] in tenant {user.tenant_id}")
    print(user.id)


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="the owner's email")],
    name: Annotated[str, typer.Option(help="what the key is for")] = "cli",
    scope: Annotated[list[str] | None, typer.Option("--scope", help="repeat for several; '*' = all")] = None,
    expires_days: Annotated[int, typer.Option(help="0 = never expires", min=0)] = 0,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create an API key and print it, once, on stdout (it is stored hashed)."""
    from datetime import UTC, datetime, timedelta

    from services.auth.accounts import Accounts, normalise_email
    from services.auth.server import make_passwords
    from services.common.errors import NotFound

    async def create(repository: Any, settings: Any) -> Any:
        owner = await repository.find_user_by_email(normalise_email(user))
        if owner is None or not owner.is_active:
            raise NotFound(f"no active user {user!r}")
        expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
        return await Accounts(repository, make_passwords(settings)).issue_api_key(
            user=owner, name=name, scopes=scope or ["chat"], expires_at=expires_at, tokens_per_day=0, by="cli"
        )

    created = _with_auth(database_url, create)
    key = created.key
    console.print(f"API key {key.prefix} for {user} with scopes {', '.join(key.scopes)}; it is shown only now")
    print(created.secret)


@keys_app.command("rotate")
def keys_rotate(database_url: DatabaseUrlOption = None) -> None:
    """Rotate the token-signing keys: the standby key starts signing, the current one retires (its
    tokens stay valid until they expire), a new standby is published. Running services pick it up
    within GOBLIN_SIGNING_KEY_REFRESH_S."""
    from services.auth.repository import AuditEvent
    from services.auth.server import make_keyring

    async def rotate(repository: Any, settings: Any) -> Any:
        keyring = make_keyring(settings, repository)
        # Opens the current key first: a new standby sealed with another key-encryption key than the
        # services use would be unusable once it is promoted.
        await keyring.ensure()
        return await keyring.rotate(AuditEvent("signing_keys_rotated", details={"by": "cli"}))

    rotation = _with_auth(database_url, rotate)
    table = Table.grid(padding=(0, 2))
    table.add_row("retired", rotation.retired_kid or "-")
    table.add_row("current", rotation.current_kid)
    table.add_row("standby", rotation.standby_kid)
    console.print(Panel(table, title="signing keys rotated"))


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or directories (txt, md, html, pdf)")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="the collection (created if missing)")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="descend into subdirectories")] = False,
    server: Annotated[
        str | None, typer.Option(envvar="GOBLIN_SERVER", help="the gateway (default: the local suite)")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="GOBLIN_API_KEY", help="a key with the rag and rag:write scopes (default: the admin key)"),
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="the CA to trust (default: the local suite's, if present)")] = None,
) -> None:
    """Upload documents into a collection through the HTTPS API: a progress bar, a summary, and
    resumable (what the server accepted is remembered; a re-run uploads only new or changed files)."""
    import httpx

    from goblin_tools.ingest import IngestState, collect_files, ensure_collection, print_summary, state_path
    from goblin_tools.ingest import ingest as run_ingest
    from services.common.settings import GoblinSettings

    home = load_settings(GoblinSettings).goblin_home
    server = (server or f"https://127.0.0.1:{os.environ.get('GOBLIN_GATEWAY_PORT', '8443')}").rstrip("/")
    if api_key is None:
        try:
            api_key = (home / "admin.key").read_text().strip()
        except OSError:
            raise _fail(f"no --api-key and no admin key at {home / 'admin.key'}") from None
    verify: bool | str = True
    ca_file = ca or (home / "tls" / "ca.pem")
    if ca is not None or ca_file.exists():
        verify = str(ca_file)
    files, problems = collect_files(paths, recursive)
    if not files and not problems:
        raise _fail("no supported files found (txt, md, html, pdf); directories need --recursive for subfolders")
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(
        base_url=server, headers=headers, verify=verify, timeout=httpx.Timeout(660, connect=10)
    ) as client:
        try:
            ensure_collection(client, collection)
        except (RuntimeError, httpx.HTTPError) as exc:
            raise _fail(str(exc), code=1) from None
        summary = run_ingest(client, files, collection, IngestState(state_path(home, server, collection)), console)
    summary.failed.extend(problems)
    print_summary(console, summary)
    raise typer.Exit(1 if summary.failed else 0)


def _locations() -> Any:
    from goblin_tools.backup import Locations
    from goblin_tools.supervisor import SuiteSettings

    try:
        return Locations.from_settings(load_settings(SuiteSettings))
    except ConfigError as exc:
        raise _fail(f"configuration error: {exc}") from None


@app.command("backup")
def backup_command(
    directory: Annotated[Path, typer.Argument(help="a new (or empty) directory to write the backup into")],
) -> None:
    """Back up PostgreSQL, Redis, Chroma and the keyword index, consistent while the suite runs, with a
    manifest.json of versions and sha256 of every file (and of the model files, which are not copied)."""
    from goblin_tools.backup import MANIFEST, backup
    from goblin_tools.backup_stores import BackupError

    try:
        manifest = backup(directory, _locations())
    except BackupError as exc:
        raise _fail(str(exc), code=1) from None
    collections = manifest["chroma"]["collections"]
    console.print(
        f"backed up into {directory}: database (schemas {manifest['postgres']['schema_versions']}), "
        f"{manifest['redis']['keys']} Redis keys, {len(collections)} Chroma collections "
        f"({sum(collections.values())} records), {manifest['keyword_index']['files']} keyword-index files, "
        f"{len(manifest['models'])} model checksums; see {directory / MANIFEST}"
    )


@app.command("restore")
def restore_command(
    directory: Annotated[Path, typer.Argument(help="a directory written by `goblin backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask: the suite's current data is replaced")] = False,
) -> None:
    """Restore a backup into the stopped suite, replacing its data. The whole backup is checked against
    its manifest first: a damaged or altered file refuses the restore and nothing changes."""
    from goblin_tools.backup import restore, verify_backup
    from goblin_tools.backup_stores import BackupError

    locations = _locations()
    try:
        manifest = verify_backup(directory)
        if not yes:
            typer.confirm(
                f"Replace every store of GOBLIN_HOME={locations.home} with the backup of {manifest['created_at']}?",
                abort=True,
                err=True,
            )
        summary = restore(directory, locations)
    except BackupError as exc:
        raise _fail(str(exc), code=1) from None
    console.print(
        f"restored {directory}: database ({summary['postgres']}), {summary['redis_keys']} Redis keys, "
        f"Chroma {summary['chroma']}, {summary['keyword_files']} keyword-index files"
    )
    for check in summary["models"]:
        colour = "green" if check.ok else "yellow"
        console.print(f"model {check.role} [{colour}]{check.detail}[/]: {check.path}")


models_app = typer.Typer(help="The local model files.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("verify")
def models_verify(
    directory: Annotated[
        Path | None, typer.Argument(help="a backup directory (or its manifest.json); none: print the current ones")
    ] = None,
) -> None:
    """Check the model files on this machine against a backup's checksums (exit 1 on any difference);
    without a backup, print the current files' sha256."""
    import json

    from goblin_tools.models import model_manifest, verify_models

    if directory is None:
        try:
            entries = model_manifest()
        except (FileNotFoundError, ConfigError) as exc:
            raise _fail(str(exc), code=1) from None
        for entry in entries:
            print(f"{entry['sha256']}  {entry['path']}  ({entry['role']}, {entry['size']} bytes)")
        return
    manifest_path = directory / "manifest.json" if directory.is_dir() else directory
    try:
        entries = json.loads(manifest_path.read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(f"{manifest_path}: no model checksums ({exc})", code=1) from None
    failed = False
    for check in verify_models(entries):
        colour = "green" if check.ok else "red"
        console.print(f"{check.role}: [{colour}]{check.detail}[/] {check.path}")
        failed |= not check.ok
    raise typer.Exit(1 if failed else 0)


@app.command("install-systemd")
def install_systemd(
    dest: Annotated[Path, typer.Option(help="where the unit files go")] = Path("/etc/systemd/system"),
    python: Annotated[Path, typer.Option(help="the interpreter of Goblin's virtualenv")] = Path(sys.executable),
    app_dir: Annotated[
        Path, typer.Option(help="the directory holding the services/ package (the units' working directory)")
    ] = ROOT,
    home: Annotated[Path, typer.Option(help="GOBLIN_HOME: the only directory the services may write")] = Path(
        "/var/lib/goblin"
    ),
    config_dir: Annotated[Path, typer.Option(help="holds goblin.env and <service>.env (root, 0600)")] = Path(
        "/etc/goblin"
    ),
    user: Annotated[str, typer.Option(help="the account the services run as")] = "goblin",
    inference_memory_max: Annotated[str, typer.Option(help="systemd MemoryMax= of inference")] = "8G",
    inference_cpu_quota: Annotated[str, typer.Option(help="systemd CPUQuota= of inference")] = "300%",
) -> None:
    """Write the systemd units (one per service and goblin.target) for this installation's paths."""
    from goblin_tools.systemd import Layout, write_units

    layout = Layout(
        python=python.absolute(),
        app_dir=app_dir.absolute(),
        home=home.absolute(),
        config_dir=config_dir.absolute(),
        user=user,
        group=user,
        inference_memory_max=inference_memory_max,
        inference_cpu_quota=inference_cpu_quota,
    )
    try:
        written = write_units(dest, layout)
    except OSError as exc:
        raise _fail(f"cannot write the units into {dest}: {exc.strerror}", code=1) from None
    for path in written:
        print(path)
    console.print(
        f"wrote {len(written)} units; next: [bold]systemctl daemon-reload && systemctl enable --now goblin.target[/] "
        "(see docs/operations.md)"
    )


def main() -> None:
    app()


# -- tasks, through the gateway's HTTPS API ------------------------------------------------------------
tasks_app = typer.Typer(help="Tasks: run goblins on the executor.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("run")
def tasks_run(
    goblin: Annotated[str, typer.Argument(help="the goblin's name (GET /v1/goblins)")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="an argument as NAME=VALUE (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would run; run nothing")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="seconds, shorter than the goblin's own")] = 0,
) -> None:
    """Run GOBLIN through the local gateway (admin key, suite CA) and follow its output live; exits with
    the task's exit code."""
    from goblin_tools.tasks import TaskCliError, run

    try:
        code = run(goblin, arg or [], dry_run=dry_run, timeout_s=timeout, console=console)
    except TaskCliError as exc:
        raise _fail(str(exc), 1) from None
    raise typer.Exit(code)


@app.command("top")
def top(
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    interval: Annotated[float, typer.Option("--interval", min=1.0, help="seconds between refreshes")] = 5.0,
) -> None:
    """The admin KPIs live (the JSON of /mcp/v1/admin/dashboard, with the admin key of GOBLIN_HOME)."""
    from goblin_tools.tasks import TaskCliError
    from goblin_tools.top import run

    try:
        # The frame is the command's output (stdout, so `goblin top --once > file` works); refusals go to stderr.
        run(once=once, interval_s=interval, console=Console())
    except TaskCliError as exc:
        raise _fail(str(exc), 1) from None


if __name__ == "__main__":
    sys.exit(main())
