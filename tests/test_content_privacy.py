"""Content modes and the privacy boundary (docs/state.md): with hash-only and off, prompt
and response text never leave the agent's files; state files and logs never hold content,
secrets or DSNs; an unsafe session id never becomes a path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

PROMPT = "PROMPT-MARKER-7f3a please refactor the parser"
ANSWER = "ANSWER-MARKER-91c2 here is the plan"
TOOL_OUT = "TOOLOUT-MARKER-55e1 total 12"
SECRET = "sk-ant-api03-" + "Q" * 40


def _session(root: Path, session_id: str = "22222222-bbbb-4bbb-8bbb-000000000001") -> Path:
    proj = root / "projects" / "-home-dev-app"
    proj.mkdir(parents=True, exist_ok=True)
    lines = [
        {"type": "user", "uuid": "u-1", "parentUuid": None, "sessionId": session_id,
         "timestamp": "2026-02-01T10:00:00.000Z", "cwd": "/home/dev/app",
         "message": {"role": "user", "content": f"{PROMPT} with key {SECRET}"}},
        {"type": "assistant", "uuid": "a-1", "parentUuid": "u-1", "sessionId": session_id,
         "timestamp": "2026-02-01T10:00:02.000Z", "cwd": "/home/dev/app", "requestId": "req_p1",
         "message": {"id": "msg_p1", "model": "claude-sonnet-4-20250514", "role": "assistant",
                     "content": [{"type": "text", "text": ANSWER},
                                 {"type": "tool_use", "id": "toolu_p1", "name": "Bash",
                                  "input": {"command": "ls -la"}}],
                     "stop_reason": "tool_use",
                     "usage": {"input_tokens": 5, "output_tokens": 40,
                               "cache_read_input_tokens": 100}}},
        {"type": "user", "uuid": "u-2", "parentUuid": "a-1", "sessionId": session_id,
         "timestamp": "2026-02-01T10:00:03.000Z", "cwd": "/home/dev/app",
         "message": {"role": "user", "content": [
             {"type": "tool_result", "tool_use_id": "toolu_p1", "content": TOOL_OUT}]}},
    ]
    path = proj / f"{session_id}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _all_bytes(home: Path, exclude_content: bool) -> bytes:
    out = b""
    for path in sorted(home.rglob("*")):
        if path.is_file() and not (exclude_content and path.parent.name == "content"):
            out += path.read_bytes()
    return out


class TestContentModes:
    """content.store = full | hash-only | off."""

    def test_full_keeps_text_in_order_and_redacts_secrets(self, tmp_path: Path) -> None:
        """Full mode stores the transcript in order, with the API key redacted."""
        claude = tmp_path / "claude"
        _session(claude)
        env = {"CLAUDE_CONFIG_DIR": str(claude), "RELAYBURN_HOME": str(tmp_path / "h")}
        run_cli("ingest", "--source", "claude", env=env)
        files = list((tmp_path / "h" / "content").glob("*.jsonl"))
        assert len(files) == 1
        recs = [json.loads(line) for line in files[0].read_text().splitlines()]
        texts = [r.get("text", "") for r in sorted(recs, key=lambda r: (r["ts"], r.get("seq", 0)))]
        assert PROMPT in texts[0] and SECRET not in texts[0]
        assert "[REDACTED:anthropic-key]" in texts[0]
        assert any(ANSWER in t for t in texts) and any(TOOL_OUT in t for t in texts)
        assert SECRET.encode() not in _all_bytes(tmp_path / "h", exclude_content=False)

    @pytest.mark.parametrize("mode", ["hash-only", "off"])
    def test_text_never_leaves_the_host_files(self, tmp_path: Path, mode: str) -> None:
        """hash-only keeps hashes and lengths only; off writes no content files at all."""
        claude = tmp_path / "claude"
        _session(claude)
        env = {"CLAUDE_CONFIG_DIR": str(claude), "RELAYBURN_HOME": str(tmp_path / "h"),
               "RELAYBURN_CONTENT_STORE": mode, "RELAYBURN_LOG_LEVEL": "debug"}
        proc = run_cli("ingest", "--source", "claude", env=env)
        stored = _all_bytes(tmp_path / "h", exclude_content=False)
        for marker in (PROMPT, ANSWER, TOOL_OUT, SECRET, "ls -la"):
            assert marker.encode() not in stored
            assert marker not in proc.stderr and marker not in proc.stdout
        content_files = list((tmp_path / "h" / "content").glob("*.jsonl"))
        if mode == "off":
            assert content_files == []
        else:
            recs = [json.loads(x) for f in content_files for x in f.read_text().splitlines()]
            assert recs and all("text" not in r and len(r["sha256"]) == 64 for r in recs)
            assert any(r["chars"] > 0 for r in recs)
        summary = json.loads(run_cli("summary", "--json", env=env).stdout)
        assert summary["totals"]["output_tokens"] == 40


class TestStatePrivacy:
    """State files and logs never hold content, prompts, tokens, passwords or DSNs."""

    def test_state_files_and_logs_are_clean(self, tmp_path: Path) -> None:
        """After a real ingest in full mode, only content/ holds conversation text."""
        claude = tmp_path / "claude"
        _session(claude)
        home = tmp_path / "h"
        env = {"CLAUDE_CONFIG_DIR": str(claude), "RELAYBURN_HOME": str(home),
               "RELAYBURN_LOG_LEVEL": "debug",
               "RELAYBURN_PG_DSN": "postgresql://u:hunter2secret@db.invalid/x",
               "RELAYBURN_HTTP_TOKEN": "tok-SUPERSECRET-123"}
        proc = run_cli("ingest", "--source", "claude", env=env)
        # a second session in a second pass: its cursor goes to the journal
        _session(claude, "22222222-bbbb-4bbb-8bbb-000000000002")
        again = run_cli("ingest", "--source", "claude", env=env)
        assert (home / "cursors.json.journal").exists()
        shown = run_cli("config", "show", env=env).stdout
        state = _all_bytes(home, exclude_content=True)
        for marker in (PROMPT, ANSWER, TOOL_OUT, SECRET, "ls -la", "hunter2secret",
                       "tok-SUPERSECRET-123"):
            assert marker.encode() not in state, marker
            assert marker not in proc.stderr and marker not in again.stderr
            assert marker not in shown
        cursors = json.loads((home / "cursors.json").read_text())
        assert cursors["version"] == 1 and len(cursors["files"]) == 1


class TestUnsafeSessionIds:
    """A session id from a log never becomes a path outside content/."""

    @pytest.mark.parametrize("evil", ["../../escape", "a/b", "/abs/path", ".hidden", ".."])
    def test_unsafe_session_id_is_dead_lettered(self, tmp_path: Path, evil: str) -> None:
        """Content of an unsafe session id is refused and dead-lettered; usage is kept."""
        claude = tmp_path / "claude"
        path = _session(claude)
        text = path.read_text().replace("22222222-bbbb-4bbb-8bbb-000000000001", evil)
        path.write_text(text)
        home = tmp_path / "h"
        env = {"CLAUDE_CONFIG_DIR": str(claude), "RELAYBURN_HOME": str(home)}
        run_cli("ingest", "--source", "claude", env=env)
        made = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
        assert all(str(p).startswith(("h/", "claude/", "home/", "empty")) for p in made), made
        assert list((home / "content").iterdir()) == []
        dead = [json.loads(x) for x in (home / "deadletter.jsonl").read_text().splitlines()]
        assert dead and all(d["kind"] == "content" and "file" in d for d in dead)
        summary = json.loads(run_cli("summary", "--json", "--by", "session", env=env).stdout)
        assert summary["totals"]["output_tokens"] == 40
