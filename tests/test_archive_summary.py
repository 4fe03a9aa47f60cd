"""`summary` on the file store reads the archive and equals ``reports.summarize`` exactly:
same rows, same integers, cost within 1e-9, in every time zone (half-hour, 45-minute and
historic local-mean-time offsets, DST edges) and with every filter."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import pytest

from relayburnd.archive_schema import SLOT_MS
from relayburnd.archive_summary import zone_pieces
from relayburnd.config import load_settings
from relayburnd.records import Record, Turn
from relayburnd.reports import date_range_filter, get_tz, summarize
from relayburnd.storage.base import Filter, SummaryResult, SummarySpec
from relayburnd.storage.file import FileAdapter
from tests.conftest import PUBLIC, SYNTHETIC, run_cli
from tests.test_archive import ledger_fold, turn, write

ZONES = ["UTC", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Europe/Paris", "Pacific/Chatham", "America/Los_Angeles"]
BYS = [("day",), ("day", "model"), ("week", "source"), ("month", "project"), ("session",),
       ("model",), ("day", "session", "model"), ("source", "month", "week")]


def assert_same(got: SummaryResult, want: SummaryResult) -> None:
    """Same rows and keys, identical integers, float cost within 1e-9."""
    g, w = got.as_dict(), want.as_dict()
    assert [_keys(r) for r in g["rows"]] == [_keys(r) for r in w["rows"]]  # type: ignore[union-attr]
    for a, b in zip([*g["rows"], g["totals"]], [*w["rows"], w["totals"]], strict=True):  # type: ignore[misc]
        assert a.pop("cost_usd") == pytest.approx(b.pop("cost_usd"), abs=1e-9)
        assert a == b


def _keys(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if not isinstance(v, int | float)}


def reference(home: Path, spec: SummarySpec) -> SummaryResult:
    turns = [r for r in ledger_fold(home).values() if isinstance(r, Turn)]
    return summarize(turns, spec)


@pytest.fixture(scope="module")
def fixture_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every Claude fixture (synthetic cases and public logs) ingested into one store."""
    home = tmp_path_factory.mktemp("fixtures") / "relayburn"
    dirs = [*sorted(p for p in (SYNTHETIC / "claude").iterdir() if p.is_dir()),
            PUBLIC / "ccusage" / "claude", PUBLIC / "claude-code-log" / "claude",
            PUBLIC / "agentsview" / "claude"]
    for d in dirs:
        run_cli("ingest", "--source", "claude",
                env={"RELAYBURN_HOME": str(home), "CLAUDE_CONFIG_DIR": str(d)})
    return home


@pytest.fixture
def fixture_store(fixture_home: Path) -> Iterator[FileAdapter]:
    adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(fixture_home)}))
    yield adapter
    adapter.close()


class TestFixtures:
    """The Claude fixtures, through the archive and through the reference."""

    @pytest.mark.parametrize("tz", ZONES)
    @pytest.mark.parametrize("by", BYS, ids=",".join)
    def test_by_and_tz(self, fixture_store: FileAdapter, fixture_home: Path,
                       by: tuple[str, ...], tz: str) -> None:
        """Every --by / --tz combination gives the reference rows."""
        spec = SummarySpec(by=by, tz=tz)
        result = fixture_store.summary(spec)
        assert result.rows
        assert_same(result, reference(fixture_home, spec))

    @pytest.mark.parametrize("flt", [
        Filter(model="claude-sonnet-4-20250514"),
        Filter(project="/home/dev/demo-app"),
        Filter(session_id="11111111-aaaa-4aaa-8aaa-000000000005"),
        Filter(sources=("claude",)),
        Filter(sources=("codex",)),
        Filter(model="claude-opus-4-6-fast"),
        Filter(model="nope"),
    ], ids=repr)
    def test_filters(self, fixture_store: FileAdapter, fixture_home: Path, flt: Filter) -> None:
        """Model, project, session and source filters select the reference rows."""
        for by in (("day", "model"), ("session",)):
            spec = SummarySpec(by=by, filter=flt, tz="Asia/Kolkata")
            assert_same(fixture_store.summary(spec), reference(fixture_home, spec))

    @pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/St_Johns"])
    def test_date_ranges(self, fixture_store: FileAdapter, fixture_home: Path, tz: str) -> None:
        """Inclusive local --since/--until dates, including one-day ranges."""
        for since, until in (("2026-01-05", "2026-01-05"), ("2026-01-06", None),
                             (None, "2026-01-05"), ("2025-01-01", "2027-12-31")):
            flt = date_range_filter(since, until, get_tz(tz))
            spec = SummarySpec(by=("day", "model"), filter=flt, tz=tz)
            assert_same(fixture_store.summary(spec), reference(fixture_home, spec))

    def test_cli_json_equals_reference(self, fixture_home: Path) -> None:
        """`summary --json` (a separate process, archive built on the way) prints the reference."""
        env = {"RELAYBURN_HOME": str(fixture_home)}
        out = run_cli("summary", "--by", "day,model", "--tz", "Asia/Kolkata", "--json",
                      env=env).stdout
        want = reference(fixture_home, SummarySpec(by=("day", "model"), tz="Asia/Kolkata"))
        got = json.loads(out)
        assert [_keys(r) for r in got["rows"]] == [_keys(r) for r in want.as_dict()["rows"]]  # type: ignore[union-attr]
        assert got["totals"]["requests"] == want.totals.requests
        assert got["totals"]["cost_usd"] == pytest.approx(want.totals.cost_usd, abs=1e-9)


