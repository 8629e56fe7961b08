"""Finding, ordering and planning migrations; splitting them into statements."""

from __future__ import annotations

import pytest

from lab.errors import ConfigError, SchemaTooNew
from lab.store.migrate import Migration, pending, schema_files, split_statements


def test_sqlite_migrations_are_found_in_order() -> None:
    found = schema_files("sqlite")
    assert found[0].version == 1 and found[0].name == "initial"
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert "CREATE TABLE audit" in found[0].sql


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        schema_files("oracle")


def test_pending_skips_applied_and_refuses_newer() -> None:
    known = [Migration(version=v, name=f"m{v}", sql="") for v in (1, 2, 3)]
    assert [m.version for m in pending(set(), known)] == [1, 2, 3]
    assert [m.version for m in pending({1, 2}, known)] == [3]
    assert pending({1, 2, 3}, known) == []
    with pytest.raises(SchemaTooNew) as info:
        pending({1, 2, 3, 4}, known)
    assert info.value.details["database_version"] == 4
    assert info.value.details["known_version"] == 3


def test_split_statements_respects_quotes_comments_and_blocks() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    INSERT INTO t VALUES ('e');
    -- trailing comment
    """
    statements = list(split_statements(sql))
    assert len(statements) == 3
    assert statements[0].endswith("DEFAULT 'a;b');")
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_split_statements_rejects_a_dangling_statement() -> None:
    with pytest.raises(ConfigError):
        list(split_statements("CREATE TABLE t (x);\nCREATE TABLE u (y"))
