"""Helpers for the gateway's HTTP/2 tests (no tests here): the gateway's own uvicorn configuration
served from a thread, and a raw HTTP/2 client that sends whatever frames it is told (the attacks an
honest client library refuses to send)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hpack
import uvicorn
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, SettingsFrame

from services.gateway.tls import ensure_dev_certificates, https_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@contextmanager
def serving(app: Any, tls_dir: Path, **overrides: Any) -> Iterator[tuple[uvicorn.Server, int, ssl.SSLContext]]:
    """``app`` served by the gateway's uvicorn configuration (real TLS with the dev certificate, HTTP/2
    and HTTP/1.1) on a free port in a thread; yields the server, its port and a client context."""
    ca, cert, key = ensure_dev_certificates(tls_dir)
    config = https_config(app, "127.0.0.1", 0, cert, key, overrides.pop("max_connections", None))
    for name, value in overrides.items():
        setattr(config, name, value)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, port, ssl.create_default_context(cafile=str(ca))
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class RawH2:
    """An HTTP/2 client over TLS speaking frame by frame (hyperframe + hpack, no state machine)."""

    def __init__(self, port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> None:
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.eof = False  # the server closed the connection
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def head(self, path: str = "/", method: str = "GET", extra: Iterable[tuple[str, str]] = ()) -> bytes:
        """An HPACK-encoded request head."""
        fields = [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path), *extra]
        return self.encoder.encode(fields, huffman=False)  # Huffman in pure Python: seconds for a big head

    def request(self, stream_id: int, path: str = "/", end_stream: bool = True) -> HeadersFrame:
        flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
        return HeadersFrame(stream_id, data=self.head(path), flags=flags)

    def send(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(frame.serialize() for frame in frames))

    def frames(self, timeout_s: float = 10) -> Iterator[Frame]:
        """The server's frames as they arrive, until it closes the connection or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            while len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                self.buffer = self.buffer[9 + length :]
                yield frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:  # reset, or TLS torn down
                self.eof = True
                return
            if not data:
                self.eof = True
                return
            self.buffer += data

    def goaway(self, timeout_s: float = 10) -> GoAwayFrame | None:
        """The GOAWAY the server sends (or None if it did not within ``timeout_s``)."""
        for frame in self.frames(timeout_s):
            if isinstance(frame, GoAwayFrame):
                return frame
        return None

    def closed_within(self, timeout_s: float) -> bool:
        """Whether the server closes the connection within ``timeout_s`` (frames before that are read)."""
        for _ in self.frames(timeout_s):
            pass
        return self.eof

    def close(self) -> None:
        self.sock.close()
