"""Codex and OpenCode fixtures through the real CLI: ``ingest`` then
``summary --by day,model --tz UTC --json`` give the correct figures of the synthetic
README (Codex tuples normalised: input = input - cached, cache read = cached)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PUBLIC, SYNTHETIC, run_cli

# case -> (input uncached, output, cache_write, cache_read, reasoning, models)
CODEX: dict[str, tuple[int, int, int, int, int, set[str]]] = {
    "x01-normal": (17000 - 9500, 420, 0, 9500, 220, {"gpt-5.2-codex"}),
    "x02-reemit": (3000 - 800, 300, 0, 800, 0, None),  # type: ignore[dict-item]
    "x03-total-only": (2500 - 900, 180, 0, 900, 70, None),  # type: ignore[dict-item]
    "x04-no-model": (500, 50, 0, 0, 0, {"unknown"}),
    "x05-fork-replay": (3500 - 2000, 230, 0, 2000, 0, None),  # type: ignore[dict-item]
    "x06-subagent-replay": (2800 - 1000, 190, 0, 1000, 0, None),  # type: ignore[dict-item]
    "x07-identical-real": (20 - 4, 6, 0, 4, 0, None),  # type: ignore[dict-item]
    "x08-total-reset": (6500 - 1300, 290, 0, 1300, 0, None),  # type: ignore[dict-item]
    "x09-archived-copy": (400, 40, 0, 0, 0, {"gpt-5.2-codex"}),
}


def _ingest(env: dict[str, str], tz: str = "UTC") -> dict[str, Any]:
    run_cli("ingest", env=env)
    out = run_cli("summary", "--by", "day,model", "--tz", tz, "--json", env=env)
    return dict(json.loads(out.stdout))


def _totals(summary: dict[str, Any]) -> tuple[int, int, int, int, int]:
    t = summary["totals"]
    return (t["input_tokens"], t["output_tokens"], t["cache_write_tokens"],
            t["cache_read_tokens"], t["reasoning_tokens"])


class TestCodexFixtures:
    """Every synthetic Codex case and the public Codex fixtures."""

    @pytest.mark.parametrize("case", sorted(CODEX))
    def test_correct_figures(self, case: str) -> None:
        """ingest + summary report the README's correct tokens for the case."""
        summary = _ingest({"CODEX_HOME": str(SYNTHETIC / "codex" / case)})
        *tokens, models = CODEX[case]
        assert _totals(summary) == tuple(tokens)
        assert {r["day"] for r in summary["rows"]} == {"2026-01-05"}
        if models is not None:
            assert {r["model"] for r in summary["rows"]} == models

    def test_all_cases_together(self, tmp_path: Path) -> None:
        """All cases in one CODEX_HOME: the sum of the cases, the shared parent once.

        x05 and x06 ship the same parent rollout (thread ...05a: 2200 input, 900 cached,
        150 output), so combined it counts once.
        """
        home = tmp_path / "codex"
        for case in sorted((SYNTHETIC / "codex").iterdir()):
            shutil.copytree(case, home, dirs_exist_ok=True)
        summary = _ingest({"CODEX_HOME": str(home)})
        shared_parent = (2200 - 900, 150, 0, 900, 0)
        expected = [sum(v[i] for v in CODEX.values()) - shared_parent[i] for i in range(5)]
        assert list(_totals(summary)) == expected

    @pytest.mark.parametrize(("folder", "days"), [
        ("ccusage/codex", {"2026-05-13": (750, 125, 250, 75), "2026-05-14": (2000, 300, 500, 200)}),
        ("ccusage/codex-branch-history", {"2026-05-12": (1300, 450, 300, 40)}),
    ])
    def test_public_fixtures_match_reference(
        self, folder: str, days: dict[str, tuple[int, int, int, int]]
    ) -> None:
        """The public rollouts give the reference tracker's days (it is right on these)."""
        summary = _ingest({"CODEX_HOME": str(PUBLIC / folder)})
        got: dict[str, list[int]] = {}
        for r in summary["rows"]:
            d = got.setdefault(r["day"], [0, 0, 0, 0])
            for i, k in enumerate(("input_tokens", "output_tokens", "cache_read_tokens",
                                   "reasoning_tokens")):
                d[i] += r[k]
        assert {k: tuple(v) for k, v in got.items()} == days

    @pytest.mark.parametrize("folder", ["claude-code-log/codex", "agentsview/codex"])
    def test_rollouts_without_token_events(self, folder: str, tmp_path: Path) -> None:
        """Legacy, malformed and token-less rollouts: no usage, no crash, text kept."""
        home = tmp_path / "codex"
        shutil.copytree(PUBLIC / folder, home)
        env = {"CODEX_HOME": str(home), "RELAYBURN_HOME": str(tmp_path / "h")}
        proc = run_cli("ingest", env=env)
        summary = json.loads(run_cli("summary", "--json", env=env).stdout)
        assert summary["totals"]["requests"] == 0
        assert "records:" in proc.stdout
        assert "Traceback" not in proc.stderr
        if folder == "claude-code-log/codex":
            assert "unknown_kind" in proc.stdout  # the unknown record type is counted
            assert list((tmp_path / "h" / "content").glob("*.jsonl"))

    def test_malformed_last_line(self, tmp_path: Path) -> None:
        """A rollout whose last line is not JSON: the line is counted, the rest read."""
        home = tmp_path / "codex"
        shutil.copytree(PUBLIC / "claude-code-log" / "codex" / "malformed", home)
        env = {"CODEX_HOME": str(home), "RELAYBURN_HOME": str(tmp_path / "h")}
        proc = run_cli("ingest", env=env)
        assert "1 invalid_json" in proc.stdout
        dead = (tmp_path / "h" / "deadletter.jsonl").read_text().splitlines()
        assert len(dead) == 1 and json.loads(dead[0])["reason"] == "invalid_json"


