"""The corpus generator (``bench/corpus.py``): deterministic, and its books match its files.

The parity suite trusts ``expected.json`` as ground truth, so the generator's own
bookkeeping is checked here against a minimal reader written from the format
spec's reading rules for Claude Code (section 2.10), independent of relayburnd's
parser and of ccusage.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = {"claude_mb": 3, "codex_mb": 1, "opencode_sessions": 3}
TIMING_KEYS = ("generation_seconds", "generation_cpu_seconds")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_corpus_gen", REPO / "bench" / "corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_corpus_gen"] = module
    spec.loader.exec_module(module)
    return module


def _digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if rel == "expected.json":
            doc = json.loads(data)
            for key in TIMING_KEYS:
                doc.pop(key, None)
            data = json.dumps(doc, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("gen") / "a"
    expected = _generator().generate(root, seed=11, **SMALL)
    return root, expected


def test_same_seed_same_bytes(small: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = small
    again = tmp_path / "b"
    _generator().generate(again, seed=11, **SMALL)
    assert _digest_tree(root) == _digest_tree(again)


def test_other_seed_other_corpus(small: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = small
    other = tmp_path / "c"
    _generator().generate(other, seed=12, **SMALL)
    a, b = _digest_tree(root), _digest_tree(other)
    assert a["expected.json"] != b["expected.json"]
    assert len(set(a.values()) & set(b.values())) < len(a) // 100 + 1


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("")
    with pytest.raises(SystemExit):
        _generator().generate(tmp_path / "x", seed=1, **SMALL)


def test_layout_and_sizes(small: tuple[Path, dict[str, Any]]) -> None:
    root, expected = small
    claude = list((root / "claude" / "projects").rglob("*.jsonl"))
    assert any("/subagents/agent-" in p.as_posix() for p in claude)
    assert list((root / "codex" / "sessions").rglob("rollout-*.jsonl"))
    assert list((root / "opencode" / "storage" / "message").rglob("msg_*.json"))
    assert expected["bytes"]["claude"] >= SMALL["claude_mb"] * 1_000_000
    assert expected["bytes"]["claude"] == sum(
        p.stat().st_size for p in claude)
    assert expected["sources"]["claude"]["total"]["requests"] > 100


def test_expected_totals_add_up(small: tuple[Path, dict[str, Any]]) -> None:
    _, expected = small
    for agent, src in expected["sources"].items():
        grand: dict[str, float] = defaultdict(float)
        for day in src["days"].values():
            summed: dict[str, float] = defaultdict(float)
            for cell in day["models"].values():
                for k, v in cell.items():
                    summed[k] += v
            for k, v in day["total"].items():
                assert summed[k] == pytest.approx(v), (agent, k)
                grand[k] += v
        for k, v in src["total"].items():
            assert grand[k] == pytest.approx(v), (agent, k)


# ---------------------------------------------------------------- Claude oracle


def _claude_oracle(projects: Path) -> dict[tuple[str, str], dict[str, int]]:
    """Spec 2.10: one record per request key, largest output, sidechain replays dropped."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(projects.rglob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            entry = None
            if line.get("type") == "assistant" and "usage" in (line.get("message") or {}):
                entry = line
            elif line.get("type") == "progress":
                nested = (line.get("data") or {}).get("message") or {}
                if "usage" in (nested.get("message") or {}):
                    entry = {**nested, "sessionId": line.get("sessionId")}
            if entry is None:
                continue
            msg = entry["message"]
            if msg.get("model") == "<synthetic>":
                continue
            key = (msg["id"], entry.get("requestId") or f"session:{entry.get('sessionId')}")
            usage = msg["usage"]
            split = usage.get("cache_creation")
            write = (split["ephemeral_5m_input_tokens"] + split["ephemeral_1h_input_tokens"]
                     if split else usage.get("cache_creation_input_tokens", 0))
            rec = {
                "ts": datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")),
                "model": msg["model"] + ("-fast" if usage.get("speed") == "fast" else ""),
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "cache_write_tokens": write,
                "cache_read_tokens": usage.get("cache_read_input_tokens", 0),
                "sidechain": bool(entry.get("isSidechain")),
                "message_id": msg["id"],
            }
            cur = records.get(key)
            if cur is None or rec["output_tokens"] >= cur["output_tokens"]:
                if cur is not None:
                    rec["sidechain"] = rec["sidechain"] and cur["sidechain"]
                records[key] = rec
            else:
                cur["sidechain"] = cur["sidechain"] and rec["sidechain"]
    main_ids = {r["message_id"] for r in records.values() if not r["sidechain"]}
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for rec in records.values():
        if rec["sidechain"] and rec["message_id"] in main_ids:
            continue
        cell = totals.setdefault((rec["ts"].date().isoformat(), rec["model"]),
                                 defaultdict(int))
        cell["requests"] += 1
        for f in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
            cell[f] += rec[f]
    return totals


def test_claude_books_match_files(small: tuple[Path, dict[str, Any]]) -> None:
    root, expected = small
    got = _claude_oracle(root / "claude" / "projects")
    want = {
        (day, model): {f: cell[f] for f in ("requests", "input_tokens", "output_tokens",
                                            "cache_write_tokens", "cache_read_tokens")}
        for day, d in expected["sources"]["claude"]["days"].items()
        for model, cell in d["models"].items()
    }
    assert {k: dict(v) for k, v in got.items()} == want
