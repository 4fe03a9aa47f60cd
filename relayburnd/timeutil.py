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


_minute_ms: dict[str, int | None] = {}
# ":SS" -> milliseconds and ".mmmZ" -> milliseconds: a lookup both checks and converts.
# Filled on the first timestamp, so a start with nothing to parse does not build them.
_SECOND_MS: dict[str, int] = {}
_MILLI_Z: dict[str, int] = {}


def _minute(prefix: str) -> int | None:
    """Epoch ms of ``YYYY-MM-DDTHH:MM`` (None when it is not that form)."""
    day = _day_ms(prefix[:10])
    hh, mm = prefix[11:13], prefix[14:16]
    if (day is None or prefix[10] != "T" or prefix[13] != ":" or not hh.isdigit()
            or not mm.isdigit() or int(hh) > 23 or int(mm) > 59):
        return None
    return day + int(hh) * 3_600_000 + int(mm) * 60_000


def to_ms(value: object) -> int | None:
    """Epoch milliseconds from an ISO string (any fraction digits, Z or offset, naive = UTC)
    or an epoch number (seconds, or milliseconds when above 1e10). None when unusable.

    The common ``YYYY-MM-DDTHH:MM:SS.mmmZ`` form costs three dictionary lookups
    and no datetime objects: lines of a log share their minute, so the date and
    time of day are looked up by that prefix (``_minute_ms``, filled on first
    sight), and seconds and milliseconds by their few characters. Any other
    value misses one of the lookups and is parsed in full.
    """
    try:
        return _minute_ms[value[:16]] + _SECOND_MS[value[16:19]] + _MILLI_Z[value[19:]]  # type: ignore[index,operator]
    except (KeyError, TypeError):
        return _to_ms_first_sight(value)


def _to_ms_first_sight(value: object) -> int | None:
    if not _MILLI_Z:
        _SECOND_MS.update({f":{s:02d}": s * 1000 for s in range(60)})
        _MILLI_Z.update({f".{m:03d}Z": m for m in range(1000)})
    if type(value) is str and len(value) == 24:
        prefix = value[:16]
        if prefix not in _minute_ms:
            if len(_minute_ms) > 65_536:
                _minute_ms.clear()
            _minute_ms[prefix] = _minute(prefix)
        base = _minute_ms[prefix]
        second = _SECOND_MS.get(value[16:19])
        milli = _MILLI_Z.get(value[19:])
        if base is not None and second is not None and milli is not None:
            return base + second + milli
    return _to_ms_general(value)


def _to_ms_general(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if value <= 0:
            return None
        return int(value if value > 1e10 else value * 1000)
    if isinstance(value, str):
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
