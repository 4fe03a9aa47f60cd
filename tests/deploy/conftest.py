"""Fixtures of the deployment tests: a scratch PostgreSQL database per test.

PostgreSQL runs on 127.0.0.1:5432 (user postgres, or ``RELAYBURN_TEST_PG_ADMIN``).
Each test that needs it gets a database ``relayburn_test_deploy_<random>``,
dropped afterwards. Without a server those tests are skipped, except in CI
(``CI`` set), where they fail. Slow tests run in CI, with
``RELAYBURN_SLOW_TESTS=1`` or when selected with ``-m slow``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from deploy_support import PgDatabase, postgres_reachable

IN_CI = bool(os.environ.get("CI"))
RUN_SLOW = IN_CI or bool(os.environ.get("RELAYBURN_SLOW_TESTS"))




@pytest.fixture
def pg_db() -> Iterator[PgDatabase]:
    """A new empty database on the local server, dropped after the test."""
    problem = postgres_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    db = PgDatabase.create()
    try:
        yield db
    finally:
        db.drop()
