"""Every descriptor of a task's pipes has one owner that closes it once (services/executor/pipes.py).

A second close of a number is not harmless: the executor's other threads (the task directory's rmtree
in asyncio.to_thread, gRPC's) open descriptors all the time, and Linux hands out the lowest free
number, so a stray close shuts one of theirs (the EBADF of shutil.rmtree in a loaded test run). uvloop's
connect_read_pipe / connect_write_pipe closed each pipe twice, once in libuv and once through the file
object they were given (MagicStack/uvloop#763). Checked on both event loops the executor may run."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from services.executor import pipes
from tests.unit.executor.fds import Closes, closes, run  # noqa: F401 (fixtures)


def is_closed(fd: int, inode: int) -> bool:
    """Whether descriptor ``fd`` no longer refers to the pipe of ``inode`` (closed, or reused since)."""
    try:
        return os.fstat(fd).st_ino != inode
    except OSError:
        return True


def test_a_reader_read_to_its_end_closes_its_descriptor_once(run: Callable, closes: Closes) -> None:  # noqa: F811
    read, write = os.pipe()
    inode = os.fstat(read).st_ino

    async def main() -> bytes:
        reader, transport = pipes.open_reader(asyncio.get_running_loop(), read)
        os.write(write, b"hello")
        os.close(write)
        data = await reader.read()
        await asyncio.sleep(0.05)  # the transport's end, and anything it schedules
        transport.close()  # the owner's close after the end of file: nothing more
        return data

    assert run(main) == b"hello"
    assert is_closed(read, inode)
    assert closes.already_closed == []
    assert closes.numbers.count(read) == 1


def test_a_reader_closed_before_its_end_closes_its_descriptor_once(run: Callable, closes: Closes) -> None:  # noqa: F811
    read, write = os.pipe()
    inode = os.fstat(read).st_ino

    async def main() -> None:
        reader, transport = pipes.open_reader(asyncio.get_running_loop(), read)
        os.write(write, b"partial")
        assert await reader.read(7) == b"partial"
        transport.close()  # the task's output abandoned (a pump cancelled): its owner closes it
        transport.close()
        await asyncio.sleep(0.05)

    run(main)
    os.close(write)
    assert is_closed(read, inode)
    assert closes.already_closed == []
    assert closes.numbers.count(read) == 1


def test_a_reader_pauses_with_a_full_buffer_and_reads_everything(run: Callable, closes: Closes) -> None:  # noqa: F811
    read, write = os.pipe()
    size = 1 << 20

    async def main() -> int:
        reader, _ = pipes.open_reader(asyncio.get_running_loop(), read)
        feeding = pipes.feed(asyncio.get_running_loop(), write, b"x" * size)
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total < size // 2:
                await asyncio.sleep(0.001)  # a slow consumer: the reader's buffer fills, reading pauses
        assert feeding.done
        return total

    assert run(main) == size
    assert closes.already_closed == []
    assert closes.numbers.count(read) == 1 and closes.numbers.count(write) == 1


def test_stdin_is_written_then_its_descriptor_closed_once(run: Callable, closes: Closes) -> None:  # noqa: F811
    read, write = os.pipe()
    inode = os.fstat(write).st_ino

    async def main() -> bytes:
        pipes.feed(asyncio.get_running_loop(), write, b"stdin data")
        await asyncio.sleep(0.05)
        return os.read(read, 100)

    assert run(main) == b"stdin data"
    assert os.read(read, 100) == b""  # its end of file: the writer closed
    os.close(read)
    assert is_closed(write, inode)
    assert closes.already_closed == []
    assert closes.numbers.count(write) == 1


def test_stdin_a_task_never_reads_is_closed_once(run: Callable, closes: Closes) -> None:  # noqa: F811
    read, write = os.pipe()

    async def main() -> None:
        feeding = pipes.feed(asyncio.get_running_loop(), write, b"y" * (1 << 20))  # more than a pipe holds
        await asyncio.sleep(0.02)
        assert not feeding.done
        os.close(read)  # the task exits without reading: what it did not read is lost
        await asyncio.sleep(0.05)
        assert feeding.done
        feeding.close()

    run(main)
    assert closes.already_closed == []
    assert closes.numbers.count(write) == 1
