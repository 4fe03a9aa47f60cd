"""Fuzzing the API from its own OpenAPI document (schemathesis), kept small and quick.

Every operation of ``/openapi.json`` gets generated requests, valid ones and
invalid ones (wrong types, missing fields, out-of-range values), sent to a real
SQLite-backed server with a valid token. Each answer must be documented for its
operation, carry the documented content type and body shape, never be a 5xx,
and an invalid request must never be accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from server_support import TOKENS, ServerProcess, sqlite_env

MAX_EXAMPLES = 12
THOROUGH_EXAMPLES = 150
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(sqlite_env(root), root / "server.log")
    try:
        yield server
    finally:
        server.stop()


def _load(server: ServerProcess, examples: int) -> Any:
    config = SchemathesisConfig.from_dict({
        "seed": 20261121,
        "generation": {"mode": "all", "max-examples": examples, "database": "none"},
        "output": {"sanitization": {"enabled": False}},  # show tokens: they are test ones
        "auth": {"openapi": {"bearer": {"bearer": TOKENS["ops"]}}},
    })
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> Any:
    return _load(fuzz_server, MAX_EXAMPLES)


@pytest.fixture(scope="module")
def api_schema_thorough(fuzz_server: ServerProcess) -> Any:
    return _load(fuzz_server, THOROUGH_EXAMPLES)


schema = schemathesis.pytest.from_fixture("api_schema")
thorough = schemathesis.pytest.from_fixture("api_schema_thorough")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case: Any, fuzz_server: ServerProcess) -> None:
    """Generated requests, valid and invalid, get documented answers and never a 5xx."""
    case.call_and_validate(checks=CHECKS)


@pytest.mark.slow
@thorough.parametrize()
@settings(max_examples=THOROUGH_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented_thoroughly(case: Any, fuzz_server: ServerProcess) -> None:
    """The same, with many more examples and a random seed (slow)."""
    case.call_and_validate(checks=CHECKS)

