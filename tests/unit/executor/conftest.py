"""Fixtures of the executor's unit tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def work_root() -> Iterator[Path]:
    """A work root the run-as user (nobody, when the tests run as root) can traverse: pytest's own
    temporary directories are 0700 all the way down."""
    root = Path(tempfile.mkdtemp(prefix="goblin-exec-test-"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)
