"""Secret files (the admin key) are written 0600 and never through a planted symlink."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from services.auth.accounts import write_secret_file


def test_the_admin_key_file_replaces_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    key_file = tmp_path / "home" / "admin.key"
    key_file.parent.mkdir()
    key_file.symlink_to(victim)
    write_secret_file(key_file, "gk_secret\n")
    assert victim.read_text() == "untouched"
    assert not key_file.is_symlink() and key_file.read_text() == "gk_secret\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_new_state_folder_is_private(tmp_path: Path) -> None:
    key_file = tmp_path / "new-home" / "admin.key"
    write_secret_file(key_file, "gk_secret\n")
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


def test_a_symlink_planted_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    # The old writer used a predictable ".<name>.<pid>.tmp" opened with O_TRUNC, following links.
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    key_file = tmp_path / "admin.key"
    (tmp_path / f".admin.key.{os.getpid()}.tmp").symlink_to(victim)
    write_secret_file(key_file, "gk_secret\n")
    assert victim.read_text() == "untouched" and key_file.read_text() == "gk_secret\n"
