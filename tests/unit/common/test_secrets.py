from __future__ import annotations

import pytest

from services.common.metrics import SECRETS_DETECTED
from services.common.secrets import (
    DETECTOR_TYPES,
    DetectionPoint,
    SecretGuard,
    SecretPolicy,
    SecretsBlocked,
    SecretScanner,
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


def test_every_detector_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(DETECTOR_TYPES)


@pytest.mark.parametrize("secret_type", sorted(SAMPLES))
def test_each_type_is_found_and_redacted(secret_type: str) -> None:
    text = f"Here it is: {SAMPLES[secret_type]} -- please debug."
    redacted, findings = SecretScanner().redact(text)
    assert [f.type for f in findings] == [secret_type]
    assert f"[REDACTED:{secret_type}]" in redacted
    assert redacted.startswith("Here it is: ") and redacted.endswith(" -- please debug.")
    secret_core = {
        "aws_secret_key": "wJalrXUtnFEMI",
        "url_password": "correct-horse",
        "password_assignment": "Tr0ub4dor",
    }.get(secret_type, SAMPLES[secret_type][:12])
    assert secret_core not in redacted


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
