"""Timestamp parsing shared by the sources: any RFC 3339 / ISO 8601 form, or epoch numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=4096)
def _parse_iso(value: str) -> int | None:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


@lru_cache(maxsize=4096)
def _day_ms(day: str) -> int | None:
    try:
        return (datetime.strptime(day, "%Y-%m-%d").toordinal() - _EPOCH_ORDINAL) * 86_400_000
    except ValueError:
        return None


def _fast_ms(v: str) -> int | None:
    """The common ``YYYY-MM-DDTHH:MM:SS.mmmZ`` form without datetime objects."""
    day = _day_ms(v[:10])
    if day is None or v[10] != "T" or v[13] != ":" or v[16] != ":":
        return None
    try:
        hh, mm, ss, ms = int(v[11:13]), int(v[14:16]), int(v[17:19]), int(v[20:23])
    except ValueError:
        return None
    if hh > 23 or mm > 59 or ss > 59 or not v[20:23].isdigit():
        return None
    return day + hh * 3_600_000 + mm * 60_000 + ss * 1000 + ms


def to_ms(value: object) -> int | None:
    """Epoch milliseconds from an ISO string (any fraction digits, Z or offset, naive = UTC)
    or an epoch number (seconds, or milliseconds when above 1e10). None when unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if value <= 0:
            return None
        return int(value if value > 1e10 else value * 1000)
    if isinstance(value, str):
        if len(value) == 24 and value[23] == "Z" and value[19] == ".":
            fast = _fast_ms(value)
            if fast is not None:
                return fast
        v = value.strip()
        if not v:
            return None
        if v[0].isdigit() and v.replace(".", "", 1).isdigit():
            return to_ms(float(v))
        return _parse_iso(v)
    return None


def iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, for display."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
