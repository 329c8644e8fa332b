from __future__ import annotations

import asyncio
import random
import re

import pytest

from services.common.metrics import SECRETS_DETECTED
from services.common.secret_detectors import Detector
from services.common.secrets import (
    DETECTOR_TYPES,
    DETECTORS,
    DetectionPoint,
    ScanLimitExceeded,
    SecretGuard,
    SecretPolicy,
    SecretsBlocked,
    SecretScanner,
    SecretsUnscannable,
)

# One realistic sample per type (all fake: documented examples or random strings).
SAMPLES: dict[str, str] = {
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_key": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "github_token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "slack_token": "xoxb-123456789012-abcdefghijkl",
    "slack_webhook": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "stripe_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "google_api_key": "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
    "openai_api_key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk6lMn9oPq2rSt5uVw",
    "anthropic_api_key": "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-abcdefgh",
    "private_key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    ),
    "url_password": "postgres://admin:correct-horse@db.internal:5432/app",
    "password_assignment": "password=Tr0ub4dor&3",
    "credit_card": "4111 1111 1111 1111",
    "us_ssn": "123-45-6789",
}


# What must be gone after redaction: the value of an assignment, not the word "password" before it.
SECRET_CORES = {"aws_secret_key": "wJalrXUtnFEMI", "url_password": "correct-horse", "password_assignment": "Tr0ub4dor"}


def secret_core(secret_type: str) -> str:
    """The part of a sample that redaction must remove."""
    return SECRET_CORES.get(secret_type, SAMPLES[secret_type][:12])


def test_every_detector_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(DETECTOR_TYPES)


@pytest.mark.parametrize("secret_type", sorted(SAMPLES))
def test_each_type_is_found_and_redacted(secret_type: str) -> None:
    text = f"Here it is: {SAMPLES[secret_type]} -- please debug."
    redacted, findings = SecretScanner().redact(text)
    assert [f.type for f in findings] == [secret_type]
    assert f"[REDACTED:{secret_type}]" in redacted
    assert redacted.startswith("Here it is: ") and redacted.endswith(" -- please debug.")
    assert secret_core(secret_type) not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2024-05-01 at 12:30; call 555-1234 or order 12345678.",
        "Invoice 4111111111111112 failed the checksum",  # not a Luhn number
        "SSN-shaped but never issued: 000-12-3456, 666-12-3456, 912-34-5678",
        "Visit https://example.com/docs?page=2 and read about password policies.",
        "The sk-learn library and the AIza prefix are words here.",
        "eyJhbGciOi is not a token by itself",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SecretScanner().redact(text) == (text, [])


def test_several_secrets_keep_their_order_and_surroundings() -> None:
    text = f"a {SAMPLES['github_token']} b {SAMPLES['us_ssn']} c {SAMPLES['aws_access_key']} d"
    redacted, findings = SecretScanner().redact(text)
    assert [f.type for f in findings] == ["github_token", "us_ssn", "aws_access_key"]
    assert redacted == "a [REDACTED:github_token] b [REDACTED:us_ssn] c [REDACTED:aws_access_key] d"


def test_findings_never_carry_the_secret() -> None:
    findings = SecretScanner().scan(SAMPLES["stripe_key"])
    assert all(set(vars(f)) == {"type", "start", "end"} for f in findings)


class FakeAudit:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def record(self, event_type: str, **fields: object) -> None:
        self.events.append({"event_type": event_type, **fields})


def test_guard_redacts_counts_and_audits_without_the_secret() -> None:
    audit = FakeAudit()
    guard = SecretGuard(DetectionPoint.request_creation, audit=audit)
    before = SECRETS_DETECTED.labels("request_creation")._value.get()
    texts = guard.check(
        [f"key {SAMPLES['aws_access_key']}", "clean"], tenant_id="t1", user_hash="u1", correlation_id="c1"
    )
    assert texts == ["key [REDACTED:aws_access_key]", "clean"]
    assert SECRETS_DETECTED.labels("request_creation")._value.get() == before + 1
    (event,) = audit.events
    assert event["event_type"] == "secret_detected" and event["location"] == "request_creation"
    assert event["details"] == {"types": {"aws_access_key": 1}, "count": 1, "action": "redact"}
    assert SAMPLES["aws_access_key"] not in repr(event)


def test_guard_blocks_under_the_block_policy() -> None:
    guard = SecretGuard(DetectionPoint.worker_processing, policy=SecretPolicy.block, audit=FakeAudit())
    with pytest.raises(SecretsBlocked) as info:
        guard.check([SAMPLES["jwt"], SAMPLES["us_ssn"]])
    assert info.value.types == ["jwt", "us_ssn"]
    assert info.value.code == "secrets_detected"
    assert "eyJ" not in info.value.message


def test_disabled_guard_passes_texts_through() -> None:
    texts = [SAMPLES["us_ssn"]]
    assert SecretGuard(DetectionPoint.document_indexing, enabled=False).check(texts) is texts


@pytest.mark.parametrize("secret_type", sorted(SAMPLES))
def test_redaction_is_idempotent(secret_type: str) -> None:
    """The router scans what the gateway already redacted: a marker must not look like a secret."""
    scanner = SecretScanner()
    once, _ = scanner.redact(f"value: {SAMPLES[secret_type]} end")
    assert scanner.redact(once) == (once, [])


# -- linear time (issue 12): the RE2 rewrites find what the backtracking originals found ---------------

