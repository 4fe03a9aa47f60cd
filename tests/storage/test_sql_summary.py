"""The SQL summary's time windows: exact even when a window straddles a local midnight."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from storage_corpus import corpus
from storage_support import Stores, assert_same_summary, pg_settings, truncate_all

from relayburnd.records import Batch, Turn, fold
from relayburnd.reports import summarize
from relayburnd.storage import postgres, sql_summary
from relayburnd.storage.base import SummarySpec
from relayburnd.storage.sql_summary import DAY_MS, window_ms


class TestWindows:
    def test_window_divides_every_offset(self) -> None:
        """The window is the gcd of a day and the zone's offsets over the range."""
        lo, hi = 1_700_000_000_000, 1_720_000_000_000
        assert window_ms(UTC, lo, hi) == DAY_MS
        assert window_ms(ZoneInfo("Asia/Tokyo"), lo, hi) == 3 * 3_600_000
        assert window_ms(ZoneInfo("America/St_Johns"), lo, hi) == 1_800_000
        assert window_ms(ZoneInfo("Asia/Kathmandu"), lo, hi) == 900_000
        assert window_ms(timezone(timedelta(hours=5, minutes=30)), lo, hi) == 1_800_000

    @pytest.mark.parametrize(
        "stores", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
    )
    @pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/St_Johns", "Asia/Kathmandu"])
    def test_straddling_windows_are_regrouped_exactly(
        self, stores: Stores, tz: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With windows forced to whole UTC days, reports still equal the reference."""
        monkeypatch.setattr(sql_summary, "window_ms", lambda tz, lo, hi: DAY_MS)
        adapter = stores.fresh()
        recs = corpus(seed=50, n=200)
        adapter.write(Batch(recs))
        turns = [r for r in fold(recs).values() if isinstance(r, Turn)]
        for by in [("day",), ("week", "model"), ("month", "source")]:
            spec = SummarySpec(by=by, tz=tz)
            assert_same_summary(adapter.summary(spec), summarize(turns, spec))  # type: ignore[arg-type]


@pytest.mark.postgres
class TestPostgresReplays:
    @pytest.mark.parametrize("inline", [0, 20_000], ids=["view", "inline-list"])
    def test_both_replay_paths_equal_the_reference(
        self, pg_dsn: str, tmp_path: Path, inline: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Replays are left out the same way through the view and through the id list."""
        monkeypatch.setattr(postgres, "_MAX_INLINE_REPLAYS", inline)
        truncate_all(pg_dsn)
        adapter = postgres.PostgresAdapter(pg_settings(pg_dsn, tmp_path))
        recs = corpus(seed=51, n=200)
        adapter.write(Batch(recs))
        turns = [r for r in fold(recs).values() if isinstance(r, Turn)]
        assert any(t.is_sidechain for t in turns)
        for by in [("day", "model"), ("session",)]:
            spec = SummarySpec(by=by, tz="UTC")
            assert_same_summary(adapter.summary(spec), summarize(turns, spec))  # type: ignore[arg-type]
        adapter.close()
