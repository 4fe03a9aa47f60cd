"""The StorageAdapter contract, checked on every adapter kind (see ``conftest.STORE_KINDS``).

Expected results come from the model the contract describes: ``records.fold``
over everything written (greatest rank per id) and ``reports.summarize`` over
the folded turns.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_corpus import EDGES, corpus, ms, other_records, turn
from storage_support import (
    KIND_OF_TYPE,
    QUERIES,
    Stores,
    assert_same_summary,
    content_sessions,
    expected_state,
    matches,
    query,
    state,
    write,
)

from relayburnd.records import (
    Batch,
    Compaction,
    ContentRecord,
    Record,
    SessionRelationship,
    ToolCall,
    ToolResultEvent,
    Turn,
    UserTurn,
    encode,
    fold,
    make_id,
    seal,
)
from relayburnd.reports import summarize
from relayburnd.storage import StorageAdapter
from relayburnd.storage.base import Filter, SummarySpec


def snapshot(base: Turn, **changes: object) -> Turn:
    fields = {f: getattr(base, f) for f in base.__struct_fields__}
    fields.update(changes, rank="")
    rec = seal(Turn(**fields))  # type: ignore[arg-type]
    assert isinstance(rec, Turn)
    return rec


# ------------------------------------------------------------------ writes


class TestWrite:
    def test_new_records_are_counted_as_inserted(self, store: StorageAdapter) -> None:
        """A first write inserts every distinct record, per kind."""
        recs = corpus(seed=3, n=20)
        result = store.write(Batch(recs))
        best = fold(recs)
        for kind in (*QUERIES, "content"):
            n = sum(1 for r in best.values() if KIND_OF_TYPE[type(r)] == kind)
            assert result.kind(kind).inserted == n
            assert result.kind(kind).updated == result.kind(kind).unchanged == 0

    def test_redelivery_changes_nothing(self, store: StorageAdapter) -> None:
        """Writing the same batch again reports every record unchanged and stores nothing new."""
        recs = corpus(seed=4, n=30)
        store.write(Batch(recs))
        before = state(store, content_sessions(recs))
        again = store.write(Batch(list(reversed(recs))))
        assert again.inserted == again.updated == 0
        assert again.unchanged == len(fold(recs))
        assert state(store, content_sessions(recs)) == before

    def test_larger_snapshot_wins_whatever_the_order(self, stores: Stores) -> None:
        """The snapshot with the greater rank is kept, tool calls included, in both orders."""
        base = turn(random.Random(5), 1, tool_calls=[ToolCall(id="t1", name="Bash")])
        small = snapshot(base, output_tokens=10)
        large = snapshot(base, output_tokens=99, tool_calls=[ToolCall(id="t2", name="Read"),
                                                             ToolCall(id="t3", name="Edit")])
        assert large.rank > small.rank
        first = stores.fresh()
        assert first.write(Batch([small])).kind("turn").inserted == 1
        assert first.write(Batch([large])).kind("turn").updated == 1
        assert list(first.turns()) == [large]
        second = stores.fresh()
        second.write(Batch([large]))
        assert second.write(Batch([small])).kind("turn").unchanged == 1
        assert list(second.turns()) == [large]

    def test_duplicate_ids_in_one_batch_fold(self, store: StorageAdapter) -> None:
        """Several snapshots of one id in a batch store the greatest, counted once."""
        base = turn(random.Random(6), 2)
        snaps = [snapshot(base, output_tokens=n) for n in (5, 50, 20)]
        result = store.write(Batch([snaps[0], snaps[1], snaps[2], snaps[1]]))
        assert (result.inserted, result.updated, result.unchanged) == (1, 0, 0)
        assert list(store.turns()) == [snaps[1]]

    def test_fewer_tool_calls_replace_more(self, store: StorageAdapter) -> None:
        """A later snapshot without tool calls leaves the turn without any."""
        base = turn(random.Random(7), 3, tool_calls=[ToolCall(id="a", name="Bash")] * 3)
        store.write(Batch([base]))
        later = snapshot(base, output_tokens=base.output_tokens + 1, tool_calls=[])
        store.write(Batch([later]))
        assert [t.tool_calls for t in store.turns()] == [[]]

    def test_empty_batch(self, store: StorageAdapter) -> None:
        """An empty batch is accepted and counts nothing."""
        result = store.write(Batch([]))
        assert result.inserted == result.updated == result.unchanged == 0

    def test_another_adapter_sees_the_writes(self, stores: Stores) -> None:
        """What one adapter wrote, another on the same store reads."""
        first = stores.fresh()
        recs = corpus(seed=8, n=10)
        first.write(Batch(recs))
        second = stores.reopen(first)
        assert state(second, content_sessions(recs)) == expected_state(recs, content_sessions(recs))


# ------------------------------------------------------------------ convergence

_SESSIONS = ("s-a", "s-b", "s-c")
# Content text may hold anything a string can (NUL included); the other text
# fields are names and ids, which SQL stores refuse to hold NUL in.
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_NAME = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
    max_size=6,
)


@st.composite
def _records(draw: st.DrawFn) -> Record:
    kind = draw(st.sampled_from(("turn", "turn", "content", "user-turn", "relationship",
                                 "compaction", "tool-result")))
    n = draw(st.integers(0, 4))
    session = draw(st.sampled_from(_SESSIONS))
    # Content ids name their session (a piece of text belongs to one conversation).
    key = (kind, session, n) if kind == "content" else (kind, n)
    common = dict(id=make_id(*key), source=draw(st.sampled_from(("claude", "codex"))),
                  session_id=session)
    ts = draw(st.integers(0, 2**41))
    rec: Record
    if kind == "turn":
        rec = Turn(**common, ts=ts, output_tokens=draw(st.integers(0, 3)),
                   snapshot_lines=draw(st.integers(1, 2)), authority=draw(st.integers(0, 1)),
                   model=draw(st.sampled_from((None, "m1", "m2"))),
                   cost_usd=draw(st.none() | st.floats(0, 5)),
                   tool_calls=draw(st.lists(st.builds(ToolCall, id=_NAME, name=_NAME),
                                            max_size=2)))
    elif kind == "content":
        rec = ContentRecord(**common, ts=ts, message_id=draw(_NAME), seq=draw(st.integers(0, 3)),
                            role="assistant", block_type="text",
                            text=draw(st.none() | _TEXT), chars=draw(st.integers(0, 9)))
    elif kind == "user-turn":
        rec = UserTurn(**common, ts=ts, message_id=draw(_NAME),
                       block_types=draw(st.lists(_NAME, max_size=2)),
                       next_message_id=draw(st.none() | _NAME))
    elif kind == "relationship":
        rec = SessionRelationship(**common, ts=ts, relation="subagent",
                                  parent_session_id=draw(st.sampled_from(_SESSIONS)),
                                  tool_use_id=draw(st.none() | _NAME))
    elif kind == "compaction":
        rec = Compaction(**common, ts=ts, trigger=draw(st.none() | _NAME),
                         pre_tokens=draw(st.none() | st.integers(0, 10**6)))
    else:
        rec = ToolResultEvent(**common, ts=ts, tool_use_id=draw(_NAME),
                              is_error=draw(st.booleans()),
                              exit_code=draw(st.none() | st.integers(-5, 5)))
    return seal(rec)  # type: ignore[return-value]


class TestConvergence:
    # Each example makes its own empty store, so sharing the fixture is safe.
    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(records=st.lists(_records(), min_size=1, max_size=24), data=st.data())
    def test_final_state_ignores_order_and_batching(
        self, stores: Stores, records: list[Record], data: st.DataObject
    ) -> None:
        """Any order and any split into batches ends in the fold of all records."""
        order = data.draw(st.permutations(records))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(order)), max_size=4)))
        adapter = stores.fresh()
        start = 0
        for cut in [*cuts, len(order)]:
            adapter.write(Batch(list(order[start:cut])))
            start = max(start, cut)
        assert state(adapter, _SESSIONS) == expected_state(records, _SESSIONS)


# ------------------------------------------------------------------ reading


def _full_turn() -> Turn:
    return turn(random.Random(9), 4, model="claude-opus-4-5", speed="fast", cost_usd=0.125,
                logged_cost_usd=0.5, price_version="v", stop_reason="end_turn", service_tier="t",
                is_sidechain=True, agent_id="agent", request_id="req", complete=True,
                model_fallback=True, authority=1,
                tool_calls=[ToolCall(id="t1", name="Bash", args_sha256="ab" * 32, args_bytes=7)])


def _bare_records() -> list[Record]:
    """Every kind with optional fields empty (None, empty lists, defaults)."""
    recs: list[Record] = [
        Turn(id=make_id("bare-turn"), source="codex", session_id="s", ts=1),
        UserTurn(id=make_id("bare-user"), source="codex", session_id="s", ts=1, message_id="m"),
        Compaction(id=make_id("bare-compaction"), source="codex", session_id="s", ts=1),
        ToolResultEvent(id=make_id("bare-tr"), source="codex", session_id="s", ts=1,
                        tool_use_id="x"),
        ContentRecord(id=make_id("bare-content"), source="codex", session_id="s", ts=1,
                      message_id="m", role="user", block_type="text"),
        SessionRelationship(id=make_id("bare-rel"), source="codex", session_id="s",
                            parent_session_id="p", relation="fork"),
    ]
    return [seal(r) for r in recs]  # type: ignore[misc]


class TestRoundTrip:
    def test_every_kind_reads_back_exactly(self, store: StorageAdapter) -> None:
        """Every field of every kind comes back equal, down to the encoded bytes."""
        rnd = random.Random(10)
        recs = [_full_turn(), *_bare_records()]
        for i in range(6):
            recs.append(turn(rnd, 100 + i))
            recs.extend(other_records(rnd, 100 + i))
        nul = ContentRecord(id=make_id("nul"), source="claude", session_id="s", ts=2,
                            message_id="m", role="tool", block_type="tool_result",
                            text="a\x00b\x00", chars=4)
        recs.append(seal(nul))  # type: ignore[arg-type]
        store.write(Batch(recs))
        want = expected_state(recs, content_sessions(recs))
        got = state(store, content_sessions(recs))
        assert got == want
        for kind in QUERIES:
            assert [encode(r) for r in got[kind]] == [encode(r) for r in want[kind]]


class TestFilters:
    @pytest.fixture
    def loaded(self, store: StorageAdapter) -> tuple[StorageAdapter, list[Record]]:
        recs = corpus(seed=11, n=80)
        write(store, recs, 97)
        return store, recs

    def test_time_bounds_include_since_exclude_until(
        self, loaded: tuple[StorageAdapter, list[Record]]
    ) -> None:
        """``since`` is inclusive and ``until`` exclusive, to the millisecond."""
        adapter, recs = loaded
        t = sorted({r.ts for r in fold(recs).values() if isinstance(r, Turn)})
        lo, hi = t[len(t) // 4], t[3 * len(t) // 4]
        for flt in (Filter(since_ms=lo), Filter(until_ms=hi), Filter(since_ms=lo, until_ms=hi),
                    Filter(since_ms=lo, until_ms=lo), Filter(since_ms=lo, until_ms=lo + 1)):
            want = sorted(
                (r for r in fold(recs).values() if isinstance(r, Turn) and matches(r, flt)),
                key=lambda r: r.id,
            )
            assert query(adapter, "turn", flt) == want, flt

    @pytest.mark.parametrize("flt", [
        Filter(session_id="sess-1"),
        Filter(sources=("codex",)),
        Filter(sources=("claude", "opencode")),
        Filter(project="/home/dev/alpha"),
        Filter(project=""),
        Filter(model="unknown"),
        Filter(model="claude-opus-4-5-fast"),
        Filter(model="gpt-5-codex"),
        Filter(session_id="sess-2", sources=("claude",), since_ms=EDGES[2], until_ms=EDGES[5]),
        Filter(session_id="no-such-session"),
    ], ids=str)
    def test_each_kind_filters_like_the_reference(
        self, loaded: tuple[StorageAdapter, list[Record]], flt: Filter
    ) -> None:
        """Session, source, project and model filters select what the ledger scan selects."""
        adapter, recs = loaded
        best = fold(recs).values()
        for kind in QUERIES:
            want = sorted((r for r in best if KIND_OF_TYPE[type(r)] == kind and matches(r, flt)),
                          key=lambda r: r.id)
            assert query(adapter, kind, flt) == want, kind

    def test_turns_come_in_time_order_across_pages(self, store: StorageAdapter) -> None:
        """A long listing is complete, without repeats, however it is paged."""
        rnd = random.Random(12)
        recs = [turn(rnd, i, ts=ms("2024-05-01T00:00:00") + rnd.randrange(50)) for i in range(2500)]
        write(store, recs, 1000)
        got = list(store.turns())
        assert sorted(got, key=lambda r: r.id) == sorted(recs, key=lambda r: r.id)
        assert [r.ts for r in got] == sorted(r.ts for r in got)


class TestContent:
    def test_content_comes_back_in_conversation_order(self, store: StorageAdapter) -> None:
        """A session's content is ordered by time, then message, then position."""
        rnd = random.Random(13)
        recs: list[Record] = []
        for i in range(60):
            recs.append(seal(ContentRecord(
                id=make_id("c", i), source="claude", session_id="conv", ts=1000 + rnd.randrange(5),
                message_id=f"m{rnd.randrange(4)}", seq=rnd.randrange(4), role="assistant",
                block_type="text", text=f"part {i}")))  # type: ignore[arg-type]
        rnd.shuffle(recs)
        write(store, recs, 17)
        got = store.content("conv")
        assert got == sorted(fold(recs).values(), key=lambda r: (r.ts, r.message_id, r.seq, r.id))
        assert store.content("other") == []


