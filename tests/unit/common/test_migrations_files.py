from __future__ import annotations

from pathlib import Path

import pytest

from services.common.db import MigrationError, load_migrations

TABLES = (
    "users api_keys sessions webauthn_credentials tenants tasks task_events search_collections "
    "search_documents providers provider_credentials model_configs global_settings routing_providers "
    "provider_metrics provider_policies routing_requests audit_events"
).split()


def test_first_migration_creates_every_table_the_design_notes_name() -> None:
    first = load_migrations()[0]
    assert first.version == 1
    for table in TABLES:
        assert f"CREATE TABLE {table} (" in first.sql, table


def test_versions_must_be_contiguous(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="out of sequence"):
        load_migrations(tmp_path)


def test_misnamed_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description.sql"):
        load_migrations(tmp_path)
