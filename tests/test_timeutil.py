"""Timestamp parsing: the fast path for ``...SS.mmmZ`` agrees with datetime everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relayburnd.timeutil import to_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _reference(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31)))
def test_z_form_matches_datetime(naive: datetime) -> None:
    dt = naive.replace(microsecond=naive.microsecond // 1000 * 1000, tzinfo=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    assert to_ms(text) == _reference(dt)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-10T13:26:31.147Z", 1770729991147),
        ("2026-02-10T13:26:31Z", 1770729991000),
        ("2026-02-10T13:26:31.147123Z", 1770729991147),
        ("2026-02-10T14:26:31.147+01:00", 1770729991147),
        ("2026-02-10T13:26:31.147", 1770729991147),  # naive is UTC
        (1770729991147, 1770729991147),
        (1770729991.147, 1770729991147),
        ("1770729991", 1770729991000),
    ],
)
def test_forms(value: object, expected: int) -> None:
    assert to_ms(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-02-10T13:26:60.000Z",  # no leap seconds in the fast path or in datetime
        "2026-02-10T13:60:31.147Z",
        "2026-02-10T24:26:31.147Z",
        "2026-02-30T13:26:31.147Z",
        "2026-02-10T13:26:3x.147Z",
        "2026-02-10T13:26:31.1x7Z",
        "2026-02-10T13:26:+1.147Z",
        "",
        "   ",
        None,
        True,
        -5,
        0,
        [],
    ],
)
def test_unusable_values_give_none(value: object) -> None:
    assert to_ms(value) is None
