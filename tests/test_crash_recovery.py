"""A crash at any step between reading and committing the cursor, then a re-run, leaves
exactly the store a clean run leaves: nothing lost, nothing doubled (F01, F02)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import PUBLIC, SYNTHETIC, run_cli

TREE = PUBLIC / "claude-code-log" / "claude"


def _store(home: Path) -> dict[str, str]:
    """id -> rank of every record (ledger and content), folded."""
    out: dict[str, str] = {}
    files = [home / "ledger.jsonl", *sorted((home / "content").glob("*.jsonl"))]
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["id"] not in out or rec["rank"] > out[rec["id"]]:
                out[rec["id"]] = rec["rank"]
    return out


def _physical_lines(home: Path) -> Counter[str]:
    lines: Counter[str] = Counter()
    for path in [home / "ledger.jsonl", *sorted((home / "content").glob("*.jsonl"))]:
        if path.exists():
            lines.update(path.read_text().splitlines())
    return lines


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("clean")
    run_cli(
        "ingest",
        "--source",
        "claude",
        env={
            "RELAYBURN_HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(TREE),
            "RELAYBURN_BATCH_MAX_RECORDS": "7",
        },
    )
    return _store(home)


class TestCrashBetweenWriteAndCommit:
    """SIGKILL at each step of the commit protocol, then a clean re-run."""

    @pytest.mark.parametrize(
        "point",
        [
            "after_ledger_write=kill@2",
            "after_sink_commit=kill@1",
            "after_sink_commit=kill@4",
            "before_checkpoint=kill@3",
            # the first checkpoint writes cursors.json, the later ones its journal
            "checkpoint_mid_tmp_write=kill@1",
            "checkpoint_after_tmp_fsync=kill@1",
            "journal_mid_write=kill@2",
            "journal_mid_write=kill@5",
        ],
    )
    def test_rerun_gives_the_clean_result(
        self, tmp_path: Path, point: str, clean_store: dict[str, str]
    ) -> None:
        """The killed run plus a re-run store exactly the clean run's records, once each."""
        env = {
            "RELAYBURN_HOME": str(tmp_path / "h"),
            "CLAUDE_CONFIG_DIR": str(TREE),
            "RELAYBURN_BATCH_MAX_RECORDS": "7",
            "RELAYBURN_CHECKPOINT_INTERVAL": "0",  # a checkpoint after every batch
        }
        crashed = run_cli(
            "ingest", "--source", "claude", env={**env, "RELAYBURN_FAULTS": point}, check=False
        )
        assert crashed.returncode == -signal.SIGKILL
        run_cli("ingest", "--source", "claude", env=env)
        assert _store(tmp_path / "h") == clean_store
        doubled = [line for line, n in _physical_lines(tmp_path / "h").items() if n > 1]
        assert doubled == []
        again = run_cli("ingest", "--source", "claude", env=env)
        assert "0 new, 0 updated" in again.stdout

    def test_repeated_crashes_converge(self, tmp_path: Path, clean_store: dict[str, str]) -> None:
        """Ten runs each killed after a different batch, then one clean run."""
        env = {
            "RELAYBURN_HOME": str(tmp_path / "h"),
            "CLAUDE_CONFIG_DIR": str(TREE),
            "RELAYBURN_BATCH_MAX_RECORDS": "7",
        }
        for n in range(1, 11):
            run_cli(
                "ingest",
                "--source",
                "claude",
                env={**env, "RELAYBURN_FAULTS": f"after_sink_commit=kill@{n}"},
                check=False,
            )
        run_cli("ingest", "--source", "claude", env=env)
        assert _store(tmp_path / "h") == clean_store


class TestSummaryAfterCrash:
    """The report after a crash and re-run equals the report of a clean run."""

    def test_summary_identical(self, tmp_path: Path) -> None:
        """c01 (a streamed response) killed mid-ingest reports the correct figures."""
        tree = SYNTHETIC / "claude" / "c05-agent-progress"
        env = {
            "RELAYBURN_HOME": str(tmp_path / "h"),
            "CLAUDE_CONFIG_DIR": str(tree),
            "RELAYBURN_BATCH_MAX_RECORDS": "2",
        }
        run_cli(
            "ingest",
            "--source",
            "claude",
            env={**env, "RELAYBURN_FAULTS": "after_sink_commit=kill@2"},
            check=False,
        )
        run_cli("ingest", "--source", "claude", env=env)
        out = json.loads(run_cli("summary", "--tz", "UTC", "--json", env=env).stdout)
        t = out["totals"]
        assert (t["input_tokens"], t["output_tokens"], t["cache_read_tokens"]) == (53, 85, 10000)
