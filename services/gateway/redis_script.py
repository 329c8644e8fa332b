"""One Lua script in Redis, called over one pipelined connection with hiredis' parser: the rate limiter's
round trip at a sixth of redis-py's CPU (redis-py's command machinery cost about 0.4 ms of gateway CPU
per call on the shared machine, this about 0.06 ms: bench/RESULTS.md, "Gateway CPU profile").

Calls made at once are written back to back on the one connection and Redis answers them in order, so
replies are matched first in, first out. A call that gets no answer within ``timeout_s``, or a broken
connection, fails every call waiting on it and closes it (a late reply would be matched to the wrong
call); the next call connects again. URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
(TLS, the system's CAs) and ``unix://path[?db=N]``; :func:`supports` says whether a URL is one of these,
and the limiter uses redis-py for anything else.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class ScriptError(Exception):
    """Redis answered the script with an error."""


def supports(url: str) -> bool:
    """Whether :class:`RedisScript` can reach ``url`` (else use redis-py)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return set(parse_qs(parts.query)) <= {"db"}
    return parts.scheme in ("redis", "rediss") and not parts.query


def _command(*args: str | bytes | int | float) -> bytes:
    """RESP for one command; numbers as redis-py encodes them (``repr``)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else arg.encode() if isinstance(arg, str) else repr(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class RedisScript:
    """``await script(keys, args)``: EVALSHA of ``source``, loading it (EVAL) when Redis does not know it."""

    def __init__(self, url: str, source: str, *, timeout_s: float = 1.0) -> None:
        if not supports(url):
            raise ValueError(f"unsupported Redis URL for RedisScript: {urlsplit(url).scheme}://...")
        self.url = url
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[object]] = deque()
        self._connecting: asyncio.Lock | None = None

    async def __call__(self, keys: list[str], args: list[str | int | float]) -> object:
        reply = await self._call(_command("EVALSHA", self.sha, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await self._call(_command("EVAL", self.source, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError):
            raise ScriptError(str(reply))
        return reply

    async def _call(self, command: bytes) -> object:
        writer = self._writer if self._writer is not None else await self._connect()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        writer.write(command)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            self._drop(TimeoutError(f"Redis did not answer within {self.timeout_s:g} s"))
            raise

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return self._writer
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await self._open()
                parser = hiredis.Reader()
                for command in self._handshake():
                    writer.write(command)
                    reply = await self._read_one(reader, parser)
                    if isinstance(reply, hiredis.ReplyError):
                        writer.close()
                        raise ConnectionError(f"Redis refused the connection: {reply}")
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read_replies(reader, parser))
            return writer

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return await asyncio.open_unix_connection(unquote(parts.path))
        context = ssl.create_default_context() if parts.scheme == "rediss" else None
        return await asyncio.open_connection(parts.hostname or "localhost", parts.port or 6379, ssl=context)

    def _handshake(self) -> list[bytes]:
        parts = urlsplit(self.url)
        commands = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else "default"
            commands.append(_command("AUTH", user, unquote(parts.password)))
        if parts.scheme == "unix":
            db = parse_qs(parts.query).get("db", ["0"])[0]
        else:
            db = parts.path.strip("/") or "0"
        if db != "0":
            commands.append(_command("SELECT", db))
        return commands

    @staticmethod
    async def _read_one(reader: asyncio.StreamReader, parser: hiredis.Reader) -> object:
        while (reply := parser.gets()) is False:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            parser.feed(data)
        return reply

    async def _read_replies(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = self._pending.popleft()
                    if not future.done():
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken connection or an unreadable reply: every waiting call fails
            self._drop(exc if isinstance(exc, ConnectionError) else ConnectionError(str(exc)))

    def _drop(self, error: Exception) -> None:
        """Close the connection and fail every call waiting on it."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        """Close the connection (calls waiting on it fail)."""
        self._drop(ConnectionError("closed"))
