"""Stop strings in streamed text."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Finds stop strings in streamed text without ever letting part of one out.

    Text that might be the beginning of a stop string is held back until the next tokens show whether
    it is; text before a stop string is released and everything from it on is dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""
        self.matched = False

    def feed(self, text: str) -> str:
        """Take new text; return what can be sent now (sets ``matched`` when a stop string completes)."""
        if self.matched:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cuts = [index for stop in self._stops if (index := buffer.find(stop)) >= 0]
        if cuts:
            self.matched = True
            self._held = ""
            return buffer[: min(cuts)]
        keep = self._partial_stop_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text, once generation has ended without completing a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched else held

    def _partial_stop_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that is the beginning of some stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
