"""The detectors of services/common/secrets.py: which patterns find which secret types, on RE2.

Each pattern is compiled by RE2 (``google-re2``), which searches in time linear in the text; the
module docstring of services.common.secrets says why every scan is linear as a whole and how the
patterns that needed look-arounds or lazy bodies were rewritten.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import re2
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.slack import SlackDetector

# google-re2's ``finditer`` builds a Python match object per match (about 7 us); the program's own
# ``Match`` returns the spans (about 2.5 us), which matters when a text holds thousands of candidates.
# ``_regexp`` and ``_re2`` are the package's internals: the version is pinned, and every scan uses them.
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
_ANCHOR_START = re2._re2.RE2.Anchor.ANCHOR_START


class LinearPattern:
    """A regular expression compiled by RE2 and searched over UTF-8 bytes: linear time per search."""

    __slots__ = ("pattern", "_program")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._program = re2.compile(pattern)._regexp

    def search(self, data: bytes, pos: int = 0, *, anchored: bool = False) -> list[tuple[int, int]] | None:
        """Spans of the whole match and of each group (``(-1, -1)`` if unset) at or after ``pos``."""
        spans = self._program.Match(_ANCHOR_START if anchored else _UNANCHORED, data, pos, len(data))
        return None if spans[0][0] < 0 else spans

    def finditer(self, data: bytes) -> Iterator[list[tuple[int, int]]]:
        """The spans of every non-overlapping match, left to right (as ``re.finditer``)."""
        pos, end = 0, len(data)
        while pos <= end:
            spans = self._program.Match(_UNANCHORED, data, pos, end)
            if spans[0][0] < 0:
                return
            yield spans
            pos = spans[0][1] if spans[0][1] > spans[0][0] else spans[0][1] + 1


@dataclass(frozen=True)
class Detector:
    """One secret type's pattern and the checks its matches must pass."""

    type: str
    pattern: LinearPattern
    group: int = 0  # which group is the secret (0: the whole match)
    confirm: Callable[[str], bool] | None = None
    # Lower-case substrings at least one of which any match contains: a detector whose keywords are
    # all absent is skipped without running its pattern.
    keywords: tuple[str, ...] = ()
    # The match must not touch a character of this set on either side (a word-boundary check done
    # after matching: RE2 has no look-behind, and a match's neighbours are one byte lookup away).
    isolated_from: str = ""

    def candidates(self, data: bytes) -> Iterator[tuple[int, int, int, int]]:
        """(match start, match end, secret start, secret end) of each match, left to right."""
        for spans in self.pattern.finditer(data):
            yield (*spans[0], *spans[self.group])


@dataclass(frozen=True)
class BlockDetector(Detector):
    """A block from an opening line (``pattern``) to the first ``closing`` line after it or, when none
    follows (a block cut off), the opening and the run of ``tail`` after it.

    One regex with a lazy body (``BEGIN[\\s\\S]*?END|BEGIN[...]*``) says the same, but each opening
    without an END reads the rest of the text, so a text of openings costs O(n^2) even in RE2. Here a
    footer search is reused by every opening before the footer it found, and an exhausted search
    settles the rest: each byte is read by at most one opening search and one footer search.
    """

    closing: LinearPattern = field(kw_only=True)
    tail: LinearPattern = field(kw_only=True)

    def candidates(self, data: bytes) -> Iterator[tuple[int, int, int, int]]:
        """Each block, left to right; the next opening is searched for after the block's end."""
        # footer: the first closing at or after the last search's start; exhausted: none was left.
        pos, footer, exhausted = 0, None, False
        while (opening := self.pattern.search(data, pos)) is not None:
            start, body = opening[0]
            if not exhausted and (footer is None or footer[0] < body):
                found = self.closing.search(data, body)
                footer, exhausted = (found[0], False) if found else (None, True)
            if footer is not None:
                end = footer[1]
            else:
                tail = self.tail.search(data, body, anchored=True)
                end = tail[0][1] if tail else body
            yield start, end, start, end
            pos = end


