"""What the CLI prints must survive a narrow terminal: an error is one line a script can grep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_error_message_is_never_wrapped_at_terminal_width(tmp_path: Path) -> None:
    target = tmp_path / ("deep-" * 12) / "backup"
    target.mkdir(parents=True)
    (target / "something").write_text("x")
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "40", "GOBLIN_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "goblin_tools.cli", "backup", str(target)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"{target} exists and is not an empty directory" in done.stderr, done.stderr


def test_error_message_markup_is_printed_literally(tmp_path: Path) -> None:
    target = tmp_path / "[bold]x"
    target.mkdir()
    (target / "f").write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "goblin_tools.cli", "backup", str(target)],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "GOBLIN_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=60,
    )
    assert str(target) in done.stderr, done.stderr
