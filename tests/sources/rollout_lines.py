"""Hand-made Codex rollout lines, for the source tests."""

from __future__ import annotations

import msgspec


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
