"""A forced tool call, read from the model's constrained text as it streams.

Under a tool grammar (:func:`.grammar.constraint_for`) the model writes
``{"name": "<tool>", "arguments": <arguments>}`` with no optional whitespace in the wrapper. The reader
turns that text into OpenAI's streamed tool-call pieces: first one delta with the call's id and name
(once the name is complete), then the arguments text in pieces as it comes, never the wrapper's final
``}``. Joined, the pieces are exactly the arguments the model wrote.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from services.common.chat_content import ToolCall, ToolCallDelta
from services.inference.engine.grammar import tool_call_prefix


def new_tool_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallReader:
    """Turns the text of one forced tool call into tool-call deltas (index 0)."""

    def __init__(self, tools: Sequence[str]) -> None:
        self._prefixes = {tool_call_prefix(name): name for name in tools}
        self._text = ""
        self._sent = 0  # how much of the text has gone out (prefix included, once the name is known)
        self.id = new_tool_call_id()
        self.name = ""

    def feed(self, text: str) -> list[ToolCallDelta]:
        """Take the model's next text; the deltas it completes."""
        self._text += text
        deltas = []
        if not self.name:
            for prefix, name in self._prefixes.items():
                if self._text.startswith(prefix):
                    self.name = name
                    self._sent = len(prefix)
                    deltas.append(ToolCallDelta(index=0, id=self.id, name=name))
                    break
            else:
                return deltas
        # The last character may be the wrapper's closing brace: it waits for the next text or the end.
        end = len(self._text) - 1
        if end > self._sent:
            deltas.append(ToolCallDelta(index=0, arguments=self._text[self._sent : end]))
            self._sent = end
        return deltas

    def finish(self) -> list[ToolCallDelta]:
        """The last deltas, once generation ended: the held-back character unless it closed the call."""
        if not self.name:
            return []  # cut before the name was complete: there is no call to speak of
        end = len(self._text) - 1 if self.complete else len(self._text)
        if end > self._sent:
            piece, self._sent = self._text[self._sent : end], end
            return [ToolCallDelta(index=0, arguments=piece)]
        return []

    @property
    def complete(self) -> bool:
        """Whether the text is a whole call (it was not cut by max_tokens)."""
        try:
            json.loads(self._text)
        except ValueError:
            return False
        return True

    @property
    def arguments(self) -> str:
        """The arguments text so far (without the wrapper's closing brace once complete)."""
        if not self.name:
            return ""
        start = len(tool_call_prefix(self.name))
        end = len(self._text) - 1 if self.complete else len(self._text)
        return self._text[start:end]

    def call(self) -> ToolCall | None:
        """The whole call, once the name is known."""
        return ToolCall(id=self.id, name=self.name, arguments=self.arguments) if self.name else None
