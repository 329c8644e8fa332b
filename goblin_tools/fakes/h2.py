"""A provider that speaks only HTTP/2 over TLS (ALPN ``h2``, real h2 framing), for tests and benchmarks.

Every POST gets ``{"echo": <request body>}``, or two SSE events when it asks for ``text/event-stream``;
it records the ALPN protocol of each connection and the headers of each request.

In tests: ``asyncio.start_server(H2OnlyProvider().handle, ..., ssl=h2_only_context(cert, key))``. For
benchmarks, in its own process: ``python -m goblin_tools.fakes.h2 --port 8998 --certfile C --keyfile K``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import uvloop


class H2OnlyProvider:
    """Answers every POST on HTTP/2 only: the JSON ``{"echo": <request body>}``, or, when the request
    asks for ``text/event-stream``, two SSE events. Records what it saw."""

    def __init__(self) -> None:
        self.alpn: list[str | None] = []
        self.requests: list[dict[str, str]] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        headers: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytes] = {}
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
                    bodies[event.stream_id] = b""
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.requests.append(headers[event.stream_id])
                    self.answer(conn, event.stream_id, headers[event.stream_id], bodies[event.stream_id])
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    @staticmethod
    def answer(conn: h2.connection.H2Connection, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        if headers.get("accept") == "text/event-stream":
            payload = b"data: one\n\ndata: [DONE]\n\n"
            content_type = b"text/event-stream"
        else:
            payload = json.dumps({"echo": json.loads(body)}).encode()
            content_type = b"application/json"
        length = b"%d" % len(payload)
        response = [(b":status", b"200"), (b"content-type", content_type), (b"content-length", length)]
        conn.send_headers(stream_id, response)
        conn.send_data(stream_id, payload, end_stream=True)


def h2_only_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context that offers HTTP/2 and nothing else in ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    return context


async def serve(port: int, cert: Path, key: Path) -> None:
    server = await asyncio.start_server(H2OnlyProvider().handle, "127.0.0.1", port, ssl=h2_only_context(cert, key))
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="An HTTP/2-only TLS provider that echoes what it is sent.")
    parser.add_argument("--port", type=int, default=8998)
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.certfile, args.keyfile))


if __name__ == "__main__":
    main()
