"""``relayburnd blocks``: 5-hour billing windows, as Claude subscription limits count them.

A block starts at its first request, floored to the hour (in UTC, so in zones
with half-hour offsets it starts at :30 local time), and ends 5 hours later. A
request at or after the end, or 5 hours or more after the previous request,
starts a new block. Per block: requests, tokens, cost and the burn rate over
its active span (first to last request): tokens per minute and USD per hour,
none when the span is zero. The block holding "now" is active and also gets a
projection: its totals plus the burn rate over the time left until its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..records import Turn
from ..storage.base import Filter, StorageAdapter
from .load import TurnTotals, billable_turns
from .render import Col, fmt_int, fmt_list, fmt_num, fmt_usd, iso_time

BLOCK_MS = 5 * 3_600_000
HOUR_MS = 3_600_000


@dataclass
class Block(TurnTotals):
    start_ms: int
    first_ms: int
    last_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + BLOCK_MS

    def add(self, t: Turn) -> None:
        self.last_ms = t.ts
        self.add_turn(t)

    def tokens_per_minute(self) -> float | None:
        span = self.last_ms - self.first_ms
        return self.total_tokens / (span / 60_000) if span > 0 else None

    def usd_per_hour(self) -> float | None:
        span = self.last_ms - self.first_ms
        return self.cost_usd / (span / HOUR_MS) if span > 0 else None

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms

    def as_dict(self, tz: str, now_ms: int) -> dict[str, Any]:
        tpm, uph = self.tokens_per_minute(), self.usd_per_hour()
        active = self.is_active(now_ms)
        out: dict[str, Any] = {
            "start": iso_time(self.start_ms, tz),
            "end": iso_time(self.end_ms, tz),
            "active": active,
            "first_request": iso_time(self.first_ms, tz),
            "last_request": iso_time(self.last_ms, tz),
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_requests": self.unpriced_requests,
            "tokens_per_minute": tpm,
            "usd_per_hour": uph,
            "models": sorted(self.models),
            "remaining_minutes": None,
            "projected_total_tokens": None,
            "projected_cost_usd": None,
        }
        if active:
            left = self.end_ms - now_ms
            out["remaining_minutes"] = left / 60_000
            out["projected_total_tokens"] = self.total_tokens + (tpm or 0.0) * left / 60_000
            out["projected_cost_usd"] = self.cost_usd + (uph or 0.0) * left / HOUR_MS
        return out


def split_blocks(turns: list[Turn]) -> list[Block]:
    """Turns sorted by time -> 5-hour blocks (see the module docstring)."""
    blocks: list[Block] = []
    cur: Block | None = None
    for t in turns:
        if cur is None or t.ts >= cur.end_ms or t.ts - cur.last_ms >= BLOCK_MS:
            cur = Block(start_ms=t.ts - t.ts % HOUR_MS, first_ms=t.ts, last_ms=t.ts)
            blocks.append(cur)
        cur.add(t)
    return blocks


def block_rows(adapter: StorageAdapter, flt: Filter) -> list[Block]:
    return split_blocks(billable_turns(adapter, flt))


def columns() -> list[Col]:
    def short(v: Any) -> str:
        return "-" if v is None else str(v)[:16].replace("T", " ")

    return [
        Col("start", "Start", short, right=False),
        Col("end", "End", short, right=False),
        Col("active", "", lambda v: "ACTIVE" if v else "", right=False),
        Col("requests", "Requests", fmt_int),
        Col("total_tokens", "Tokens", fmt_int),
        Col("cost_usd", "Cost (USD)", fmt_usd),
        Col("tokens_per_minute", "Tokens/min", fmt_num),
        Col("usd_per_hour", "USD/h", fmt_usd),
        Col("projected_total_tokens", "Projected tokens", fmt_int),
        Col("projected_cost_usd", "Projected USD", fmt_usd),
        Col("models", "Models", fmt_list, right=False),
    ]
