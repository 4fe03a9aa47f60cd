"""The OpenAPI 3.1 document of the server, generated from the structs it speaks.

Request and response schemas come from msgspec (``schema_components``) over
the very structs the server decodes and encodes (``records.Record``,
``http_wire``), so the document cannot describe a shape the server does not
use. What the structs cannot say is added here, so that a client (or a
fuzzer) generating from the document produces what the server accepts:
ids are 32 lowercase hex, session ids match ``is_safe_session_id``, integers
fit in 64 bits, and text outside conversation content holds no NUL (SQL text
columns cannot). Every status an operation can answer is listed with the
error body, so "an undocumented status" is a finding, not noise.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import __version__
from ..records import KIND_OF, ContentRecord
from ..storage import http_wire as wire
from ..storage.base import DIMENSIONS, SummaryResult
from .errors import CODES

REF = "#/components/schemas/{name}"
ID_PATTERN = "^[0-9a-f]{32}$"
SESSION_PATTERN = "^(?!.*[.][.])[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$"
NO_NUL = "^[^\\x00]*$"
_RECORD_SCHEMAS = [t.__name__ for t in KIND_OF]
_CONTENT_TEXT = ("ContentRecord", "text")


def _int64(schema: dict[str, Any]) -> None:
    schema["minimum"], schema["maximum"] = wire.INT64_MIN, wire.INT64_MAX


def _constrain(name: str, prop: str, schema: dict[str, Any]) -> None:
    """Add what the server checks beyond the types to one property schema."""
    for option in schema.get("anyOf", [schema]):
        kind = option.get("type")
        if kind == "integer":
            _int64(option)
        elif kind == "string" and (name, prop) != _CONTENT_TEXT:
            option["pattern"] = NO_NUL
    if prop == "id" and name in _RECORD_SCHEMAS:
        schema.update(pattern=ID_PATTERN)
    elif prop in ("session_id", "parent_session_id"):
        schema.update(pattern=SESSION_PATTERN, maxLength=200)


def _components() -> dict[str, Any]:
    _, comps = msgspec.json.schema_components(
        [wire.BatchBody, wire.BatchAccepted, wire.ErrorBody, wire.StreamEnd, wire.Health,
         wire.ContentPruned, SummaryResult, list[ContentRecord]],
        ref_template=REF,
    )
    for name in [*_RECORD_SCHEMAS, "ToolCall"]:
        for prop, schema in comps[name]["properties"].items():
            _constrain(name, prop, schema)
    comps["ErrorBody"]["properties"]["error"]["enum"] = sorted(
        {code for codes in CODES.values() for code in codes})
    return dict(comps)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        codes = ", ".join(CODES[status])
        out[str(status)] = {
            "description": f"error: {codes}",
            "content": {wire.JSON: {"schema": _ref("ErrorBody")}},
        }
        if status in (401,):
            out[str(status)]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 503:
            out[str(status)]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_TEXT = {"type": "string", "pattern": NO_NUL, "maxLength": 1000}
_FILTER_PARAMETERS = [
    _query("since_ms", {"type": "integer", "minimum": wire.INT64_MIN,
                        "maximum": wire.INT64_MAX}, "Epoch milliseconds, inclusive."),
    _query("until_ms", {"type": "integer", "minimum": wire.INT64_MIN,
                        "maximum": wire.INT64_MAX}, "Epoch milliseconds, exclusive."),
    _query("session", _TEXT, "Only this session (relationships: as child or parent)."),
    _query("project", _TEXT, "Only this project; empty selects records without one."),
    _query("model", _TEXT, "Only this model label (turns), e.g. claude-opus-4-5-fast."),
    {**_query("source", {"type": "array", "items": {
        "type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"}},
        "Only these agents (repeatable)."), "style": "form", "explode": True},
]
_DIMENSION = "(" + "|".join(DIMENSIONS) + ")"
_SUMMARY_PARAMETERS = [
    _query("by", {"type": "string", "pattern": f"^{_DIMENSION}(,{_DIMENSION})*$"},
           "Comma-separated dimensions, each at most once (default day)."),
    _query("tz", {"type": "string", "pattern": "^[A-Za-z0-9_+/-]{1,64}$"},
           "UTC or an IANA time zone for day/week/month buckets (default UTC)."),
    *_FILTER_PARAMETERS,
]
_PUBLIC: list[dict[str, list[str]]] = []


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        wire.BATCHES_PATH: {"post": {
            "operationId": "postBatch",
            "summary": "Store a batch of records (idempotent).",
            "description": "The body may be compressed (Content-Encoding: zstd or gzip). "
                           "Records are validated before anything is written; one transaction "
                           "stores them all or none.",
            "requestBody": {"required": True,
                            "content": {wire.JSON: {"schema": _ref("BatchBody")}}},
            "responses": {
                "200": {"description": "stored; counts per kind",
                        "content": {wire.JSON: {"schema": _ref("BatchAccepted")}}},
                **_errors(400, 401, 403, 408, 413, 415, 422, 503),
            },
        }},
        wire.SUMMARY_PATH: {"get": {
            "operationId": "getSummary",
            "summary": "Token and cost totals grouped by dimensions.",
            "parameters": _SUMMARY_PARAMETERS,
            "responses": {
                "200": {"description": "rows and totals",
                        "content": {wire.JSON: {"schema": _ref("SummaryResult")}}},
                **_errors(400, 401, 403, 503),
            },
        }},
        wire.CONTENT_PATH: {"get": {
            "operationId": "getSessionContent",
            "summary": "A session's content records in conversation order.",
            "parameters": [{"name": "session_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": SESSION_PATTERN,
                                       "maxLength": 200}}],
            "responses": {
                "200": {"description": "content records",
                        "content": {wire.JSON: {"schema": {"type": "array",
                                                           "items": _ref("ContentRecord")}}}},
                **_errors(400, 401, 403, 404, 503),
            },
        }},
        wire.PRUNE_PATH: {"post": {
            "operationId": "pruneContent",
            "summary": "Delete stored content records older than before_ms.",
            "description": "Needs a token limited to neither read nor write. Deletes in "
                           "short transactions, oldest first; asking again is harmless.",
            "parameters": [{**_query("before_ms", {"type": "integer", "minimum": wire.INT64_MIN,
                                                   "maximum": wire.INT64_MAX},
                                     "Epoch milliseconds: content with an earlier timestamp "
                                     "is deleted."), "required": True}],
            "responses": {
                "200": {"description": "deleted; how many",
                        "content": {wire.JSON: {"schema": _ref("ContentPruned")}}},
                **_errors(400, 401, 403, 503),
            },
        }},
        wire.HEALTH_PATH: {"get": {
            "operationId": "getHealth",
            "summary": "The token is accepted and the store is reachable.",
            "responses": {
                "200": {"description": "ready",
                        "content": {wire.JSON: {"schema": _ref("Health")}}},
                **_errors(401, 503),
            },
        }},
    }
    for kind, (path, method) in wire.LISTINGS.items():
        paths[path] = {"get": {
            "operationId": "list" + "".join(w.title() for w in method.split("_")),
            "summary": f"Stored {kind} records matching the filter, as NDJSON: one record "
                       "per line, then a closing line {\"end\": true, \"count\": N} (or an "
                       "error body if the store failed mid-way).",
            "parameters": _FILTER_PARAMETERS,
            "responses": {
                "200": {"description": "NDJSON stream",
                        "content": {wire.NDJSON: {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403, 503),
            },
        }}
    ok = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for path, summary, statuses in (("/healthz", "The process is up.", ()),
                                    ("/readyz", "The store is reachable.", (503,))):
        paths[path] = {"get": {
            "operationId": path.strip("/"), "summary": summary, "security": _PUBLIC,
            "responses": {"200": {"description": "ok", "content": {wire.JSON: {"schema": ok}}},
                          **_errors(*statuses)},
        }}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus metrics.", "security": _PUBLIC,
        "responses": {"200": {"description": "text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }}
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document.", "security": _PUBLIC,
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {wire.JSON: {"schema": {"type": "object"}}}}},
    }}
    return paths


def openapi_document() -> bytes:
    """The document served at ``/openapi.json``."""
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "relayburnd server",
            "version": __version__,
            "description": "Ingest and query API in front of relayburnd's SQLite or PostgreSQL "
                           "store. Errors are {\"error\": code, \"message\": text}.",
        },
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
    return msgspec.json.encode(doc)
