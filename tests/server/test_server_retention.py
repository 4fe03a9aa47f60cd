"""Content retention through the server: ``POST /v1/content/prune``, ``content prune`` over
http, and the server applying its own RELAYBURN_CONTENT_TTL_DAYS on a schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from server_support import TOKENS, ServerProcess, client_settings, running, sqlite_env

from relayburnd import retention
from relayburnd.config import load_settings
from relayburnd.errors import SinkMisconfigured
from relayburnd.records import Batch, ContentRecord, Record, make_id, seal
from relayburnd.storage import open_adapter
from relayburnd.storage.http import HttpAdapter
from relayburnd.storage.http_wire import PRUNE_PATH
from tests.conftest import run_cli

DAY = 86_400_000


def content(key: str, session: str, ts: int) -> ContentRecord:
    rec = seal(ContentRecord(id=make_id("retention", session, key), source="claude",
                             session_id=session, ts=ts, message_id="m", role="user",
                             block_type="text", text=f"text {key}"))
    assert isinstance(rec, ContentRecord)
    return rec


def client(server: ServerProcess, tmp_path: Path, token: str = "ops") -> HttpAdapter:
    adapter = open_adapter(client_settings(server.url, tmp_path / f"client-{token}",
                                           TOKENS[token]))
    assert isinstance(adapter, HttpAdapter)
    return adapter


class TestPruneEndpoint:
    def test_prune_through_the_adapter(self, sqlite_server: ServerProcess,
                                       tmp_path: Path) -> None:
        """The http adapter's prune deletes on the server and returns the count."""
        ops = client(sqlite_server, tmp_path)
        now = int(time.time() * 1000)
        recs: list[Record] = [content("old", "s-prune", now - 40 * DAY),
                              content("new", "s-prune", now)]
        ops.write(Batch(recs))
        assert ops.prune_content(now - 30 * DAY) == 1
        assert [r.id for r in ops.content("s-prune")] == [recs[1].id]
        assert ops.prune_content(now - 30 * DAY) == 0
        ops.close()

    @pytest.mark.parametrize("token", ["writer", "reader"])
    def test_limited_tokens_may_not_prune(self, sqlite_server: ServerProcess, tmp_path: Path,
                                          token: str) -> None:
        """A write-only or read-only token gets 403, and the message names the fix."""
        limited = client(sqlite_server, tmp_path, token)
        with pytest.raises(SinkMisconfigured, match="403 forbidden") as err:
            limited.prune_content(2**62)
        assert "not limited with :read or :write" in str(err.value)
        limited.close()

    @pytest.mark.parametrize("query", [
        "", "?before_ms=", "?before_ms=soon", "?before_ms=1.5", "?before_ms=99999999999999999999",
        "?before_ms=1&before_ms=2", "?days=3",
    ])
    def test_bad_parameters(self, sqlite_server: ServerProcess, query: str) -> None:
        """A missing, malformed or unknown parameter is 400 invalid_parameter."""
        resp = httpx.post(sqlite_server.url + PRUNE_PATH + query,
                          headers=sqlite_server.headers(), timeout=10)
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_parameter"

    def test_answer(self, sqlite_server: ServerProcess) -> None:
        """The answer names the count and the cutoff; GET is not allowed."""
        url = sqlite_server.url + PRUNE_PATH
        resp = httpx.post(url + "?before_ms=-5", headers=sqlite_server.headers(), timeout=10)
        assert resp.status_code == 200 and resp.json() == {"removed": 0, "before_ms": -5}
        assert httpx.get(url, headers=sqlite_server.headers(), timeout=10).status_code == 405

    def test_content_prune_command_over_http(self, sqlite_server: ServerProcess,
                                             tmp_path: Path) -> None:
        """`relayburnd content prune` with RELAYBURN_STORAGE=http prunes the server's store."""
        ops = client(sqlite_server, tmp_path)
        now = int(time.time() * 1000)
        ops.write(Batch([content("a", "s-cli", now - 9 * DAY), content("b", "s-cli", now)]))
        env = {"RELAYBURN_STORAGE": "http", "RELAYBURN_HTTP_URL": sqlite_server.url,
               "RELAYBURN_HOME": str(tmp_path / "cli-home"),
               "RELAYBURN_HTTP_TOKEN": TOKENS["ops"]}
        out = run_cli("content", "prune", "--days", "5", env=env).stdout
        assert out.startswith("removed 1 content record(s) older than 5 day(s)")
        assert len(ops.content("s-cli")) == 1
        denied = run_cli("content", "prune", "--days", "0", check=False,
                         env={**env, "RELAYBURN_HTTP_TOKEN": TOKENS["writer"]})
        assert denied.returncode == 1
        assert len(denied.stderr.strip().splitlines()) == 1 and "403" in denied.stderr
        assert len(ops.content("s-cli")) == 1
        ops.close()

    def test_daemon_hook_leaves_the_shared_store_to_the_server(
            self, sqlite_server: ServerProcess, tmp_path: Path) -> None:
        """The hourly hook of a host shipping over http neither prunes nor asks the server."""
        ops = client(sqlite_server, tmp_path)
        ops.write(Batch([content("x", "s-hook", 1)]))
        settings = client_settings(sqlite_server.url, tmp_path / "hook-home", TOKENS["ops"])
        assert settings.content_ttl_days == 90
        assert retention.maybe_prune(settings, now_ms=10**13) is None
        assert retention.maybe_prune(settings, ops, now_ms=10**13) is None
        assert len(ops.content("s-hook")) == 1
        assert not (tmp_path / "hook-home" / "retention.json").exists()
        ops.close()


class TestServerRetention:
    def test_the_server_prunes_its_store_by_its_own_setting(self, tmp_path: Path) -> None:
        """A server with RELAYBURN_CONTENT_TTL_DAYS removes older content shortly after it
        starts and records when; usage records stay."""
        env = sqlite_env(tmp_path, RELAYBURN_CONTENT_TTL_DAYS="30")
        store = open_adapter(load_settings(env={k: v for k, v in env.items()
                                                if k.startswith("RELAYBURN_")}))
        now = int(time.time() * 1000)
        old = [content(str(i), "s-ttl", now - (31 + i) * DAY) for i in range(5)]
        new = content("new", "s-ttl", now - 29 * DAY)
        store.write(Batch([*old, new]))
        store.close()
        with running(env, tmp_path / "server.log") as server:
            ops = client(server, tmp_path)
            deadline = time.monotonic() + 30
            while len(ops.content("s-ttl")) > 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [r.id for r in ops.content("s-ttl")] == [new.id]
            ops.close()
            state = json.loads((tmp_path / "server-home" / "retention.json").read_text())
            assert now - 60_000 < state["last_prune_ms"] <= int(time.time() * 1000)
            lines = [json.loads(line) for line in server.log().splitlines()
                     if line.startswith("{")]
            pruned = [e for e in lines if e.get("event") == "content.pruned"]
            assert pruned and pruned[0]["removed"] == 5