# ------------------------------------------------------------------ retention


class TestPrune:
    """``prune_content(before_ms)``: content older than the cutoff goes, nothing else does."""

    def test_old_content_goes_the_rest_stays(self, store: StorageAdapter) -> None:
        """Content before the cutoff is deleted and counted; later content and other kinds
        stay exactly as they were; a second prune finds nothing."""
        recs = corpus(seed=18, n=60)
        cutoff = EDGES[3]
        edge = seal(ContentRecord(id=make_id("edge"), source="claude", session_id="sess-1",
                                  ts=cutoff, message_id="m", role="user", block_type="text",
                                  text="exactly at the cutoff"))
        just = seal(ContentRecord(id=make_id("just"), source="claude", session_id="sess-1",
                                  ts=cutoff - 1, message_id="m", role="user",
                                  block_type="text", text="a millisecond before"))
        recs += [edge, just]  # type: ignore[list-item]
        write(store, recs, 101)
        sessions = content_sessions(recs)
        old = {r.id for r in fold(recs).values()
               if isinstance(r, ContentRecord) and r.ts < cutoff}
        assert just.id in old and edge.id not in old and 0 < len(old) < len(sessions) * 60
        assert store.prune_content(cutoff) == len(old)  # type: ignore[attr-defined]
        kept = [r for r in recs if r.id not in old]
        assert state(store, sessions) == expected_state(kept, sessions)
        assert store.prune_content(cutoff) == 0  # type: ignore[attr-defined]
        # re-delivered after the prune (a host that re-read its logs): stored again, once
        again = [r for r in fold(recs).values() if r.id in old]
        assert store.write(Batch(again)).as_dict()["content"]["inserted"] == len(old)
        assert state(store, sessions) == expected_state(recs, sessions)

    def test_clear_all(self, store: StorageAdapter) -> None:
        """The "keep none" cutoff removes every content record, future ones too."""
        from relayburnd.retention import CLEAR_ALL_MS

        recs = [seal(ContentRecord(id=make_id("clear", i), source="codex",
                                   session_id=f"s-{i % 2}", ts=ts, message_id="m", seq=i,
                                   role="assistant", block_type="text", text=f"t{i}"))
                for i, ts in enumerate([-5, 0, 1, ms("2024-01-01T00:00:00"), 4_102_444_800_000])]
        turns = [turn(random.Random(19), 1)]
        store.write(Batch([*recs, *turns]))  # type: ignore[list-item]
        assert store.prune_content(CLEAR_ALL_MS) == 5  # type: ignore[attr-defined]
        assert store.content("s-0") == store.content("s-1") == []
        assert list(store.turns()) == turns

    def test_empty_store(self, store: StorageAdapter) -> None:
        """Pruning a store without content removes nothing."""
        assert store.prune_content(ms("2030-01-01T00:00:00")) == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------ summary