_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(candidate: str) -> bool:
    """The card number checksum; ``candidate`` is what the pattern matched: digits, spaces, dashes."""
    digits = candidate.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or digits.count(digits[0]) == len(digits):
        return False
    total = sum(map(int, digits[-1::-2])) + sum(_LUHN_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def _valid_ssn(candidate: str) -> bool:
    """Area 000, 666 and 900-999, group 00 and serial 0000 are never issued."""
    area, group, serial = candidate.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# Real JWT headers are well under this (alg, typ, kid; an x5c chain makes a few KiB). A longer first
# segment is judged by its start, so one candidate costs bounded work however long it is.
_JWT_HEADER_CHARS = 16 * 1024


# The shortest header with an "alg" or "typ" key, {"alg":0}, is 12 characters of base64.
_JWT_HEADER_MIN_CHARS = 12


def _is_jwt(candidate: str) -> bool:
    header = candidate.split(".", 1)[0]
    if "." not in candidate or len(header) < _JWT_HEADER_MIN_CHARS:
        return False
    if len(header) > _JWT_HEADER_CHARS:
        start = base64.urlsafe_b64decode(header[:_JWT_HEADER_CHARS])  # a multiple of 4: always decodes
        return start.lstrip().startswith(b"{") and (b'"alg"' in start or b'"typ"' in start)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def _from_detect_secrets(detector: type, index: int = 0) -> LinearPattern:
    """detect-secrets' pattern on RE2, its flags inlined (all it uses are RE2 syntax)."""
    pattern: re.Pattern[str] = detector.denylist[index]
    if pattern.flags & re.VERBOSE and re.search(r"[\s#]", pattern.pattern):
        raise ValueError(f"verbose pattern needs rewriting for RE2: {pattern.pattern}")
    return LinearPattern(("(?i)" if pattern.flags & re.IGNORECASE else "") + pattern.pattern)


def _run_not_starting_with(stop: str, prefix: str, min_length: int) -> str:
    """``((?!prefix)[^stop]{min_length,})`` without the look-ahead RE2 lacks: group 1 is a whole run of
    characters outside ``stop`` that leaves ``prefix`` at some character (or is a long enough piece of
    it), then comes a ``stop`` character (consumed) or the end."""
    expression = ""
    for depth in reversed(range(len(prefix))):
        literal = re.escape(prefix[depth])
        leave = f"[^{stop}{literal}][^{stop}]{{{max(min_length - depth - 1, 0)},}}"
        follow = f"|{literal}{expression}" if expression else ""  # the whole prefix is refused
        expression = f"(?:{leave}{follow})" + ("?" if depth >= min_length else "")
    return f"({expression})(?:[{stop}]|\\z)"


_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_PASSWORD_WORDS = (
    "password", "passwd", "pwd", "passphrase", "secret", "api_key", "api-key", "apikey",
    "access_token", "access-token", "auth_token", "auth-token",
)  # fmt: skip
_PEM_LABEL = "(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
_JWT_PART = "[A-Za-z0-9_=-]"

# Order matters where spans overlap: the more specific detector is listed first and wins.
DETECTORS: tuple[Detector, ...] = (
    BlockDetector(
        "private_key",
        LinearPattern("-----BEGIN " + _PEM_LABEL),
        keywords=("private key",),
        closing=LinearPattern("-----END " + _PEM_LABEL),
        tail=LinearPattern(r"[A-Za-z0-9+/=\s]*"),
    ),
    Detector(
        "anthropic_api_key",
        LinearPattern(r"sk-ant-[a-z]{2,10}\d{2}-[A-Za-z0-9_\-]{20,}"),
        keywords=("sk-ant-",),
        isolated_from=_WORD,
    ),
    Detector(
        "openai_api_key",
        LinearPattern(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{16,}"),
        keywords=("t3blbkfj",),
        isolated_from=_WORD,
    ),
    Detector(
        "openai_api_key",
        LinearPattern(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}"),
        keywords=("sk-proj-", "sk-svcacct-", "sk-admin-"),
        isolated_from=_WORD,
    ),
    Detector("aws_access_key", _from_detect_secrets(AWSKeyDetector, 0)),
    Detector("aws_secret_key", _from_detect_secrets(AWSKeyDetector, 1), group=1, keywords=("aws",)),
    Detector(
        "aws_secret_key",
        # "Not followed by a key character" as "followed by another character, or the end": that
        # character can never start a match (every match starts with "aws"), so nothing is skipped.
        LinearPattern(r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|\z)"),
        group=1,
        keywords=("aws",),
    ),
    Detector(
        "github_token",
        _from_detect_secrets(GitHubTokenDetector),
        keywords=("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    Detector("github_token", LinearPattern(r"github_pat_[A-Za-z0-9_]{60,}"), keywords=("github_pat_",)),
    Detector("slack_token", _from_detect_secrets(SlackDetector, 0), keywords=("xox",)),
    Detector("slack_webhook", _from_detect_secrets(SlackDetector, 1), keywords=("hooks.slack.com",)),
    Detector(
        "stripe_key",
        LinearPattern(r"(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{24,}"),
        keywords=("k_live_", "k_test_"),
        isolated_from=_WORD,
    ),
    Detector("google_api_key", LinearPattern(r"AIza[0-9A-Za-z_\-]{35}"), keywords=("aiza",), isolated_from=_WORD),
    Detector(
        "jwt",
        # detect-secrets' ``eyJ..\.[..]+\.?[..+/.]*?`` plus "not followed by a JWT character": the lazy
        # tail stops at the first character outside the JWT alphabet, i.e. it is a greedy run of it.
        LinearPattern(f"eyJ{_JWT_PART}+\\.{_JWT_PART}+(?:\\.{_JWT_PART}*)?"),
        confirm=_is_jwt,
        keywords=("eyj",),
    ),
    Detector("url_password", _from_detect_secrets(BasicAuthDetector), group=1, keywords=("://",)),
    Detector(
        "password_assignment",
        LinearPattern(
            # password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token as a trie:
            # no two branches start alike, so RE2 finds the secret's group in one pass (the OnePass
            # engine) instead of simulating an NFA over the match: 10 ms, not 200 ms, for a 1 MiB value.
            r"(?i)(?:p(?:ass(?:w(?:or)?d|phrase)|wd)|secret|a(?:pi[_-]?key|ccess[_-]?token|uth[_-]?token))"
            r"[\"']?\s*[:=]\s*[\"']?" + _run_not_starting_with(r"\s\"',;", "[REDACTED:", 4)
        ),
        group=1,
        keywords=_PASSWORD_WORDS,
    ),
    Detector("credit_card", LinearPattern(r"\d(?:[ -]?\d){12,18}"), confirm=_luhn, isolated_from="0123456789-"),
    Detector("us_ssn", LinearPattern(r"\d{3}-\d{2}-\d{4}"), confirm=_valid_ssn, isolated_from="0123456789-"),
)

DETECTOR_TYPES: tuple[str, ...] = tuple(dict.fromkeys(d.type for d in DETECTORS))
