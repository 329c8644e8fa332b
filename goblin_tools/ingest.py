"""``goblin ingest``: upload files from disk into a collection through the gateway's HTTPS API.

Resumable: a small state file (under GOBLIN_HOME/ingest/) remembers each file's SHA-256 as the server
last accepted it, so a second run, or one after an interruption, uploads only what is new or changed.
The server would treat the same bytes as a no-op anyway (the content hash); the state file saves the
upload. Each file's document id derives from its absolute path, so a changed file replaces its
previous version instead of being added beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

SUPPORTED_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"}
CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
# Retried answers: the gateway's rate limit and a backend restarting.
RETRY_STATUSES = {429, 502, 503, 504}
ATTEMPTS = 4


@dataclass
class IngestSummary:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def collect_files(paths: Iterable[Path], recursive: bool) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to upload (named files as they are; a directory's supported files, its subdirectories'
    too with ``recursive``), and the paths that cannot be read."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            found.extend(sorted(p for p in walker if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES))
        else:
            problems.append((str(path), "no such file or directory"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, problems


def document_id(path: Path) -> str:
    """A stable id for a file: its name made safe, and a hash of its absolute path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._")[:80] or "file"
    return f"{stem}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"


class IngestState:
    """What the server accepted, by absolute path: ``{path: sha256}``, one file per server+collection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.accepted: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.accepted = {}

    def done(self, file: Path, sha256: str) -> bool:
        return self.accepted.get(str(file)) == sha256

    def record(self, file: Path, sha256: str) -> None:
        """Remember an accepted file, written at once (atomically) so an interruption loses nothing."""
        self.accepted[str(file)] = sha256
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.accepted, indent=0), encoding="utf-8")
        os.replace(temporary, self.path)


def state_path(home: Path, server: str, collection: str) -> Path:
    key = hashlib.sha256(f"{server}\n{collection}".encode()).hexdigest()[:16]
    return home / "ingest" / f"{key}.json"


def _error_text(reply: httpx.Response) -> str:
    try:
        body = reply.json()
        return f"{reply.status_code} {body.get('error', '')}: {body.get('message', '')}".strip()
    except ValueError:
        return f"HTTP {reply.status_code}"


def _request(client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    for attempt in range(ATTEMPTS):
        reply = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        if reply.status_code not in RETRY_STATUSES or attempt == ATTEMPTS - 1:
            return reply
        retry_after = reply.headers.get("retry-after", "")
        time.sleep(float(retry_after) if retry_after.isdigit() else 2**attempt)
    return reply


def ensure_collection(client: httpx.Client, collection: str) -> None:
    """Create the collection unless it exists; raises RuntimeError with the server's reason."""
    reply = _request(client, "GET", f"/v1/collections/{collection}")
    if reply.status_code == 200:
        return
    if reply.status_code != 404:
        raise RuntimeError(f"cannot read collection {collection!r}: {_error_text(reply)}")
    reply = _request(client, "POST", "/v1/collections", json={"name": collection})
    if reply.status_code not in (201, 409):
        raise RuntimeError(f"cannot create collection {collection!r}: {_error_text(reply)}")


def ingest(
    client: httpx.Client,
    files: list[Path],
    collection: str,
    state: IngestState,
    console: Console,
) -> IngestSummary:
    """Upload ``files`` into ``collection`` with a progress bar; what was accepted goes into ``state``."""
    summary = IngestSummary()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("ingesting", total=len(files))
        for file in files:
            progress.update(task, description=f"[cyan]{file.name[:40]}")
            try:
                content = file.read_bytes()
            except OSError as exc:
                summary.failed.append((str(file), exc.strerror or str(exc)))
                progress.advance(task)
                continue
            digest = hashlib.sha256(content).hexdigest()
            if state.done(file, digest):
                summary.unchanged.append(str(file))
                progress.advance(task)
                continue
            content_type = CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
            try:
                reply = _request(
                    client,
                    "POST",
                    f"/v1/collections/{collection}/documents",
                    files={"file": (file.name, content, content_type)},
                    data={"document_id": document_id(file), "metadata": json.dumps({"path": str(file)[:1024]})},
                )
            except httpx.HTTPError as exc:
                summary.failed.append((str(file), f"connection failed: {exc}"))
                progress.advance(task)
                continue
            if reply.status_code in (200, 201):
                state.record(file, digest)
                (summary.unchanged if reply.json().get("unchanged") else summary.added).append(str(file))
            else:
                summary.failed.append((str(file), _error_text(reply)))
            progress.advance(task)
    return summary


def print_summary(console: Console, summary: IngestSummary) -> None:
    table = Table(title="goblin ingest", show_header=True)
    table.add_column("result")
    table.add_column("files", justify="right")
    table.add_row("[green]added or replaced", str(len(summary.added)))
    table.add_row("unchanged", str(len(summary.unchanged)))
    table.add_row("[red]failed", str(len(summary.failed)))
    console.print(table)
    for path, reason in summary.failed:
        console.print(f"[red]failed[/] {path}: {reason}")