BYS = [("day",), ("day", "model"), ("week", "source"), ("month", "project"), ("model",),
       ("session",), ("source", "day", "model", "project"), ("week", "month", "day")]
ZONES = ["UTC", "Asia/Tokyo", "America/St_Johns"]


class TestSummary:
    @pytest.fixture
    def loaded(self, store: StorageAdapter) -> tuple[StorageAdapter, list[Turn]]:
        recs = corpus(seed=14, n=300)
        write(store, recs, 211)
        turns = [r for r in fold(recs).values() if isinstance(r, Turn)]
        return store, turns  # type: ignore[return-value]

    @pytest.mark.parametrize("tz", ZONES)
    def test_summary_equals_the_reference(
        self, loaded: tuple[StorageAdapter, list[Turn]], tz: str
    ) -> None:
        """Every grouping, in every zone, gives the rows and totals of reports.summarize."""
        adapter, turns = loaded
        for by in BYS:
            spec = SummarySpec(by=by, tz=tz)
            assert_same_summary(adapter.summary(spec), summarize(turns, spec))

    @pytest.mark.parametrize("flt", [
        Filter(since_ms=EDGES[0], until_ms=EDGES[1]),
        Filter(sources=("claude",)),
        Filter(project="/home/dev/beta"),
        Filter(model="unknown"),
        Filter(model="claude-sonnet-4-5-fast"),
        Filter(session_id="sess-3", since_ms=EDGES[2]),
    ], ids=str)
    def test_filtered_summary_equals_the_reference(
        self, loaded: tuple[StorageAdapter, list[Turn]], flt: Filter
    ) -> None:
        """Filters apply after the replay rule, as in the reference."""
        adapter, turns = loaded
        for by in [("day", "model"), ("source",)]:
            spec = SummarySpec(by=by, filter=flt, tz="America/St_Johns")
            assert_same_summary(adapter.summary(spec), summarize(turns, spec))

    def test_replays_are_not_billed(self, store: StorageAdapter) -> None:
        """A sidechain copy of a main-thread response counts once, even in another session."""
        rnd = random.Random(15)
        main = turn(rnd, 1, is_sidechain=False, session_id="a", cost_usd=1.0)
        replay = turn(rnd, 2, is_sidechain=True, session_id="b", message_id=main.message_id,
                      cost_usd=1.0)
        side = turn(rnd, 3, is_sidechain=True, session_id="b", message_id="msg_own", cost_usd=1.0)
        no_id = turn(rnd, 4, is_sidechain=True, session_id="b", message_id=None, cost_usd=1.0)
        store.write(Batch([main, replay, side, no_id]))
        result = store.summary(SummarySpec(by=("session",)))
        assert result.totals.requests == 3
        assert {r.keys["session"]: r.requests for r in result.rows} == {"a": 1, "b": 2}
        # The replay stays out even when its main-thread turn is outside the filter.
        flt = Filter(session_id="b")
        assert store.summary(SummarySpec(by=("session",), filter=flt)).totals.requests == 2

    def test_empty_store(self, store: StorageAdapter) -> None:
        """A store without turns reports no rows and zero totals."""
        result = store.summary(SummarySpec(by=("day", "model"), tz="Asia/Tokyo"))
        assert result.rows == [] and result.totals.requests == 0

    def test_historic_offsets_are_exact(self, store: StorageAdapter) -> None:
        """Zones with seconds in their old offsets (local mean time) still bucket exactly."""
        rnd = random.Random(16)
        turns = [turn(rnd, i, ts=ms(when) + rnd.randint(-40 * 60_000, 40 * 60_000))
                 for i, when in enumerate(["1890-06-01T03:30:00", "1890-06-01T03:31:00",
                                           "1934-12-31T03:31:00", "1972-01-07T00:44:00",
                                           "2024-03-10T02:30:00"] * 8)]
        store.write(Batch(turns))  # type: ignore[arg-type]
        for tz in ("America/St_Johns", "Africa/Monrovia", "Asia/Kolkata"):
            for by in [("day",), ("day", "model"), ("month",)]:
                spec = SummarySpec(by=by, tz=tz)
                assert_same_summary(store.summary(spec), summarize(turns, spec))


class TestHealth:
    def test_healthcheck_passes_on_a_usable_store(self, store: StorageAdapter) -> None:
        """healthcheck() returns quietly when the store can be used."""
        store.healthcheck()

    def test_close_is_idempotent(self, store: StorageAdapter) -> None:
        """close() can be called twice."""
        store.close()
        store.close()
