"""Helpers for the source tests: fixture locations and the store's merge rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import pytest

from relayburnd import records as R

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def _fold(records: Iterable[R.Record]) -> dict[str, R.Record]:
    """Seal and fold as a store would: per id, the record with the greatest rank."""
    return R.fold(R.seal(r) for r in records)  # type: ignore[return-value]


def _turn_sums(folded: dict[str, R.Record]) -> dict[str, int]:
    turns = [r for r in folded.values() if isinstance(r, R.Turn)]
    return {
        "input": sum(t.input_tokens for t in turns),
        "output": sum(t.output_tokens for t in turns),
        "cache_write": sum(t.cache_write_tokens for t in turns),
        "cache_read": sum(t.cache_read_tokens for t in turns),
        "reasoning": sum(t.reasoning_tokens for t in turns),
        "turns": len(turns),
    }


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def fold() -> Callable[[Iterable[R.Record]], dict[str, R.Record]]:
    return _fold


@pytest.fixture
def turn_sums() -> Callable[[dict[str, R.Record]], dict[str, int]]:
    return _turn_sums


class RolloutLines:
    """Builds Codex rollout lines (compact JSON, one per line) for hand-made cases."""

    @staticmethod
    def line(ts: str, kind: str, payload: dict[str, object]) -> bytes:
        return msgspec.json.encode({"timestamp": ts, "type": kind, "payload": payload}) + b"\n"

    @classmethod
    def meta(cls, ts: str, thread: str, **extra: object) -> bytes:
        return cls.line(ts, "session_meta", {"id": thread, "timestamp": ts, "cwd": "/w", **extra})

    @classmethod
    def context(cls, ts: str, model: str = "gpt-5.2-codex") -> bytes:
        return cls.line(ts, "turn_context", {"cwd": "/w", "model": model})

    @staticmethod
    def usage(vec: tuple[int, ...]) -> dict[str, int]:
        keys = (
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "reasoning_output_tokens",
            "total_tokens",
        )
        return dict(zip(keys, vec, strict=False))

    @classmethod
    def tokens(
        cls, ts: str, total: tuple[int, ...] | None = None, last: tuple[int, ...] | None = None
    ) -> bytes:
        info: dict[str, object] = {}
        if total is not None:
            info["total_token_usage"] = cls.usage(total)
        if last is not None:
            info["last_token_usage"] = cls.usage(last)
        return cls.line(ts, "event_msg", {"type": "token_count", "info": info})

    @classmethod
    def event(cls, ts: str, etype: str, **fields: object) -> bytes:
        return cls.line(ts, "event_msg", {"type": etype, **fields})

    @classmethod
    def item(cls, ts: str, itype: str, **fields: object) -> bytes:
        return cls.line(ts, "response_item", {"type": itype, **fields})


@pytest.fixture
def rollout() -> type[RolloutLines]:
    return RolloutLines