# The patterns as they were on Python's re, before RE2 (which lacks look-arounds) and before the PEM block
# was split into header and footer searches; each with the group that is the secret and the pieces its
# random texts are made of.
_PEM = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
ORIGINALS: dict[str, tuple[str, int, list[str]]] = {
    "private_key": (
        _PEM + r"[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|" + _PEM + r"[A-Za-z0-9+/=\s]*",
        0,
        ["-----BEGIN ", "-----END ", "RSA ", "PRIVATE KEY", " BLOCK", "-----", "-", "ab", "\n", "=", "!", " "],
    ),
    "jwt": (
        r"eyJ[A-Za-z0-9-_=]+\.[A-Za-z0-9-_=]+\.?[A-Za-z0-9-_.+/=]*?(?![A-Za-z0-9\-_=])",
        0,
        ["eyJ", ".", "a", "Z9", "-", "_", "=", "+", "/", " ", "!", ".."],
    ),
    "aws_secret_key": (
        r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        1,
        ["aws_secret_access_key", "AWS_SECRET_KEY", " = ", ":", "'", "a" * 20, "B" * 19, "/", "+", "-", " "],
    ),
    "password_assignment": (
        r"(?i)(?:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token)"
        r"[\"']?\s*[:=]\s*[\"']?(?!\[REDACTED:)([^\s\"',;]{4,})",
        1,
        ["password", "Secret", "api-key", "=", ":", " ", '"', "'", ",", "[REDACTED:", "[redacted:", "[RED", "x]"]
        + ["abc", "[", "REDACTED", ";", "pwd"],
    ),
}


def _rewritten(secret_type: str, group: int) -> Detector:
    """The detector of that type whose pattern is the rewrite (aws_secret_key has two)."""
    (detector,) = [
        d
        for d in DETECTORS
        if d.type == secret_type and (secret_type != "aws_secret_key" or "secret_?" in d.pattern.pattern)
    ]
    assert detector.group == group
    return detector


@pytest.mark.parametrize("secret_type", sorted(ORIGINALS))
def test_rewrite_finds_what_the_backtracking_original_found(secret_type: str) -> None:
    original, group, pieces = ORIGINALS[secret_type]
    detector = _rewritten(secret_type, group)
    rng = random.Random(secret_type)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        expected = [m.span(group) for m in re.finditer(original, text) if m.start(group) >= 0]
        found = [(start, end) for _, _, start, end in detector.candidates(text.encode())]
        assert found == expected, text


def test_offsets_are_characters_in_text_beyond_ascii() -> None:
    text = f"clé ключ 🔑 {SAMPLES['aws_access_key']} ✓ {SAMPLES['us_ssn']} fin"
    redacted, findings = SecretScanner().redact(text)
    assert [text[f.start : f.end] for f in findings] == [SAMPLES["aws_access_key"], SAMPLES["us_ssn"]]
    assert redacted == "clé ключ 🔑 [REDACTED:aws_access_key] ✓ [REDACTED:us_ssn] fin"


def test_lone_surrogates_do_not_break_the_scan() -> None:
    """JSON may carry "\\ud800", which decodes to a str that UTF-8 cannot encode."""
    text = f"\ud800 {SAMPLES['github_token']} \udfff"
    assert SecretScanner().redact(text)[0] == "\ud800 [REDACTED:github_token] \udfff"


def test_a_pem_block_runs_to_its_footer_or_else_to_the_end_of_its_body() -> None:
    header = "-----BEGIN RSA PRIVATE KEY-----"
    text = f"{header}\nAAAA\n-----END RSA PRIVATE KEY----- then {header}\nMIIEow+/= cut off! end"
    redacted, findings = SecretScanner().redact(text)
    assert redacted == "[REDACTED:private_key] then [REDACTED:private_key]! end"
    assert len(findings) == 2


def test_too_many_candidates_stop_the_scan_and_the_guard_refuses_under_any_policy() -> None:
    scanner = SecretScanner(max_candidates=10)
    with pytest.raises(ScanLimitExceeded) as info:
        scanner.scan(" x ".join([SAMPLES["us_ssn"]] * 11))
    assert info.value.type == "us_ssn"
    assert len(scanner.scan(" x ".join([SAMPLES["us_ssn"]] * 10))) == 10

    audit = FakeAudit()
    guard = SecretGuard(DetectionPoint.request_creation, audit=audit, scanner=scanner)
    # One budget per request: eleven texts of one candidate each exceed it as one text of eleven does.
    with pytest.raises(SecretsUnscannable) as blocked:
        guard.check([SAMPLES["us_ssn"]] * 11)
    assert blocked.value.code == "secrets_detected" and "us_ssn" in blocked.value.message
    (event,) = audit.events
    assert event["details"]["action"] == "block" and event["details"]["reason"] == "scan_limit"


async def test_check_async_scans_small_texts_inline_and_large_ones_off_the_loop() -> None:
    audit = FakeAudit()
    guard = SecretGuard(DetectionPoint.request_creation, audit=audit)
    small = [f"key {SAMPLES['aws_access_key']}"]
    assert await guard.check_async(small) == guard.check(small) == ["key [REDACTED:aws_access_key]"]

    large = [("lorem ipsum dolor sit amet " * 200_000) + SAMPLES["github_token"]]  # 5 MiB: a scan takes ms
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        (cleaned,) = await guard.check_async(large, correlation_id="c2")
    finally:
        task.cancel()
    assert cleaned.endswith("[REDACTED:github_token]")
    assert ticks > 0, "the event loop ran nothing while the large text was scanned"
    assert audit.events[-1]["correlation_id"] == "c2"
    disabled = SecretGuard(DetectionPoint.request_creation, enabled=False)
    assert await disabled.check_async(large) is large
