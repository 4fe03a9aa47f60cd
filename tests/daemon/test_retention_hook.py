"""The running daemon applies content retention on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SYNTHETIC


class TestRetentionInTheLoop:
    """``relayburnd run`` prunes content older than RELAYBURN_CONTENT_TTL_DAYS."""

    def test_old_content_is_pruned_while_running(self, tmp_path: Path) -> None:
        """Content dated months ago is stored, then removed by the daemon; usage stays."""
        home = tmp_path / "h"
        env = {**os.environ, "RELAYBURN_HOME": str(home),
               "CLAUDE_CONFIG_DIR": str(SYNTHETIC / "claude" / "c01-streaming-split"),
               "RELAYBURN_CONTENT_TTL_DAYS": "30", "RELAYBURN_FLUSH_INTERVAL": "0.2",
               "RELAYBURN_IDLE_GRACE": "0"}
        subprocess.run([sys.executable, "-m", "relayburnd", "ingest"], env=env, check=True,
                       capture_output=True)
        assert list((home / "content").glob("*.jsonl"))
        proc = subprocess.Popen([sys.executable, "-m", "relayburnd", "run"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            pruned = False
            while time.monotonic() < deadline:
                ledger = home / "ledger.jsonl"
                stored = ledger.exists() and '"kind":"turn"' in ledger.read_text()
                if stored and (home / "retention.json").exists() and not list(
                        (home / "content").glob("*.jsonl")):
                    pruned = True
                    break
                time.sleep(0.2)
            assert pruned, "content was not pruned by the running daemon"
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        summary = subprocess.run([sys.executable, "-m", "relayburnd", "summary", "--json"],
                                 env=env, capture_output=True, text=True, check=True)
        assert json.loads(summary.stdout)["totals"]["output_tokens"] == 187
