"""A task's pipes on the executor's event loop, each descriptor with one owner that closes it once.

uvloop's ``connect_read_pipe`` and ``connect_write_pipe`` take a file object and give its descriptor to
libuv: libuv closes the number when the transport closes, then uvloop closes the file object, which
closes the same number again (MagicStack/uvloop#763; asyncio's loop closes only the file object). A
second close is not harmless: the executor's other threads (the task directory's removal in
``asyncio.to_thread``, gRPC's) open descriptors all the time, Linux hands out the lowest free number,
and the stray close shuts theirs (``shutil.rmtree`` failing with EBADF, or worse, a socket lost).

Here the loop only watches a descriptor (``add_reader`` / ``add_writer``, which own nothing), on
uvloop and asyncio alike; the descriptor belongs to the transport, which closes it exactly once: at its
end (end of file, all written, an error) or when its owner closes it, whichever comes first.
"""

from __future__ import annotations

import asyncio
import os

READ_SIZE = 65536


class PipeReader(asyncio.ReadTransport):
    """The read end of a pipe as a transport for ``protocol``; owns ``fd`` from construction on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._paused = False
        try:
            os.set_blocking(fd, False)
            protocol.connection_made(self)
            loop.add_reader(fd, self._read_ready)
        except BaseException:
            self._fd = -1
            os.close(fd)
            raise

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if data:
            self._protocol.data_received(data)
        else:
            self._protocol.eof_received()
            self._end(None)

    def pause_reading(self) -> None:
        if self._fd >= 0 and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._fd >= 0 and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._fd >= 0 and not self._paused

    def is_closing(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Stop reading and close the descriptor (nothing when it is closed already)."""
        if self._fd >= 0:
            self._end(None)

    def _end(self, exc: Exception | None) -> None:
        fd, self._fd = self._fd, -1
        if not self._paused and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)
        if not self._loop.is_closed():
            self._loop.call_soon(self._protocol.connection_lost, exc)

    def __del__(self) -> None:
        # Unreachable while the loop watches it (the loop holds its callback): only a transport whose
        # loop is gone gets here still open. Its one owner closes it, once.
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def open_reader(loop: asyncio.AbstractEventLoop, fd: int) -> tuple[asyncio.StreamReader, PipeReader]:
    """A stream reader on the pipe ``fd``, and its transport, which owns ``fd`` from now on (also when
    this fails): it closes it at the end of file, or when closed first."""
    try:
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
    except BaseException:
        os.close(fd)
        raise
    return reader, PipeReader(loop, fd, protocol)


class PipeFeeder:
    """Writes ``data`` to the pipe ``fd``, then closes it; owns ``fd`` from construction on. A reader that
    goes away first (the task exits, or closes its stdin) loses what it did not read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self._loop = loop
        self._fd = fd
        self._data = memoryview(data)
        self._watching = False
        try:
            os.set_blocking(fd, False)
        except BaseException:
            self.close()
            raise
        self._write_ready()

    @property
    def done(self) -> bool:
        """Everything written (or the reader gone), and the descriptor closed."""
        return self._fd < 0

    def _write_ready(self) -> None:
        while self._data and self._fd >= 0:
            try:
                written = os.write(self._fd, self._data)
            except (BlockingIOError, InterruptedError):
                if not self._watching:
                    self._watching = True
                    self._loop.add_writer(self._fd, self._write_ready)
                return
            except OSError:  # EPIPE: nobody reads any more
                break
            self._data = self._data[written:]
        self.close()

    def close(self) -> None:
        """Stop writing and close the descriptor (nothing when it is closed already)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._data = memoryview(b"")
        if self._watching and not self._loop.is_closed():
            self._loop.remove_writer(fd)
        os.close(fd)

    def __del__(self) -> None:
        if self._fd >= 0:  # the loop is gone with it still watching: closed here, once
            fd, self._fd = self._fd, -1
            os.close(fd)


def feed(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> PipeFeeder:
    """Write ``data`` to the pipe ``fd`` and close it; the loop writes what the pipe does not take at
    once in the background. The feeder owns ``fd`` from now on (also when this fails)."""
    return PipeFeeder(loop, fd, data)
