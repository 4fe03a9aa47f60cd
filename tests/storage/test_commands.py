"""``relayburnd db migrate`` and ``relayburnd import``, driven through click."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from storage_corpus import corpus
from storage_support import content_sessions, expected_state, file_store, state

from relayburnd.commands.db import db
from relayburnd.commands.importer import import_cmd
from relayburnd.config import load_settings
from relayburnd.records import Batch
from relayburnd.storage import open_adapter
from relayburnd.storage.migrations import load


def env(tmp_path: Path, storage: str) -> dict[str, str]:
    return {"RELAYBURN_HOME": str(tmp_path / "home"), "RELAYBURN_STORAGE": storage,
            "RELAYBURN_SQLITE_PATH": str(tmp_path / "store.sqlite")}


class TestDbMigrate:
    def test_prints_what_it_applied_then_up_to_date(self, tmp_path: Path) -> None:
        """The first run names each migration; the second says the schema is current."""
        runner = CliRunner()
        first = runner.invoke(db, ["migrate"], env=env(tmp_path, "sqlite"))
        assert first.exit_code == 0, first.output
        assert first.output.splitlines() == [f"applied {m.name}" for m in load("sqlite")]
        second = runner.invoke(db, ["migrate"], env=env(tmp_path, "sqlite"))
        assert second.output == (
            f"sqlite {tmp_path / 'store.sqlite'}: schema is up to date "
            f"(version {len(load('sqlite'))})\n"
        )

    def test_file_storage_is_a_one_line_error(self, tmp_path: Path) -> None:
        """Migrating the file store fails with one line and the config exit code."""
        result = CliRunner().invoke(db, ["migrate"], env=env(tmp_path, "file"))
        assert result.exit_code == 2
        assert result.output == (
            "Error: RELAYBURN_STORAGE=file: migrations apply to sqlite or postgres storage only\n"
        )

    def test_unreachable_postgres_is_a_one_line_error(self, tmp_path: Path) -> None:
        """A server that is not there gives one line without a traceback."""
        e = env(tmp_path, "postgres")
        e["RELAYBURN_PG_DSN"] = "host=127.0.0.1 port=1 user=postgres password=hunter2"
        result = CliRunner().invoke(db, ["migrate"], env=e)
        assert result.exit_code == 1
        assert result.output.startswith("Error: postgres://postgres@127.0.0.1:1/postgres: ")
        assert len(result.output.strip().splitlines()) == 1
        assert "hunter2" not in result.output


class TestImport:
    def test_copies_the_file_store_and_is_idempotent(self, tmp_path: Path) -> None:
        """Every record lands in SQLite; a second run finds all of them already there."""
        records = corpus(seed=40, n=60)
        source = open_adapter(file_store(tmp_path / "home"))
        source.write(Batch(records))
        source.close()
        runner = CliRunner()
        first = runner.invoke(import_cmd, ["--to", "sqlite", "--batch-size", "97"],
                              env=env(tmp_path, "file"))
        assert first.exit_code == 0, first.output
        n = len({r.id for r in records})
        assert first.output.splitlines()[0] == (
            f"imported {n:,} records into sqlite: {n:,} inserted, 0 updated, 0 already there"
        )
        second = runner.invoke(import_cmd, ["--to", "sqlite"], env=env(tmp_path, "file"))
        assert second.output.splitlines()[0] == (
            f"imported {n:,} records into sqlite: 0 inserted, 0 updated, {n:,} already there"
        )
        target = open_adapter(load_settings(env=env(tmp_path, "sqlite")))
        sessions = content_sessions(records)
        assert state(target, sessions) == expected_state(records, sessions)
        target.close()

    @pytest.mark.postgres
    def test_copies_into_postgres(self, tmp_path: Path, pg_dsn: str) -> None:
        """The same copy works into PostgreSQL."""
        from storage_support import truncate_all

        truncate_all(pg_dsn)
        records = corpus(seed=41, n=30)
        source = open_adapter(file_store(tmp_path / "home"))
        source.write(Batch(records))
        source.close()
        e = {**env(tmp_path, "file"), "RELAYBURN_PG_DSN": pg_dsn}
        result = CliRunner().invoke(import_cmd, ["--to", "postgres"], env=e)
        assert result.exit_code == 0, result.output
        target = open_adapter(load_settings(env={**e, "RELAYBURN_STORAGE": "postgres"}))
        sessions = content_sessions(records)
        assert state(target, sessions) == expected_state(records, sessions)
        target.close()

    def test_unknown_target_is_a_usage_error(self, tmp_path: Path) -> None:
        """--to accepts only the stores it can write."""
        result = CliRunner().invoke(import_cmd, ["--to", "file"], env=env(tmp_path, "file"))
        assert result.exit_code == 2
        assert "Invalid value for '--to'" in result.output
