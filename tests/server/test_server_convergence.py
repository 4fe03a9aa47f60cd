"""Several hosts ship overlapping copies of the same sessions to one server at once, and the
result is exactly what the same hosts produce writing to PostgreSQL directly.

Each "host" is a ``relayburnd ingest`` process with its own RELAYBURN_HOME and its
own copies of the shared fixture sessions (different paths and inodes, as on
different machines); the sets overlap, so most sessions arrive from two or three
hosts, concurrently. The reference is the same three ingests, concurrently, into
a fresh database through the postgres adapter.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_support import TOKENS, ServerProcess, base_env, postgres_env
from storage_support import PgServer, pg_settings

from relayburnd.records import ContentRecord
from relayburnd.storage import StorageAdapter, open_adapter
from relayburnd.storage.base import SummarySpec
from tests.conftest import PUBLIC, REPO, SYNTHETIC
from tests.support import rounded

pytestmark = pytest.mark.postgres

CLAUDE = sorted(p for p in (SYNTHETIC / "claude").iterdir() if p.is_dir())
CODEX = sorted(p for p in (SYNTHETIC / "codex").iterdir() if p.is_dir())
OPENCODE = sorted(p for p in (SYNTHETIC / "opencode").iterdir() if p.is_dir())
PUBLIC_CLAUDE = [PUBLIC / "ccusage" / "claude", PUBLIC / "claude-code-log" / "claude"]


def host_trees(root: Path) -> list[dict[str, str]]:
    """Three hosts' agent directories: overlapping halves and everything."""
    picks = [
        (CLAUDE[:9] + PUBLIC_CLAUDE[:1], CODEX[:6], OPENCODE[:1]),
        (CLAUDE[5:] + PUBLIC_CLAUDE, CODEX[3:], OPENCODE),
        (CLAUDE + PUBLIC_CLAUDE, CODEX, OPENCODE[1:]),
    ]
    hosts = []
    for i, (claude, codex, opencode) in enumerate(picks):
        dirs: dict[str, list[str]] = {"CLAUDE_CONFIG_DIR": [], "CODEX_HOME": [],
                                      "OPENCODE_DATA_DIR": []}
        for var, cases in (("CLAUDE_CONFIG_DIR", claude), ("CODEX_HOME", codex),
                           ("OPENCODE_DATA_DIR", opencode)):
            for case in cases:
                dst = root / f"host{i}" / var / f"{case.parent.name}-{case.name}"
                shutil.copytree(case, dst)
                dirs[var].append(str(dst))
        hosts.append({var: ",".join(paths) for var, paths in dirs.items()})
    return hosts


def ingest_all(hosts: list[dict[str, str]], root: Path, store: dict[str, str]) -> None:
    """Run every host's ``relayburnd ingest`` at once; each must deliver everything."""
    procs = []
    for i, dirs in enumerate(hosts):
        env = base_env(RELAYBURN_HOME=str(root / f"home{i}"), RELAYBURN_LOG_LEVEL="warning",
                       **dirs, **store)
        procs.append(subprocess.Popen([sys.executable, "-m", "relayburnd", "ingest"], env=env,
                                      cwd=str(REPO), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"ingest exited {proc.returncode}: {out}\n{err}"


def everything(adapter: StorageAdapter) -> dict[str, object]:
    turns = sorted(adapter.turns(), key=lambda r: r.id)
    sessions = sorted({t.session_id for t in turns})
    content: dict[str, list[ContentRecord]] = {s: adapter.content(s) for s in sessions}
    return {
        "turns": turns,
        "user_turns": sorted(adapter.user_turns(), key=lambda r: r.id),
        "compactions": sorted(adapter.compactions(), key=lambda r: r.id),
        "tool_results": sorted(adapter.tool_results(), key=lambda r: r.id),
        "relationships": sorted(adapter.relationships(), key=lambda r: r.id),
        "content": content,
        # costs are sums of floats: the order PostgreSQL adds them in may differ
        "summary": rounded(adapter.summary(
            SummarySpec(by=("source", "day", "model", "session"))).as_dict()),
    }


def test_hosts_shipping_through_the_server_converge_like_direct_postgres(
    pg: PgServer, tmp_path: Path
) -> None:
    """Same rows, same content order, same report, whichever way the hosts shipped."""
    hosts = host_trees(tmp_path / "trees")
    via_server_db, direct_db = pg.new_database("via"), pg.new_database("direct")
    server = ServerProcess(postgres_env(tmp_path / "srv", via_server_db), tmp_path / "server.log")
    try:
        ingest_all(hosts, tmp_path / "http", {"RELAYBURN_STORAGE": "http",
                                              "RELAYBURN_HTTP_URL": server.url,
                                              "RELAYBURN_HTTP_TOKEN": TOKENS["writer"]})
        # Once more: nothing new, and nothing changes.
        ingest_all(hosts, tmp_path / "http", {"RELAYBURN_STORAGE": "http",
                                              "RELAYBURN_HTTP_URL": server.url,
                                              "RELAYBURN_HTTP_TOKEN": TOKENS["writer"]})
        stored = server.metric("relayburnd_server_records_total", outcome="inserted")
        absorbed = server.metric("relayburnd_server_records_total", outcome="unchanged")
    finally:
        server.stop()
    ingest_all(hosts, tmp_path / "direct", {"RELAYBURN_STORAGE": "postgres",
                                            "RELAYBURN_PG_DSN": direct_db})
    via = open_adapter(pg_settings(via_server_db, tmp_path / "read-via"))
    direct = open_adapter(pg_settings(direct_db, tmp_path / "read-direct"))
    try:
        got, want = everything(via), everything(direct)
        assert len(want["turns"]) > 50 and any(want["content"].values())  # type: ignore[arg-type]
        assert got == want
        assert stored >= len(want["turns"])  # type: ignore[arg-type]
        assert absorbed > 0  # overlapping hosts delivered copies the store already had
    finally:
        via.close()
        direct.close()
