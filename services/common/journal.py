"""A local write-ahead journal for rows bound for Postgres, so an answered request's books survive a
SIGKILL of the process or a database that is away.

:class:`~services.common.batch.BatchWriter` appends each row here *before* the request is answered
(one ``write(2)`` of one JSON line to a file opened ``O_APPEND``: once it returns, the row is in the
kernel and survives the death of the process; it is not fsynced, so a power cut of the machine can
still take the last moments), then writes it to Postgres in the background and tells the journal
which rows are committed. Rows are numbered in append order and committed in that order, so the
journal keeps only a tail: segments whose rows are all committed are deleted.

Each process writes its own segments (``<name>.<pid>.<n>.jsonl``) and holds an exclusive ``flock`` on
the open one. At start, :meth:`Journal.orphans` finds the segments no live process holds (left by a
process that was killed, or that stopped while Postgres was away) so their rows can be written again;
writers insert with ``ON CONFLICT DO NOTHING`` on a row id, so a row that did reach Postgres before
the kill is not written twice.

Disk is bounded (``max_bytes`` over all of a name's segments): past it a row is not journaled. Nor is
it when the filesystem is full (``ENOSPC``): a row cut short by a full disk is taken back (the segment
is truncated to its last whole row, so the rows after it are not torn), the writer keeps the row in
memory and writes it to Postgres as usual, and journaling resumes by itself once there is space. Each
row not journaled is counted (``goblin_journal_rows_unjournaled_total``) and an episode is logged
once when it starts and once when it ends, never silently and never one line per row.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter

log = logging.getLogger(__name__)

UNJOURNALED = Counter(
    "goblin_journal_rows_unjournaled_total",
    "Rows not written to the local journal (still written to Postgres from memory), by journal and reason: "
    "disk_full (ENOSPC or quota), bound (the journal's own size bound), error (any other OS error).",
    ["journal", "reason"],
)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

SEGMENT_BYTES = 1 << 20  # a new segment after 1 MiB, so committed rows are deleted while busy
MAX_BYTES = 64 << 20  # per writer: a router has two, inside the chart's 256Mi GOBLIN_HOME emptyDir


# orjson for what json.dumps would refuse refuses too (then json.dumps says so as before): datetimes,
# dataclasses and subclasses of the built-in types are not turned into JSON silently.
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _finite(values: Any) -> bool:
    """No NaN or infinity in ``values`` (a row, a list, a dict's values): orjson would write them as null,
    json.dumps as NaN/Infinity. Plain loops and type checks: this runs on every row."""
    for value in values.values() if type(values) is dict else values:
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return False
        elif (kind is list or kind is tuple or kind is dict) and not _finite(value):
            return False
    return True


def encode_row(row: Sequence[Any]) -> bytes:
    """A row as one journal line: JSON, newline-terminated. orjson (a fraction of json.dumps' cost, and
    the router writes a line per answered request); json.dumps for what orjson writes differently or
    refuses (a non-finite float, an integer beyond 64 bits, a lone surrogate, a non-string key). Either
    reads back the same through :meth:`Journal.orphans`."""
    if _finite(row):
        try:
            return orjson.dumps(row if type(row) in (list, tuple) else list(row), option=_ORJSON_STRICT) + b"\n"
        except TypeError:
            pass
    return (json.dumps(list(row), separators=(",", ":")) + "\n").encode()


@dataclass
class _Segment:
    path: Path
    fd: int
    last_seq: int = 0  # the last row appended to it
    size: int = 0
    pinned: bool = False  # holds a row that was journaled but not queued: kept for the next start


class Journal:
    """Append-only segments of JSON rows under ``directory`` for the writer called ``name``."""

    def __init__(self, directory: Path, name: str, *, max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self.name = name
        self.max_bytes = max_bytes
        self._closed: list[_Segment] = []  # full segments, oldest first, some rows maybe uncommitted
        self._current: _Segment | None = None
        self._count = 0
        self._bytes = 0
        self.released = False  # a pinned segment was closed: orphans() now finds it in this process too
        self._failing: str | None = None  # the reason appends fail now (logged once per episode)

    # -- this process's segments ------------------------------------------------------------------
    def _open_segment(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._count += 1
        path = self.directory / f"{self.name}.{os.getpid()}.{self._count}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel however we end
        return _Segment(path, fd)

    def append(self, seq: int, row: Sequence[Any]) -> bool:
        """Journal row number ``seq`` (increasing). False when the disk bound, a full disk or another OS
        error stops it (counted and logged): the caller still has the row in memory."""
        line = encode_row(row)
        if self._bytes + len(line) > self.max_bytes:
            return self._refused("bound", f"its bound of {self.max_bytes} bytes is reached")
        try:
            if self._current is None or self._current.size >= SEGMENT_BYTES:
                self._rotate()
            segment = self._current
            assert segment is not None
            written = os.write(segment.fd, line)
            if written < len(line):
                # The filesystem ran out mid-row: take the part back, or the next row would be glued to
                # it and both unreadable at replay.
                os.ftruncate(segment.fd, segment.size)
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            reason = "disk_full" if exc.errno in _DISK_FULL else "error"
            return self._refused(reason, f"{exc.strerror or exc} in {self.directory}")
        segment.size += len(line)
        segment.last_seq = seq
        self._bytes += len(line)
        if self._failing is not None:
            log.warning("journal %s: journaling again (it had stopped: %s)", self.name, self._failing)
            self._failing = None
        return True

    def _refused(self, reason: str, detail: str) -> bool:
        UNJOURNALED.labels(self.name, reason).inc()
        if self._failing != reason:
            self._failing = reason
            log.error(
                "journal %s: rows are not journaled (%s: %s); they are still written to Postgres, but one "
                "answered while this lasts is lost if the process is killed before that. "
                "Free space under GOBLIN_HOME; journaling resumes by itself (goblin_journal_rows_unjournaled_total)",
                self.name,
                "no space left" if reason == "disk_full" else reason,
                detail,
            )
        return False

    def pin(self) -> None:
        """Keep the open segment (a row in it never reached the writer's queue): it is released for
        :meth:`orphans`, never deleted, once the rows around it are committed (see :meth:`release`)."""
        if self._current is not None:
            self._current.pinned = True

    def _rotate(self) -> None:
        # Open the new segment first: if that fails (a full disk), the open one stays where it was and
        # is not listed twice.
        segment = self._open_segment()
        if self._current is not None:
            self._closed.append(self._current)
        self._current = segment

    def committed(self, seq: int) -> None:
        """Every row up to ``seq`` is in Postgres: delete the segments holding only those."""
        while self._closed and self._closed[0].last_seq <= seq:
            segment = self._closed.pop(0)
            if not segment.pinned:
                self._remove(segment)
            else:
                os.close(segment.fd)  # unlocked: orphans() finds it
                self._bytes -= segment.size
                self.released = True
        current = self._current
        if current is not None and current.last_seq <= seq and current.size and not current.pinned:
            # Caught up: empty the open segment in place (O_APPEND writes go to the new end).
            os.ftruncate(current.fd, 0)
            self._bytes -= current.size
            current.size = 0

    @property
    def pinned(self) -> bool:
        """Whether a row journaled here never reached the writer's queue and is still held."""
        return any(s.pinned for s in self._closed) or bool(self._current and self._current.pinned)

    def release(self) -> None:
        """The writer has committed every row it queued: unlock the segments still held (they hold only
        rows that never reached its queue) so :meth:`orphans` finds them; appends go to a new segment."""
        for segment in [*self._closed, *([self._current] if self._current else [])]:
            os.close(segment.fd)
            self._bytes -= segment.size
        self._closed, self._current = [], None
        self.released = True

    def _remove(self, segment: _Segment) -> None:
        os.close(segment.fd)
        segment.path.unlink(missing_ok=True)
        self._bytes -= segment.size

    def close(self, *, keep: bool) -> None:
        """Close this process's segments; ``keep``: leave them for the next start (rows not all
        committed), else delete the ones not pinned."""
        for segment in [*self._closed, *([self._current] if self._current else [])]:
            if keep or segment.pinned:
                os.close(segment.fd)
            else:
                self._remove(segment)
        self._closed, self._current = [], None

    # -- what earlier processes left --------------------------------------------------------------
    def orphans(self) -> Iterator[tuple[Path, list[list[Any]]]]:
        """Each segment of ``name`` no live process holds, with its rows (a torn last line, from a
        crash mid-write, is skipped). The caller deletes a segment with :meth:`discard` once its rows
        are written."""
        self.released = False
        if not self.directory.is_dir():
            return
        own = {s.path for s in self._closed} | ({self._current.path} if self._current else set())
        for path in sorted(self.directory.glob(f"{self.name}.*.jsonl")):
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # another process replayed it first
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer's segment, or another process replaying it
                rows = []
                with os.fdopen(os.dup(fd), "rb") as f:
                    for number, raw in enumerate(f, 1):
                        try:
                            rows.append(json.loads(raw))
                        except ValueError:
                            log.warning("journal %s: skipped a torn line %d", path.name, number)
                yield path, rows
            finally:
                os.close(fd)

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)


def service_journal(home: Path, service: str, table: str) -> Journal:
    """The journal of ``service``'s writer for ``table``, under ``GOBLIN_HOME/journal/`` (on Kubernetes
    an emptyDir: it outlives a killed container, which the kubelet restarts in the same pod)."""
    return Journal(home / "journal", f"{service}-{table}")