class TestOpenCodeFixtures:
    """The OpenCode JSON tree and database cases."""

    def test_json_storage(self) -> None:
        """o01: step-level usage (the multi-step message counted per step)."""
        summary = _ingest({"OPENCODE_DATA_DIR": str(SYNTHETIC / "opencode" / "o01-json-storage")})
        assert _totals(summary) == (1214, 600, 5500, 26800, 120)

    def test_database_wins_over_stale_json(self) -> None:
        """o02: the database row wins; its logged cost is kept."""
        summary = _ingest({"OPENCODE_DATA_DIR": str(SYNTHETIC / "opencode" / "o02-sqlite")})
        assert _totals(summary)[:4] == (4, 300, 1500, 20000)
        assert summary["totals"]["cost_usd"] == pytest.approx(0.0213, abs=1e-9)

    def test_corrupt_database_reported_in_one_line(self, tmp_path: Path) -> None:
        """A corrupt opencode.db is reported in one line; the JSON tree is still read."""
        data = tmp_path / "opencode"
        shutil.copytree(SYNTHETIC / "opencode" / "o01-json-storage", data)
        (data / "opencode.db").write_bytes(b"this is not a database" * 100)
        env = {"OPENCODE_DATA_DIR": str(data), "RELAYBURN_HOME": str(tmp_path / "h")}
        proc = run_cli("ingest", env=env)
        warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 1 and "opencode.db" in warnings[0]
        assert "Traceback" not in proc.stderr
        summary = json.loads(run_cli("summary", "--json", env=env).stdout)
        assert summary["totals"]["output_tokens"] == 600

    def test_truncated_json_is_retried(self, tmp_path: Path) -> None:
        """A message file caught mid-write is not lost: picked up once complete."""
        data = tmp_path / "opencode"
        shutil.copytree(SYNTHETIC / "opencode" / "o01-json-storage", data)
        msg = next(p for p in sorted((data / "storage" / "message").rglob("*.json"))
                   if json.loads(p.read_text()).get("role") == "assistant")
        full = msg.read_bytes()
        msg.write_bytes(full[: len(full) // 2])
        env = {"OPENCODE_DATA_DIR": str(data), "RELAYBURN_HOME": str(tmp_path / "h")}
        run_cli("ingest", env=env)
        msg.write_bytes(full)
        run_cli("ingest", env=env)
        summary = json.loads(run_cli("summary", "--json", env=env).stdout)
        assert _totals(summary) == (1214, 600, 5500, 26800, 120)

    def test_locked_database_does_not_stop_ingest(self, tmp_path: Path) -> None:
        """An exclusively locked opencode.db is reported and skipped, then read later."""
        data = tmp_path / "opencode"
        shutil.copytree(SYNTHETIC / "opencode" / "o02-sqlite", data)
        env = {"OPENCODE_DATA_DIR": str(data), "RELAYBURN_HOME": str(tmp_path / "h")}
        lock = sqlite3.connect(data / "opencode.db", timeout=0.1)
        lock.execute("PRAGMA locking_mode=EXCLUSIVE")
        lock.execute("BEGIN EXCLUSIVE")
        try:
            proc = run_cli("ingest", env=env)
            assert "Traceback" not in proc.stderr
        finally:
            lock.rollback()
            lock.close()
        run_cli("ingest", env=env)
        summary = json.loads(run_cli("summary", "--json", env=env).stdout)
        assert _totals(summary)[:4] == (4, 300, 1500, 20000)


class TestAllAgents:
    """``summary --by source`` covers the three agents at once."""

    def test_by_source(self, tmp_path: Path) -> None:
        """One ingest over Claude, Codex and OpenCode fixtures; one row per agent."""
        env = {
            "CLAUDE_CONFIG_DIR": str(SYNTHETIC / "claude" / "c01-streaming-split"),
            "CODEX_HOME": str(SYNTHETIC / "codex" / "x01-normal"),
            "OPENCODE_DATA_DIR": str(SYNTHETIC / "opencode" / "o02-sqlite"),
        }
        run_cli("ingest", env=env)
        out = json.loads(run_cli("summary", "--by", "source", "--json", env=env).stdout)
        rows = {r["source"]: r for r in out["rows"]}
        assert set(rows) == {"claude", "codex", "opencode"}
        assert rows["claude"]["output_tokens"] == 187
        assert rows["codex"]["output_tokens"] == 420
        assert rows["opencode"]["output_tokens"] == 300
        only = json.loads(run_cli("summary", "--by", "source", "--source", "codex", "--json",
                                  env=env).stdout)
        assert [r["source"] for r in only["rows"]] == ["codex"]
