"""Connection parameters the PostgreSQL adapter adds, and how it names a server."""

from __future__ import annotations

import psycopg.errors as pg_errors

from relayburnd.errors import SinkMisconfigured, SinkRejected, SinkUnavailable
from relayburnd.storage.pg_conn import Dsn, PgTimeouts, classify, connect_kwargs


class TestConnectParams:
    def test_deadlines_and_keepalives_are_added(self) -> None:
        """A bare DSN gets the connect timeout, keepalives, statement timeout and app name."""
        got = connect_kwargs(Dsn("host=db user=u"), PgTimeouts(connect=5, statement=30))
        assert got["connect_timeout"] == 5
        assert got["keepalives"] == 1 and got["tcp_user_timeout"] == 40_000
        assert got["fallback_application_name"] == "relayburnd"
        assert "-c statement_timeout=30000" in str(got["options"])

    def test_what_the_dsn_sets_is_kept(self) -> None:
        """Values the operator put in the DSN win over the defaults."""
        dsn = Dsn("host=db connect_timeout=9 options='-c search_path=app -c statement_timeout=5s'")
        got = connect_kwargs(dsn, PgTimeouts())
        assert "connect_timeout" not in got
        assert got["options"] == (
            "-c search_path=app -c statement_timeout=5s "
            "-c idle_in_transaction_session_timeout=60000"
        )


class TestNames:
    def test_label_hides_the_password(self) -> None:
        """The printable name has host, port, user and database, never the password."""
        for raw in ("postgresql://app:s3cr%40t@db.example:6543/usage",
                    "host=db.example port=6543 user=app password=s3cr@t dbname=usage"):
            dsn = Dsn(raw)
            assert dsn.label == "postgres://app@db.example:6543/usage"
            assert "s3cr" not in dsn.scrub(f"failed for {raw}")


def test_error_classes() -> None:
    """SQLSTATE classes map to the retry classes of reliability.md."""
    e = pg_errors
    assert classify(e.lookup("40001")()) is SinkUnavailable  # serialization failure
    assert classify(e.lookup("40P01")()) is SinkUnavailable  # deadlock
    assert classify(e.lookup("57P01")()) is SinkUnavailable  # admin shutdown
    assert classify(e.lookup("57014")()) is SinkUnavailable  # statement timeout
    assert classify(e.lookup("28P01")()) is SinkMisconfigured  # bad password
    assert classify(e.lookup("3D000")()) is SinkMisconfigured  # no such database
    assert classify(e.lookup("42501")()) is SinkMisconfigured  # insufficient privilege
    assert classify(e.lookup("22P02")()) is SinkRejected  # invalid text representation
    assert classify(e.lookup("23505")()) is SinkRejected  # unique violation
