"""An independent, batch reference for Claude usage (format spec 2.10), used as a test oracle.

Deliberately simple and separate from the product's parser: stdlib json, whole
files, no streaming state.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _candidates(obj: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    out: list[tuple[dict[str, Any], bool]] = []
    msg = obj.get("message")
    kind = obj.get("type")
    if kind == "assistant" or (
        kind is None and isinstance(msg, dict) and msg.get("role") == "assistant"
    ):
        out.append((obj, bool(obj.get("isSidechain"))))
    data = obj.get("data")
    if kind == "progress" and isinstance(data, dict) and data.get("type") == "agent_progress":
        nested = data.get("message")
        if isinstance(nested, dict) and nested.get("type") == "assistant":
            out.append((nested, True))
    return out


def expected_rows(root: Path, tz: Any = UTC) -> dict[tuple[str, str], list[int]]:
    """(day, model label) -> [requests, input, output, cache_write, cache_read]."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in sorted(root.rglob("*.jsonl")):
        raw = path.read_bytes()
        for line in raw.split(b"\n")[:-1] if not raw.endswith(b"\n") else raw.split(b"\n"):
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(obj, dict):
                continue
            for entry, side in _candidates(obj):
                msg = entry.get("message")
                if not isinstance(msg, dict):
                    continue
                usage = msg.get("usage")
                if not isinstance(usage, dict) or msg.get("model") == "<synthetic>":
                    continue
                ts = _ts(entry.get("timestamp"))
                if ts is None:
                    continue
                session = obj.get("sessionId") or path.stem
                req = entry.get("requestId")
                key = (msg.get("id"), req) if req else (msg.get("id"), "session", session)
                if msg.get("id") is None:
                    key = ("line", path, entry.get("uuid"), entry.get("timestamp"))
                out = usage.get("output_tokens") or 0
                cur = best.get(key)
                if cur is None or out >= cur["out"]:
                    cc = usage.get("cache_creation")
                    if isinstance(cc, dict):
                        cw = (cc.get("ephemeral_5m_input_tokens") or 0) + (
                            cc.get("ephemeral_1h_input_tokens") or 0
                        )
                    else:
                        cw = usage.get("cache_creation_input_tokens") or 0
                    model = msg.get("model") or "unknown"
                    if usage.get("speed") == "fast":
                        model += "-fast"
                    best[key] = {
                        "out": out,
                        "in": usage.get("input_tokens") or 0,
                        "cw": cw,
                        "cr": usage.get("cache_read_input_tokens") or 0,
                        "ts": ts,
                        "model": model,
                        "side": side,
                        "mid": msg.get("id"),
                    }
    main_ids = {v["mid"] for v in best.values() if not v["side"] and v["mid"]}
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for v in best.values():
        if v["side"] and v["mid"] in main_ids:
            continue  # a sidechain replay of a main-thread response
        day = v["ts"].astimezone(tz).date().isoformat()
        row = rows[(day, v["model"])]
        row[0] += 1
        row[1] += v["in"]
        row[2] += v["out"]
        row[3] += v["cw"]
        row[4] += v["cr"]
    return dict(rows)
