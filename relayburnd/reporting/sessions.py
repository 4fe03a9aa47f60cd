"""``relayburnd sessions``: one row per session with cost, tokens, duration, models, turns.

Numbers cover the report's scope only: a session that ran across ``--until``
shows the requests and user turns inside the range, and its start and end are
its first and last request or user turn in the range. Requests are counted as
``summary --by session`` counts them, so the two always agree. With
``--model`` a session is listed when it made a request with that model, and
only those requests count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..archive_schema import RELATION_ORDER
from ..storage.base import Filter, StorageAdapter
from .load import TurnTotals, billable_turns, user_turn_filter
from .render import Col, fmt_duration, fmt_int, fmt_list, fmt_usd, iso_time

SORT_KEYS = ("cost", "tokens", "start", "duration")


@dataclass
class SessionRow(TurnTotals):
    session_id: str
    source: str = ""
    project: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    user_turns: int = 0
    relation: str = "root"
    parent_session_id: str | None = None

    def seen(self, ts: int) -> None:
        self.start_ms = ts if self.start_ms is None else min(self.start_ms, ts)
        self.end_ms = ts if self.end_ms is None else max(self.end_ms, ts)

    @property
    def duration_ms(self) -> int:
        if self.start_ms is None or self.end_ms is None:
            return 0
        return self.end_ms - self.start_ms

    def as_dict(self, tz: str) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "source": self.source,
            "project": self.project,
            "start": iso_time(self.start_ms, tz),
            "end": iso_time(self.end_ms, tz),
            "duration_s": self.duration_ms / 1000,
            "requests": self.requests,
            "user_turns": self.user_turns,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_requests": self.unpriced_requests,
            "models": sorted(self.models),
            "relation": self.relation,
            "parent_session_id": self.parent_session_id,
        }


def session_rows(adapter: StorageAdapter, flt: Filter) -> list[SessionRow]:
    """Per-session totals within ``flt`` (unsorted)."""
    rows: dict[str, SessionRow] = {}
    for t in billable_turns(adapter, flt):
        row = rows.get(t.session_id)
        if row is None:
            row = rows[t.session_id] = SessionRow(t.session_id, t.source, t.project)
        row.project = row.project or t.project
        row.seen(t.ts)
        row.add_turn(t)
    for u in adapter.user_turns(user_turn_filter(flt)):
        row = rows.get(u.session_id)
        if row is None:
            if flt.model is not None:
                continue
            row = rows[u.session_id] = SessionRow(u.session_id, u.source, u.project)
        row.project = row.project or u.project
        row.seen(u.ts)
        row.user_turns += 1
    if rows:
        links: dict[str, tuple[int, str, str]] = {}
        for rel in adapter.relationships(Filter(sources=flt.sources)):
            if rel.session_id in rows:
                key = (_relation_rank(rel.relation), rel.relation, rel.parent_session_id)
                links[rel.session_id] = min(links.get(rel.session_id, key), key)
        for sid, (_, relation, parent) in links.items():
            rows[sid].relation, rows[sid].parent_session_id = relation, parent
    return list(rows.values())


def _relation_rank(relation: str) -> int:
    """The relationship shown when a session has several (as in the archive's sessions)."""
    order = RELATION_ORDER
    return order.index(relation) if relation in order else len(order)


def sort_rows(rows: list[SessionRow], key: str, limit: int | None) -> list[SessionRow]:
    """Largest first (for ``start``: newest first); ties by session id."""
    metric = {
        "cost": lambda r: r.cost_usd,
        "tokens": lambda r: r.total_tokens,
        "start": lambda r: r.start_ms or 0,
        "duration": lambda r: r.duration_ms,
    }[key]
    out = sorted(rows, key=lambda r: r.session_id)
    out.sort(key=metric, reverse=True)
    return out[:limit] if limit is not None else out


def columns() -> list[Col]:
    return [
        Col("session_id", "Session", right=False),
        Col("source", "Agent", right=False),
        Col("project", "Project", right=False),
        Col("start", "Start", _short_time, right=False),
        Col("duration_s", "Duration", lambda v: fmt_duration(None if v is None else v * 1000)),
        Col("requests", "Requests", fmt_int),
        Col("user_turns", "User turns", fmt_int),
        Col("total_tokens", "Tokens", fmt_int),
        Col("cost_usd", "Cost (USD)", fmt_usd),
        Col("models", "Models", fmt_list, right=False),
    ]


def _short_time(iso: Any) -> str:
    """``2026-02-01T10:00:00+01:00`` -> ``2026-02-01 10:00`` (already in the report's zone)."""
    return "-" if iso is None else str(iso)[:16].replace("T", " ")


def totals(rows: list[SessionRow]) -> dict[str, Any]:
    return {
        "session_id": f"{len(rows)} session(s)",
        "requests": sum(r.requests for r in rows),
        "user_turns": sum(r.user_turns for r in rows),
        "total_tokens": sum(r.total_tokens for r in rows),
        "cost_usd": sum(r.cost_usd for r in rows),
        "unpriced_requests": sum(r.unpriced_requests for r in rows),
    }
