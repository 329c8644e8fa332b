"""The gauges the alert rules need beside the SPEC metrics: the memory limit MemoryHigh divides by, the
certificates' notAfter CertificateExpiry watches, the daily budget DailyCostNearBudget compares with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common import metrics
from services.common.tls import cert_pem, make_ca, make_leaf, record_expiry
from services.router.budget import Budgets, SpendCounters


def ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("1073741824\n", None, 1073741824),  # a container's or unit's cgroup v2 limit
        ("max\n", None, None),  # no limit: the machine's RAM
        (None, "536870912\n", 536870912),  # cgroup v1
        (None, "9223372036854771712\n", None),  # v1's "unlimited"
        (None, None, None),  # no cgroup files at all
    ],
)
def test_memory_limit_is_the_cgroup_limit_else_ram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v2: str | None, v1: str | None, expected: int | None
) -> None:
    files = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(files, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text)
    monkeypatch.setattr(metrics, "_CGROUP_LIMITS", files)
    assert metrics.memory_limit_bytes() == (expected or ram())
    assert REGISTRY.get_sample_value("goblin_process_memory_limit_bytes") == (expected or ram())


def test_certificate_not_after_is_exported_for_the_ca_and_the_service() -> None:
    ca, ca_key = make_ca()
    leaf, _ = make_leaf(ca, ca_key, "rag")
    record_expiry(ca=cert_pem(ca), cert=cert_pem(leaf))
    sample = "goblin_tls_certificate_not_after_timestamp_seconds"
    assert REGISTRY.get_sample_value(sample, {"certificate": "ca"}) == ca.not_valid_after_utc.timestamp()
    assert REGISTRY.get_sample_value(sample, {"certificate": "service"}) == leaf.not_valid_after_utc.timestamp()


def test_a_file_that_is_not_pem_leaves_the_gauge_alone() -> None:
    ca, ca_key = make_ca()
    leaf, _ = make_leaf(ca, ca_key, "auth")
    record_expiry(ca=cert_pem(ca), cert=cert_pem(leaf))
    record_expiry(ca=b"not a certificate", cert=b"nor this")
    sample = "goblin_tls_certificate_not_after_timestamp_seconds"
    assert REGISTRY.get_sample_value(sample, {"certificate": "service"}) == leaf.not_valid_after_utc.timestamp()


def test_the_router_exports_its_daily_budget() -> None:
    # Redis is never reached: constructing the budgets is enough.
    Budgets(SpendCounters(lambda: None), store=None, global_budget_usd=42.5)  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("goblin_router_daily_budget_usd") == 42.5