def random_turns(seed: int, n: int) -> list[Record]:
    """Turns spread from 1880 (local mean time offsets) to 2030, clustered around DST edges."""
    rng = random.Random(seed)
    edges = [
        -2_840_140_800_000,  # 1880-01-01
        -1_640_995_200_000,  # 1918-01-01
        -880_000_000_000,    # 1942
        1_679_792_400_000,   # 2023-03-26 01:00 UTC, Europe DST starts
        1_698_541_200_000,   # 2023-10-29 01:00 UTC, Europe DST ends
        1_712_415_600_000,   # 2024-04-06/07 Lord Howe half-hour change
        1_767_225_600_000,   # 2026-01-01
    ]
    models = ["claude-sonnet-4-5", "claude-opus-4-1", None, "gpt-5"]
    recs: list[Record] = []
    for i in range(n):
        ts = rng.choice(edges) + rng.randrange(-3 * 86_400_000, 3 * 86_400_000)
        model = rng.choice(models)
        recs.append(turn(
            f"t{i}", f"s{rng.randrange(12)}", ts, model=model,
            source=rng.choice(["claude", "codex"]), project=rng.choice(["/a", "/b", ""]),
            inp=rng.randrange(1000), out=rng.randrange(500), cw=rng.randrange(50),
            cr=rng.randrange(5000), cost=None if rng.random() < 0.1 else rng.random() / 7,
            speed="fast" if rng.random() < 0.1 else None,
        ))
        if rng.random() < 0.05:  # a sidechain replay of that response
            recs.append(turn(f"t{i}-replay", f"s{rng.randrange(12)}", ts + 5000, model=model,
                             inp=1, out=1, cost=1.0, sidechain=True, message=f"msg-t{i}"))
    return recs


class TestEveryZone:
    """Random turns over 150 years of zone history."""

    @pytest.fixture(scope="class")
    def random_home(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        home = tmp_path_factory.mktemp("random")
        adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(home)}))
        recs = random_turns(7, 1500)
        for i in range(0, len(recs), 400):
            write(adapter, *recs[i : i + 400])
        adapter.close()
        return home

    @pytest.mark.parametrize("tz", [*ZONES, "Europe/Amsterdam", "Asia/Singapore",
                                    "America/Caracas", "Africa/Monrovia"])
    def test_zones(self, random_home: Path, tz: str) -> None:
        """Day, week and month buckets match the reference in the zone's whole history."""
        adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(random_home)}))
        try:
            for by in (("day",), ("week", "model"), ("month", "source", "project")):
                spec = SummarySpec(by=by, tz=tz)
                assert_same(adapter.summary(spec), reference(random_home, spec))
        finally:
            adapter.close()

    def test_bounds_off_slot_edges(self, random_home: Path) -> None:
        """Millisecond filter bounds inside a 15-minute slot are honoured exactly."""
        adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(random_home)}))
        rng = random.Random(3)
        try:
            turns = sorted(t.ts for t in adapter.turns())
            for _ in range(20):
                a, b = sorted(rng.sample(turns, 2))
                flt = Filter(since_ms=a + rng.randrange(-5, 5), until_ms=b + rng.randrange(-5, 5),
                             sources=rng.choice([(), ("codex",)]))
                for by, tz in ((("day", "model"), "Asia/Kathmandu"), (("source",), "UTC")):
                    spec = SummarySpec(by=by, filter=flt, tz=tz)
                    assert_same(adapter.summary(spec), reference(random_home, spec))
        finally:
            adapter.close()


class _OddZone(tzinfo):
    """UTC until 2026-01-05 23:07 UTC, then UTC+1: a change inside a 15-minute slot."""

    CHANGE = 1_767_654_420_000  # 2026-01-05T23:07:00Z

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is None:
            return timedelta(0)
        naive = dt.replace(tzinfo=None)
        return timedelta(hours=1) if naive >= datetime(2026, 1, 6, 0, 7) else timedelta(0)

    def fromutc(self, dt: datetime) -> datetime:
        ms = (dt.replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
        shift = timedelta(hours=1) if ms >= self.CHANGE else timedelta(0)
        return dt + shift

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "ODD"


class TestOffsetChangeInsideASlot:
    """A slot holding an offset change is summed per timestamp."""

    def test_pieces(self) -> None:
        """The slot with the change is its own exact piece."""
        zone = _OddZone()
        slot = _OddZone.CHANGE // SLOT_MS
        pieces = zone_pieces(zone, slot - 10, slot + 10)
        assert pieces == [(slot - 10, slot, 0), (slot, slot + 1, None),
                          (slot + 1, slot + 11, 3_600_000)]

    def test_days(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """23:02 UTC is still Jan 5; 23:10 UTC is already Jan 6 (00:10 local)."""
        zone = _OddZone()
        monkeypatch.setattr("relayburnd.archive_summary.get_tz", lambda name: zone)
        monkeypatch.setattr("relayburnd.reports.get_tz", lambda name: zone)
        adapter = FileAdapter(load_settings())
        change = _OddZone.CHANGE
        write(adapter, turn("before", "s", change - 5 * 60_000, inp=1),
              turn("after", "s", change + 3 * 60_000, inp=10))
        spec = SummarySpec(by=("day",), tz="ODD")
        got = adapter.summary(spec)
        assert [(r.keys["day"], r.input_tokens) for r in got.rows] == [
            ("2026-01-05", 1), ("2026-01-06", 10)]
        assert_same(got, reference(Path(os.environ["RELAYBURN_HOME"]), spec))
        adapter.close()
