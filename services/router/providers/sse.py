"""Server-sent events read from a provider's answer: bytes in, events out, one decoder for every transport.

The decoder is synchronous and fed whatever the socket gave (:meth:`SseDecoder.feed`), so a stream read
straight from aiohttp (services.router.providers.http) costs one async iteration per network read rather
than a stack of async generators (bytes, text, lines, events) per line. The rules are the WHATWG
event-stream's: UTF-8 (undecodable bytes become U+FFFD), lines ended by CRLF, LF or CR (a CRLF split
across two reads is one line end), ``event:`` and multi-line ``data:`` fields, ``:`` comments, a blank
line ends an event; an event the stream ends in the middle of is still delivered (a provider that
omits the last blank line loses nothing).
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder:
    """Incremental event-stream decoder: :meth:`feed` each chunk of bytes, :meth:`close` at the end."""

    __slots__ = ("_cr", "_data", "_event", "_rest", "_text")

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._rest = ""  # the start of a line whose end has not arrived
        self._cr = False  # the last chunk ended in CR: a LF opening the next one ends no second line
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events ``chunk`` completes (none while an event is still arriving)."""
        return self.feed_lines(self._lines(self._text.decode(chunk)))

    def close(self) -> list[SseEvent]:
        """The stream ended: what is left (a last line without its end, an event without its blank line)."""
        lines = self._lines(self._text.decode(b"", True))
        if self._rest:
            lines.append(self._rest)
            self._rest = ""
        events = self.feed_lines(lines)
        if self._data:
            events.append(SseEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
        return events

    def _lines(self, text: str) -> list[str]:
        if not text:
            return []
        if self._cr:
            self._cr = False
            if text[0] == "\n":
                text = text[1:]
        ends_in_cr = text.endswith("\r")
        if ends_in_cr:
            text = text[:-1]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if ends_in_cr:
            self._cr = True
            text += "\n"
        if "\n" not in text:
            self._rest += text
            return []
        lines = text.split("\n")
        if self._rest:
            lines[0] = self._rest + lines[0]
        self._rest = lines.pop()
        return lines

    def feed_lines(self, lines: list[str]) -> list[SseEvent]:
        """The events ``lines`` (already split, without their ends) complete."""
        events: list[SseEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(SseEvent(self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return events


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """Server-sent events from a stream of lines already split (the same field rules as
    :class:`SseDecoder`)."""
    decoder = SseDecoder()
    async for line in lines:
        for event in decoder.feed_lines([line]):
            yield event
    for event in decoder.close():
        yield event
