"""``relayburnd serve``: what it refuses to start with, and how tokens are read and checked."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_support import TOKENS, ServerProcess, base_env, client_settings, sqlite_env
from storage_corpus import turn

from relayburnd.errors import ConfigError
from relayburnd.records import Batch
from relayburnd.server.auth import TokenSet, bearer, parse_tokens
from relayburnd.storage.http import HttpAdapter
from tests.conftest import run_cli


def refusal(*args: str, code: int = 2, **env: str) -> str:
    """The one stderr line of a refused start (exit code 2 for settings, 1 for the store)."""
    proc = run_cli("serve", "--port", "1", *args, env=env, check=False, timeout=30)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


class TestRefusals:
    @pytest.mark.parametrize("storage", ["file", "http"])
    def test_file_and_http_are_not_backing_stores(self, storage: str) -> None:
        """The server stores into sqlite or postgres only."""
        line = refusal(RELAYBURN_STORAGE=storage, RELAYBURN_SERVER_TOKENS=TOKENS["ops"])
        assert line == (f"Error: RELAYBURN_STORAGE={storage}: relayburnd serve stores into "
                        "sqlite or postgres; set RELAYBURN_STORAGE=sqlite or "
                        "RELAYBURN_STORAGE=postgres")

    def test_no_token(self) -> None:
        """Without a token and without --insecure-no-auth it does not start."""
        assert refusal(RELAYBURN_STORAGE="sqlite").startswith("Error: no server token configured")

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
    def test_no_auth_only_on_loopback(self, host: str) -> None:
        """--insecure-no-auth is refused on any address other people can reach."""
        line = refusal("--insecure-no-auth", "--host", host, RELAYBURN_STORAGE="sqlite")
        assert line.startswith(f"Error: --insecure-no-auth is refused on {host}")

    def test_no_auth_conflicts_with_tokens(self) -> None:
        """Tokens and --insecure-no-auth together are a mistake, not a choice."""
        line = refusal("--insecure-no-auth", RELAYBURN_STORAGE="sqlite",
                       RELAYBURN_SERVER_TOKENS=TOKENS["ops"])
        assert "conflicts" in line

    def test_invalid_token_is_named_not_shown(self) -> None:
        """A malformed token entry is named by position; its value is never printed."""
        line = refusal(RELAYBURN_STORAGE="sqlite", RELAYBURN_SERVER_TOKENS="ci:short-secret")
        assert "entry 1 is invalid" in line and "short-secret" not in line

    def test_unreadable_tokens_file(self, tmp_path: Path) -> None:
        """A tokens file that cannot be read stops the start with its path."""
        line = refusal(RELAYBURN_STORAGE="sqlite",
                       RELAYBURN_SERVER_TOKENS_FILE=str(tmp_path / "missing"))
        assert "RELAYBURN_SERVER_TOKENS_FILE" in line and "missing" in line


    def test_unusable_store(self) -> None:
        """A store that cannot be opened stops the start with one line naming it."""
        line = refusal(code=1, RELAYBURN_STORAGE="sqlite", RELAYBURN_SERVER_TOKENS=TOKENS["ops"],
                       RELAYBURN_SQLITE_PATH="/dev/null/store.sqlite")
        assert "/dev/null/store.sqlite" in line


class TestStarts:
    def test_insecure_loopback_needs_no_token(self, tmp_path: Path) -> None:
        """On 127.0.0.1 with --insecure-no-auth, queries and batches need no token."""
        env = base_env(RELAYBURN_HOME=str(tmp_path / "h"), RELAYBURN_STORAGE="sqlite",
                       RELAYBURN_SQLITE_PATH=str(tmp_path / "s.sqlite"))
        server = ServerProcess(env, tmp_path / "server.log", "--insecure-no-auth")
        try:
            resp = httpx.get(f"{server.url}/v1/health")
            assert resp.status_code == 200 and resp.json()["token"] == "anonymous"
            assert httpx.get(f"{server.url}/v1/turns").text == '{"end":true,"count":0}\n'
        finally:
            server.stop()

    def test_tokens_file(self, tmp_path: Path) -> None:
        """Tokens from a file (comments and blank lines skipped) are accepted by name."""
        path = tmp_path / "tokens"
        path.write_text(f"# hosts\n\nlaptop:{'l' * 24}\nreader:{'b' * 24}:read\n{'c' * 30}\n")
        env = sqlite_env(tmp_path, RELAYBURN_SERVER_TOKENS="",
                         RELAYBURN_SERVER_TOKENS_FILE=str(path))
        server = ServerProcess(env, tmp_path / "server.log")
        try:
            names = {}
            for token in ("l" * 24, "c" * 30):
                resp = httpx.get(f"{server.url}/v1/health",
                                 headers={"Authorization": f"Bearer {token}"})
                names[token[0]] = resp.json()["token"]
            assert names == {"l": "laptop", "c": "token3"}
            assert httpx.get(f"{server.url}/v1/health", headers={
                "Authorization": f"Bearer {TOKENS['ops']}"}).status_code == 401
        finally:
            server.stop()


    def test_workers_share_the_port_and_their_metrics(self, tmp_path: Path) -> None:
        """With --workers 2, batches from concurrent clients all land, /metrics counts them all
        whichever worker answers, and SIGTERM stops the whole group with exit code 0."""
        server = ServerProcess(sqlite_env(tmp_path), tmp_path / "server.log", "--workers", "2")
        try:
            def ship(i: int) -> int:
                adapter = HttpAdapter(client_settings(server.url, tmp_path / f"c{i}"))
                try:
                    rnd = random.Random(i)
                    return sum(adapter.write(Batch([turn(rnd, i * 100 + k)])).inserted
                               for k in range(5))
                finally:
                    adapter.close()

            with ThreadPoolExecutor(4) as pool:
                assert sum(pool.map(ship, range(4))) == 20
            for _ in range(3):  # several scrapes, possibly different workers: the same sums
                assert server.metric("relayburnd_server_batches_total", result="stored") == 20
            started = time.monotonic()
            assert server.stop() == 0 and time.monotonic() - started < 15
        finally:
            server.stop()


class TestTokens:
    def test_forms(self) -> None:
        """Bare tokens are named by position; names and scopes are read from the entry."""
        tokens = parse_tokens(f"{'a' * 16}, ci:{'b' * 16}:write,dash:{'c' * 16}:read", "")
        assert tokens.names == ["token1", "ci", "dash"]
        assert tokens.check("a" * 16).scopes == frozenset({"read", "write"})  # type: ignore[union-attr]
        assert tokens.check("b" * 16).scopes == frozenset({"write"})  # type: ignore[union-attr]
        assert tokens.check("c" * 16).name == "dash"  # type: ignore[union-attr]
        assert tokens.check("b" * 15) is None and tokens.check("") is None

    @pytest.mark.parametrize("value", ["short", "a:b:c:d", f"x:{'a' * 16}:admin",
                                       f"bad name:{'a' * 16}", f"{'a' * 16},{'a' * 16}",
                                       f"n:{'a' * 16},n:{'b' * 16}", "tab\there-and-there"])
    def test_invalid(self, value: str) -> None:
        """Malformed, duplicate or scope-less entries are refused without echoing tokens."""
        with pytest.raises(ConfigError) as info:
            parse_tokens(value, "")
        assert "a" * 16 not in str(info.value)

    def test_bearer_header(self) -> None:
        """Only ``Bearer <token>`` carries a token (scheme case-insensitive)."""
        assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
        assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None

    def test_every_token_is_compared(self) -> None:
        """A match does not stop the comparison: the last token is found like the first."""
        tokens = TokenSet([])
        assert tokens.check("anything") is None
        many = parse_tokens(",".join(f"n{i}:{i:016d}" for i in range(50)), "")
        assert many.check(f"{49:016d}").name == "n49"  # type: ignore[union-attr]
        assert many.check(f"{0:016d}").name == "n0"  # type: ignore[union-attr]
