from __future__ import annotations

from pathlib import Path

import pytest

from services.common.db import SETS, MigrationError, SchemaSet, load_migrations

TABLES = (
    "users api_keys sessions webauthn_credentials tenants tasks task_events search_collections "
    "search_documents providers provider_credentials model_configs global_settings routing_providers "
    "provider_metrics provider_policies routing_requests audit_events signing_keys"
).split()


def test_every_table_the_design_notes_name_belongs_to_exactly_one_schema() -> None:
    owned = [table for schema_set in SETS.values() for table in schema_set.tables]
    assert sorted(owned) == sorted(TABLES)


@pytest.mark.parametrize("schema_set", SETS.values(), ids=list(SETS))
def test_each_baseline_creates_its_own_tables_and_references_no_other_schema(schema_set: SchemaSet) -> None:
    first = schema_set.migrations()[0]
    assert first.version == 1
    for table in schema_set.tables:
        assert f"CREATE TABLE {table} (" in first.sql, table
    foreign = {t for other in SETS.values() if other is not schema_set for t in other.tables}
    for table in foreign:
        assert f"REFERENCES {table}(" not in first.sql, f"{schema_set.schema} references {table}"
    # Unqualified: the runner's search_path is the set's schema.
    assert "public." not in first.sql and f"{schema_set.schema}." not in first.sql


def test_versions_must_be_contiguous(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="out of sequence"):
        load_migrations(tmp_path)


def test_misnamed_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description.sql"):
        load_migrations(tmp_path)


def test_schema_names_are_plain_identifiers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        SchemaSet('a"; DROP SCHEMA auth; --', tmp_path)
