"""The CLI as scripts and Kubernetes jobs use it: one-line errors at any terminal width, client text
printed literally, the database URL from its secret file, never an embedded database in production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _goblin(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "goblin_tools.cli", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "GOBLIN_HOME": str(tmp_path / "home"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_error_message_is_never_wrapped_at_terminal_width(tmp_path: Path) -> None:
    target = tmp_path / ("deep-" * 12) / "backup"
    target.mkdir(parents=True)
    (target / "something").write_text("x")
    done = _goblin(tmp_path, "backup", str(target), COLUMNS="40")
    assert done.returncode == 1, done.stderr
    assert f"{target} exists and is not an empty directory" in done.stderr, done.stderr


def test_error_message_markup_is_printed_literally(tmp_path: Path) -> None:
    target = tmp_path / "[bold]x"
    target.mkdir()
    (target / "f").write_text("x")
    done = _goblin(tmp_path, "backup", str(target), COLUMNS="200")
    assert str(target) in done.stderr, done.stderr


def test_migrate_reads_the_database_url_from_its_file(tmp_path: Path) -> None:
    """Kubernetes mounts secrets as files: DATABASE_URL_FILE must be used, never an embedded database."""
    secret = tmp_path / "DATABASE_URL"
    secret.write_text("postgresql://goblin@127.0.0.1:9/goblin\n")  # nothing listens on port 9
    done = _goblin(tmp_path, "migrate", DATABASE_URL_FILE=str(secret))
    assert done.returncode == 1 and "migration failed" in done.stderr, done.stderr
    assert not (tmp_path / "home" / "pg").exists()


def test_migrate_never_starts_an_embedded_database_in_production(tmp_path: Path) -> None:
    done = _goblin(tmp_path, "migrate", GOBLIN_ENV="production")
    assert done.returncode == 2, done.stderr
    assert "DATABASE_URL" in done.stderr and "production" in done.stderr
    assert not (tmp_path / "home" / "pg").exists()


def test_an_unreadable_database_url_file_is_one_clear_line(tmp_path: Path) -> None:
    done = _goblin(tmp_path, "migrate", DATABASE_URL_FILE=str(tmp_path / "missing"))
    assert done.returncode == 2 and "DATABASE_URL_FILE: cannot read" in done.stderr, done.stderr
