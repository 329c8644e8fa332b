"""Fixtures: promtool (from Debian's prometheus package, fetched on first use) and the chart's helm."""

from __future__ import annotations

import pytest

from goblin_tools import deploy_tools
from goblin_tools.promtool import ensure_promtool


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    """The promtool binary; a clear failure (never a skip) when it cannot be fetched."""
    try:
        return str(ensure_promtool())
    except deploy_tools.ToolError as exc:
        pytest.fail(f"promtool is needed to check the alert rules and dashboards and could not be had: {exc}")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    try:
        return str(deploy_tools.ensure_tool("helm"))
    except deploy_tools.ToolError as exc:
        pytest.fail(f"helm is needed to render the chart and could not be had: {exc}")
