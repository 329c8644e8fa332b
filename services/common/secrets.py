"""Secret scanning for prompts and documents: fast for every request, linear in time for any input.

detect-secrets' line scanner costs about 30 ms per 2 KB prompt here; Goblin reuses its detectors'
regular expressions (AWS, GitHub, Slack, Stripe, JWT, private keys, passwords in URLs) directly, adds
what they miss (current OpenAI and Anthropic keys, Google API keys, AWS secret keys, ``password=``
assignments, Luhn-checked card numbers, US SSNs) and scans the text once per pattern: tens of
microseconds for 2 KB.

Findings carry a type and a span, never the secret itself, so they can be logged and audited.

Why no input can stall a scan (issue 12). Python's ``re`` backtracks: crafted text (a long run of a
token prefix, a PEM header that never ends) made single patterns quadratic, and a 1 MiB body held the
gateway for minutes. The scan is now O(n) in the text's length, for three reasons:

1. Every pattern runs on RE2 (``google-re2``), an automaton that reads each byte of a search once.
   RE2 has no look-arounds, so the patterns that had one are rewritten without, into equivalents
   (tests/unit/common/test_secrets.py checks each against its backtracking original): the JWT's lazy
   tail and look-ahead become a greedy run; the AWS secret's "not followed by" consumes the character
   that follows; "not a redaction marker" is spelled out as an automaton over the marker's prefixes.
2. Iterating the matches of a pattern stays linear: each search resumes where the last match ended,
   and no pattern keeps its automaton running far past the end of its match. The one that did, a PEM
   block whose body ran lazily to the first END line (every unterminated header read the rest of the
   text), is found as header, then one forward search for the footer, shared by every header.
3. Work outside RE2 is linear too: overlapping findings are resolved by one merge per detector
   (previously quadratic in the number of findings), confirmations read bounded input, and a request
   examines at most ``max_candidates`` matches. Past that the scan stops and the guard blocks the
   request, whatever the policy: what was not examined cannot be redacted, and no honest prompt holds
   that many secret-shaped strings.

Patterns match UTF-8 bytes (encoded once per scan); ``\\d`` and ``\\s`` are ASCII there, as secrets
are. Measured: ``python -m bench scanner`` (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import re2
from pydantic import Field
from pydantic_settings import BaseSettings

from services.common.errors import InvalidArgument
from services.common.metrics import SECRETS_DETECTED
from services.common.secret_detectors import DETECTOR_TYPES, DETECTORS, Detector

__all__ = [
    "DETECTOR_TYPES", "DETECTORS", "Finding", "ScanLimitExceeded", "SecretGuard", "SecretScanner",
    "SecretsBlocked", "SecretsUnscannable",
]  # fmt: skip

log = logging.getLogger(__name__)

# Matches examined per request before the scan gives up (fail closed). Each costs 4 to 15 us here (the
# search, a boundary check, a confirmation): 10 000 keep the Python side of the worst request near 100
# ms on this shared machine, and a prompt with that many secret-shaped strings is a data dump.
MAX_CANDIDATES = 10_000
# Texts (total characters per request) up to this size are scanned on the event loop, larger ones in a
# worker thread. Measured (bench/RESULTS.md): 32 KiB of prose scans in about 0.2 ms; the hop to a thread
# costs about 0.05 ms. Below it the loop is held for under a quarter of the 2 KB prompt's 1 ms budget;
# above it the hop is the cheap part.
INLINE_SCAN_CHARS = 32 * 1024


class SecretPolicy(StrEnum):
    redact = "redact"
    block = "block"


class SecretScanningSettings(BaseSettings):
    """Mixed into the settings of every service with a detection point: one switch, one policy."""

    secret_scanning: bool = Field(True, alias="GOBLIN_SECRET_SCANNING")
    secret_policy: SecretPolicy = Field(SecretPolicy.redact, alias="GOBLIN_SECRET_POLICY")


class DetectionPoint(StrEnum):
    """Where a secret was caught; the ``location`` label of goblin_security_secrets_detected_total."""

    request_creation = "request_creation"
    worker_processing = "worker_processing"
    document_indexing = "document_indexing"


@dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int


def redaction_marker(secret_type: str) -> str:
    return f"[REDACTED:{secret_type}]"


class ScanLimitExceeded(Exception):
    """A request held more candidate matches than a scan examines (see ``MAX_CANDIDATES``)."""

    def __init__(self, secret_type: str) -> None:
        super().__init__(f"more than the allowed candidate matches; the last examined were {secret_type}")
        self.type = secret_type


class ScanBudget:
    """Candidate matches a request may still examine; one budget is shared by all of its texts."""

    __slots__ = ("left",)

    def __init__(self, candidates: int = MAX_CANDIDATES) -> None:
        self.left = candidates


def _without_overlaps(kept: list[tuple[int, int, str]], new: list[tuple[int, int, str]]) -> list:
    """``kept`` plus the spans of ``new`` that overlap none of it; both sorted and overlap-free. One
    pass over each (the previous all-pairs check was quadratic in the number of findings)."""
    if not kept or not new:
        return kept or new
    accepted, i = [], 0
    for span in new:
        while i < len(kept) and kept[i][1] <= span[0]:
            i += 1
        if i == len(kept) or kept[i][0] >= span[1]:
            accepted.append(span)
    return list(heapq.merge(kept, accepted))


def _char_offsets(text: str, data: bytes, spans: list[tuple[int, int, str]]) -> list[Finding]:
    """Byte spans of ``data`` (``text`` in UTF-8) as character spans of ``text``, in one pass."""
    if len(data) == len(text):  # ASCII: bytes and characters coincide
        return [Finding(kind, start, end) for start, end, kind in spans]
    findings, last_byte, last_char = [], 0, 0

    def char(offset: int) -> int:
        nonlocal last_byte, last_char
        last_char += len(data[last_byte:offset].decode("utf-8"))
        last_byte = offset
        return last_char

    for start, end, kind in spans:
        findings.append(Finding(kind, char(start), char(end)))
    return findings


class SecretScanner:
    """Finds secrets in text and replaces them with ``[REDACTED:<type>]``."""

    def __init__(self, detectors: tuple[Detector, ...] = DETECTORS, max_candidates: int = MAX_CANDIDATES) -> None:
        self.detectors = detectors
        self.max_candidates = max_candidates
        # Every detector's keywords in one RE2 pass over the text (a substring search per keyword read
        # a 1 MiB text some 50 times: more than all the patterns took). Case-insensitive, as before.
        self._keywords = re2.Set.SearchSet()
        self._gated: list[int] = []  # keyword pattern index -> detector index
        for index, detector in enumerate(detectors):
            if detector.keywords:
                self._keywords.Add("(?i)" + "|".join(re.escape(keyword) for keyword in detector.keywords))
                self._gated.append(index)
        if self._gated:
            self._keywords.Compile()

    def scan(self, text: str, budget: ScanBudget | None = None) -> list[Finding]:
        """Non-overlapping findings in text order; raises :class:`ScanLimitExceeded` once ``budget``
        (by default ``max_candidates`` for this text alone) is spent."""
        if not text:
            return []
        budget = budget or ScanBudget(self.max_candidates)
        # Lone surrogates (a str may hold them, UTF-8 may not) become "?", one byte for one character.
        data = text.encode("utf-8", "replace")
        present = {self._gated[i] for i in self._keywords.Match(data) or ()} if self._gated else set()
        kept: list[tuple[int, int, str]] = []
        for index, detector in enumerate(self.detectors):
            if detector.keywords and index not in present:
                continue
            fence = detector.isolated_from.encode()
            new: list[tuple[int, int, str]] = []
            for match_start, match_end, start, end in detector.candidates(data):
                budget.left -= 1
                if budget.left < 0:
                    raise ScanLimitExceeded(detector.type)
                if start < 0 or end <= start:
                    continue
                # A neighbour outside ASCII is a byte >= 0x80 here: never in these ASCII sets, as before.
                if fence and (
                    (match_start > 0 and data[match_start - 1] in fence)
                    or (match_end < len(data) and data[match_end] in fence)
                ):
                    continue
                if detector.confirm is not None and not detector.confirm(data[start:end].decode("utf-8")):
                    continue
                new.append((start, end, detector.type))
            kept = _without_overlaps(kept, new)
        return _char_offsets(text, data, kept)

    def redact(self, text: str, budget: ScanBudget | None = None) -> tuple[str, list[Finding]]:
        """The text with each finding replaced by its marker, and the findings."""
        findings = self.scan(text, budget)
        if not findings:
            return text, findings
        pieces, last = [], 0
        for finding in findings:
            pieces.append(text[last : finding.start])
            pieces.append(redaction_marker(finding.type))
            last = finding.end
        pieces.append(text[last:])
        return "".join(pieces), findings


class SecretsBlocked(InvalidArgument):
    """The deployment blocks requests that carry secrets; the message names the types, never the values."""

    code = "secrets_detected"

    def __init__(self, types: list[str]) -> None:
        super().__init__(f"the request contains secrets ({', '.join(types)}); remove them and retry")
        self.types = types


class SecretsUnscannable(SecretsBlocked):
    """More candidate matches than a scan examines: refused whatever the policy (fail closed)."""

    def __init__(self, types: list[str]) -> None:
        InvalidArgument.__init__(
            self,
            f"the request holds more secret-like values ({', '.join(types)}) than can be checked; "
            "split it or remove them and retry",
        )
        self.types = types


class AuditSink(Protocol):
    def record(
        self,
        event_type: str,
        *,
        location: str = "",
        tenant_id: str = "",
        user_hash: str = "",
        correlation_id: str = "",
        details: dict[str, object] | None = None,
    ) -> None: ...


class SecretGuard:
    """One detection point: scan texts, then redact or block, count, and write an audit row."""

    def __init__(
        self,
        location: DetectionPoint,
        *,
        policy: SecretPolicy = SecretPolicy.redact,
        audit: AuditSink | None = None,
        scanner: SecretScanner | None = None,
        enabled: bool = True,
    ) -> None:
        self.location = location
        self.policy = policy
        self.audit = audit
        self.scanner = scanner or SecretScanner()
        self.enabled = enabled

    def check(
        self, texts: list[str], *, tenant_id: str = "", user_hash: str = "", correlation_id: str = ""
    ) -> list[str]:
        """The texts with secrets replaced; raises :class:`SecretsBlocked` under the block policy, and
        :class:`SecretsUnscannable` under any policy when the texts hold more candidates than a scan
        examines. Runs on the caller's thread: code on an event loop calls :meth:`check_async`."""
        if not self.enabled:
            return texts
        return self._report(texts, *self._scan(texts), tenant_id, user_hash, correlation_id)

    async def check_async(
        self, texts: list[str], *, tenant_id: str = "", user_hash: str = "", correlation_id: str = ""
    ) -> list[str]:
        """:meth:`check` without holding an event loop: texts up to ``INLINE_SCAN_CHARS`` in total are
        scanned inline (a thread hop would cost more than the scan), larger ones in a worker thread,
        where RE2 searches without the GIL, so other requests go on. Counting and auditing stay on the
        loop (the audit writer's queue is not thread-safe)."""
        if not self.enabled:
            return texts
        if sum(len(text) for text in texts) <= INLINE_SCAN_CHARS:
            scanned = self._scan(texts)
        else:
            scanned = await asyncio.to_thread(self._scan, texts)
        return self._report(texts, *scanned, tenant_id, user_hash, correlation_id)

    def _scan(self, texts: list[str]) -> tuple[list[str], dict[str, int], bool]:
        """Redacted texts, finding counts per type, and whether the candidate budget ran out. One
        budget for the whole request, so many texts cannot multiply the work."""
        cleaned: list[str] = []
        types: dict[str, int] = {}
        budget = ScanBudget(self.scanner.max_candidates)
        try:
            for text in texts:
                redacted, findings = self.scanner.redact(text, budget)
                cleaned.append(redacted)
                for finding in findings:
                    types[finding.type] = types.get(finding.type, 0) + 1
        except ScanLimitExceeded as exc:
            types[exc.type] = types.get(exc.type, 0) + 1
            return cleaned, types, True
        return cleaned, types, False

    def _report(
        self,
        texts: list[str],
        cleaned: list[str],
        types: dict[str, int],
        over_limit: bool,
        tenant_id: str,
        user_hash: str,
        correlation_id: str,
    ) -> list[str]:
        if not types:
            return texts
        # Past the candidate budget the rest of the texts was never examined: redacting what was found
        # would pass the rest on unread, so the request is refused whatever the policy.
        action = SecretPolicy.block if over_limit else self.policy
        count = sum(types.values())
        details: dict[str, object] = {"types": types, "count": count, "action": action.value}
        if over_limit:
            details["reason"] = "scan_limit"
        SECRETS_DETECTED.labels(self.location.value).inc(count)
        if self.audit is not None:
            self.audit.record(
                "secret_detected",
                location=self.location.value,
                tenant_id=tenant_id,
                user_hash=user_hash,
                correlation_id=correlation_id,
                details=details,
            )
        log.warning("secrets detected", extra={"location": self.location.value, **details, "types": sorted(types)})
        if over_limit:
            raise SecretsUnscannable(sorted(types))
        if action is SecretPolicy.block:
            raise SecretsBlocked(sorted(types))
        return cleaned
