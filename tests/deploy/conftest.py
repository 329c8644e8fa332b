"""Fixtures: the chart rendered with every profile of :mod:`tests.deploy.manifests`, once per session,
by the pinned helm (offline: no cluster, no chart repository)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from goblin_tools import deploy_tools
from tests.deploy.manifests import PROFILES, parse


@pytest.fixture(scope="session")
def helm_bin() -> Iterator[str]:
    yield str(deploy_tools.ensure_tool("helm"))


@pytest.fixture(scope="session")
def rendered(helm_bin: str) -> dict[str, list[dict[str, Any]]]:
    """profile name -> every object `helm template` makes (helm test pods and hooks included)."""
    return {name: parse(deploy_tools.template(values)) for name, values in PROFILES.items()}


@pytest.fixture(scope="session")
def render(helm_bin: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Render with ad-hoc values (for the cases one test needs)."""
    return lambda values: parse(deploy_tools.template(values))
