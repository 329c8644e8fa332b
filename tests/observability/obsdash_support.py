"""Fixtures and helpers of the rules and dashboards tests: promtool (from Debian's prometheus package,
fetched on first use), the chart's helm, and the metric names the running suite exports.

A module the tests import rather than a conftest.py: the traces and metrics tests own this directory's
conftest."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from goblin_tools import deploy_tools
from goblin_tools.promtool import ensure_promtool


@pytest.fixture(scope="session", name="promtool_bin")
def promtool_fixture() -> str:
    """The promtool binary; a clear failure (never a skip) when it cannot be fetched."""
    try:
        return str(ensure_promtool())
    except deploy_tools.ToolError as exc:
        pytest.fail(f"promtool is needed to check the alert rules and dashboards and could not be had: {exc}")


@pytest.fixture(scope="session", name="helm_bin")
def helm_fixture() -> str:
    try:
        return str(deploy_tools.ensure_tool("helm"))
    except deploy_tools.ToolError as exc:
        pytest.fail(f"helm is needed to render the chart and could not be had: {exc}")


def exposition_names(text: str) -> set[str]:
    """Every series name a /metrics page offers: declared families (even with no sample yet: a labelled
    counter nobody has incremented) under each name PromQL can use, and every sample's name."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in _SERIES_SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


# What prometheus_client exposes beside a family's own name, by type.
_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}
