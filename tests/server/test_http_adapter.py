"""The http adapter against a real server: splitting, classification, errors that say what
to fix."""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import msgspec
import pytest
from server_support import TOKENS, ServerProcess, client_settings, free_port, sqlite_env
from storage_corpus import corpus, turn

from relayburnd.config import load_settings
from relayburnd.delivery import DeadLetters, Deliverer
from relayburnd.errors import SinkMisconfigured, SinkRejected, SinkUnavailable
from relayburnd.records import (
    Batch,
    ContentRecord,
    Record,
    Turn,
    encode,
    fold,
    make_id,
    seal,
    seal_line,
)
from relayburnd.storage import open_adapter
from relayburnd.storage.base import Filter, SummarySpec
from relayburnd.storage.http import (
    HttpAdapter,
    Outcome,
    classify,
    parse_retry_after,
    split_requests,
)
from relayburnd.storage.http_wire import BatchBody
from tests.conftest import run_cli


def content(i: int, text: str, session: str = "s-big") -> ContentRecord:
    rec = seal(ContentRecord(id=make_id("big", i), source="claude", session_id=session, ts=1000 + i,
                             message_id="m", seq=i, role="assistant", block_type="text",
                             text=text, chars=len(text)))
    assert isinstance(rec, ContentRecord)
    return rec


def salted(records: list[Record], salt: str) -> list[Record]:
    """The same records under ids of their own, so tests sharing a server never collide."""
    out = []
    for rec in records:
        again = seal(msgspec.structs.replace(rec, id=make_id(salt, rec.id), rank=""))
        out.append(again)
    return out  # type: ignore[return-value]


def adapter_for(server: ServerProcess, tmp_path: Path, token: str | None = TOKENS["ops"],
                **kwargs: int) -> HttpAdapter:
    return HttpAdapter(client_settings(server.url, tmp_path / secrets.token_hex(3), token),
                       **kwargs)


@pytest.fixture
def client(sqlite_server: ServerProcess, tmp_path: Path) -> Iterator[HttpAdapter]:
    adapter = adapter_for(sqlite_server, tmp_path)
    try:
        yield adapter
    finally:
        adapter.close()


class TestClassify:
    @pytest.mark.parametrize(("status", "outcome"), [
        (200, Outcome.DELIVERED), (204, Outcome.DELIVERED),
        (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (502, Outcome.RETRY),
        (503, Outcome.RETRY), (504, Outcome.RETRY), (501, Outcome.HALT),
        (400, Outcome.REJECTED), (413, Outcome.REJECTED), (422, Outcome.REJECTED),
        (401, Outcome.HALT), (403, Outcome.HALT), (404, Outcome.HALT), (301, Outcome.HALT),
        (415, Outcome.HALT),
    ])
    def test_status_outcomes(self, status: int, outcome: Outcome) -> None:
        """Each status maps to the documented outcome (501 is not retried)."""
        assert classify(status) is outcome

    def test_retry_after_seconds_and_dates(self) -> None:
        """Retry-After is read as delta-seconds or an HTTP date; nonsense is ignored."""
        now = time.time()
        assert parse_retry_after("2") == 2.0
        later = parse_retry_after(formatdate(now + 30, usegmt=True), now=now)
        assert later == pytest.approx(30, abs=1)
        assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
        assert parse_retry_after("soon") is None and parse_retry_after(None) is None
        assert parse_retry_after("999999") == 3600.0


class TestSplitting:
    def test_requests_hold_at_most_1000_records(self) -> None:
        """2,500 small records go as 1,000 + 1,000 + 500, in order."""
        recs = [turn(random.Random(1), i) for i in range(2500)]
        parts = split_requests(recs)
        assert [len(p) for p in parts] == [1000, 1000, 500]
        assert [r for p in parts for r in p.records] == recs

    def test_requests_hold_at_most_2_mib_and_a_larger_record_goes_alone(self) -> None:
        """Records are packed up to 2 MiB; one larger than that is sent on its own."""
        recs = [content(i, "x" * 700_000) for i in range(5)]
        recs.insert(2, content(99, "y" * 3_000_000))
        parts = split_requests(recs)
        assert [len(p) for p in parts] == [2, 1, 2, 1]
        assert all(len(p.body) <= 2 * 1024 * 1024 for p in parts if len(p) > 1)

    @pytest.mark.parametrize("max_bytes", [2 * 1024 * 1024, 20_000])
    def test_bodies_join_the_encodings_sealing_made(self, max_bytes: int) -> None:
        """With the batch's lines, bodies are joined from them: the same bytes, the same split."""
        batch = Batch()
        for rec in corpus(seed=43, n=40):
            batch.add(rec, line=seal_line(rec))
        recs = list(fold(batch.records).values())
        joined = split_requests(recs, 25, max_bytes, lines=batch.lines)
        encoded = split_requests(recs, 25, max_bytes)
        assert [p.records for p in joined] == [p.records for p in encoded]
        assert [p.body for p in joined] == [p.body for p in encoded]
        assert all(msgspec.json.decode(p.body, type=BatchBody).records == p.records
                   for p in joined)


class TestWrites:
    def test_counts_and_redelivery(self, client: HttpAdapter) -> None:
        """Counts per kind are exact, and sending the batch again changes nothing."""
        recs = salted(corpus(seed=41, n=30), "counts")
        first = client.write(Batch(recs))
        assert first.inserted == len(fold(recs)) and first.updated == first.unchanged == 0
        again = client.write(Batch(recs))
        assert again.unchanged == len(fold(recs)) and again.inserted == again.updated == 0

    def test_a_batch_with_its_lines_reads_back_as_sent(self, client: HttpAdapter) -> None:
        """A batch as the daemon makes it (encodings from sealing) is stored record for record."""
        batch = Batch()
        recs = [turn(random.Random(3), 3000 + i, session_id="s-lines") for i in range(40)]
        for rec in recs:
            batch.add(rec, line=seal_line(rec))
        assert client.write(batch).inserted == 40
        back = list(client.turns(Filter(session_id="s-lines")))
        assert sorted(map(encode, back)) == sorted(map(encode, recs))

    def test_an_id_twice_in_a_batch_keeps_its_greatest_rank(self, client: HttpAdapter) -> None:
        """Two snapshots of one turn in a batch: one record is sent and stored, the larger."""
        small = turn(random.Random(4), 4000, session_id="s-twice", output_tokens=5)
        large = seal(msgspec.structs.replace(small, output_tokens=500, rank=""))
        assert isinstance(large, Turn) and large.rank > small.rank
        result = client.write(Batch([large, small]))
        assert result.inserted == 1 and result.unchanged == result.updated == 0
        assert [t.output_tokens for t in client.turns(Filter(session_id="s-twice"))] == [500]

    def test_a_batch_travels_as_several_requests(self, sqlite_server: ServerProcess,
                                                 tmp_path: Path) -> None:
        """With 7 records per request, 50 records take 8 requests and all arrive."""
        adapter = adapter_for(sqlite_server, tmp_path, max_records=7)
        before = sqlite_server.metric("relayburnd_server_batches_total", token="ops",
                                      result="stored")
        recs = [turn(random.Random(2), 1000 + i, session_id="s-split") for i in range(50)]
        assert adapter.write(Batch(recs)).inserted == 50
        assert sqlite_server.metric("relayburnd_server_batches_total", token="ops",
                                    result="stored") == before + 8
        assert {t.id for t in adapter.turns()} >= {r.id for r in recs}
        adapter.close()

    def test_413_splits_until_the_server_accepts(self, tmp_path: Path) -> None:
        """Bodies over the server's limit are halved until they fit; every record arrives once."""
        env = sqlite_env(tmp_path, RELAYBURN_SERVER_MAX_BODY="64KiB")
        server = ServerProcess(env, tmp_path / "server.log")
        try:
            adapter = adapter_for(server, tmp_path)
            rnd = random.Random(3)
            recs = [content(i, secrets.token_hex(rnd.randrange(500, 1500))) for i in range(300)]
            result = adapter.write(Batch(recs))  # type: ignore[arg-type]
            assert result.inserted == 300
            assert server.metric("relayburnd_server_requests_total", route="/v1/batches",
                                 status="413") >= 1
            assert adapter.content("s-big") == sorted(recs, key=lambda r: (r.ts, r.seq))
            single = content(1000, secrets.token_hex(100_000))
            with pytest.raises(SinkRejected) as info:
                adapter.write(Batch([single]))
            assert info.value.record_ids == (single.id,)
            adapter.close()
        finally:
            server.stop()

    def test_refused_records_are_named_and_only_they_are_dead_lettered(
        self, client: HttpAdapter, tmp_path: Path
    ) -> None:
        """A 422 names the bad records; delivery dead-letters them and stores the rest."""
        good = [turn(random.Random(4), 2000 + i, session_id="s-poison") for i in range(5)]
        bad = turn(random.Random(4), 2100, session_id="../../poison")
        recs: list[Record] = [*good[:2], bad, *good[2:]]
        with pytest.raises(SinkRejected) as info:
            client.write(Batch(recs))
        assert info.value.record_ids == (bad.id,)
        assert [t for t in client.turns() if t.session_id == "s-poison"] == []
        letters = DeadLetters(tmp_path / "deadletter.jsonl")
        result = Deliverer(client, letters).deliver(Batch(recs), {})
        assert result.inserted == 5 and letters.count == 1
        entry = json.loads((tmp_path / "deadletter.jsonl").read_text())
        assert entry["record_id"] == bad.id
        assert sorted(t.id for t in client.turns() if t.session_id == "s-poison") == sorted(
            r.id for r in good)


class TestErrors:
    def test_unknown_token(self, sqlite_server: ServerProcess, tmp_path: Path) -> None:
        """401 says which setting to fix and never shows the token."""
        adapter = adapter_for(sqlite_server, tmp_path, token="not-a-real-token-123456")
        for call in (lambda: adapter.write(Batch([turn(random.Random(5), 1)])),
                     lambda: list(adapter.turns()), adapter.healthcheck):
            with pytest.raises(SinkMisconfigured) as info:
                call()
            assert "RELAYBURN_HTTP_TOKEN" in str(info.value)
            assert "not-a-real-token-123456" not in str(info.value)
        adapter.close()

    def test_missing_token(self, sqlite_server: ServerProcess, tmp_path: Path) -> None:
        """Without a token the error says the setting is empty."""
        adapter = adapter_for(sqlite_server, tmp_path, token=None)
        with pytest.raises(SinkMisconfigured, match="RELAYBURN_HTTP_TOKEN is empty"):
            adapter.write(Batch([turn(random.Random(5), 1)]))
        adapter.close()

    def test_scopes(self, sqlite_server: ServerProcess, tmp_path: Path) -> None:
        """A write-only token ships and passes the health check but cannot read; 403 halts."""
        writer = adapter_for(sqlite_server, tmp_path, token=TOKENS["writer"])
        writer.healthcheck()
        assert writer.write(Batch([turn(random.Random(6), 60_007, session_id="s-w")])).inserted == 1
        with pytest.raises(SinkMisconfigured, match="403"):
            writer.content("s-w")
        reader = adapter_for(sqlite_server, tmp_path, token=TOKENS["reader"])
        with pytest.raises(SinkMisconfigured, match="403"):
            reader.write(Batch([turn(random.Random(6), 60_008)]))
        assert [t.session_id for t in reader.turns() if t.session_id == "s-w"] == ["s-w"]
        writer.close()
        reader.close()

    def test_wrong_path(self, sqlite_server: ServerProcess, tmp_path: Path) -> None:
        """A URL with an extra path gets 404: check RELAYBURN_HTTP_URL."""
        settings = load_settings(env={"RELAYBURN_STORAGE": "http", "RELAYBURN_HOME": str(tmp_path),
                                      "RELAYBURN_HTTP_URL": sqlite_server.url + "/v1",
                                      "RELAYBURN_HTTP_TOKEN": TOKENS["ops"]})
        adapter = HttpAdapter(settings)
        with pytest.raises(SinkMisconfigured, match="RELAYBURN_HTTP_URL"):
            adapter.write(Batch([turn(random.Random(7), 1)]))
        adapter.close()

    def test_nothing_listening(self, tmp_path: Path) -> None:
        """A refused connection is transient: retry later."""
        settings = client_settings(f"http://127.0.0.1:{free_port()}", tmp_path)
        adapter = HttpAdapter(settings)
        with pytest.raises(SinkUnavailable):
            adapter.write(Batch([turn(random.Random(8), 1)]))
        with pytest.raises(SinkUnavailable):
            adapter.healthcheck()
        adapter.close()
        adapter.close()

    @pytest.mark.parametrize("url", ["", "localhost:8787", "ftp://host", "http://"])
    def test_invalid_url(self, tmp_path: Path, url: str) -> None:
        """An unusable RELAYBURN_HTTP_URL is a configuration error at construction."""
        settings = load_settings(env={"RELAYBURN_STORAGE": "http", "RELAYBURN_HOME": str(tmp_path),
                                      "RELAYBURN_HTTP_URL": url})
        with pytest.raises(SinkMisconfigured, match="RELAYBURN_HTTP_URL"):
            open_adapter(settings)


class TestReads:
    def test_summary_over_http_equals_the_store_it_reads(
        self, sqlite_server: ServerProcess, client: HttpAdapter
    ) -> None:
        """The summary through the server is the summary of its SQLite store, exactly."""
        client.write(Batch(salted(corpus(seed=42, n=120), "summary")))
        path = Path(sqlite_server.log_path).parent / "server.sqlite"
        direct = open_adapter(load_settings(env={
            "RELAYBURN_STORAGE": "sqlite", "RELAYBURN_SQLITE_PATH": str(path),
            "RELAYBURN_HOME": str(path.parent / "direct")}))
        for spec in (SummarySpec(by=("day", "model"), tz="Asia/Tokyo"),
                     SummarySpec(by=("source", "project"))):
            assert client.summary(spec) == direct.summary(spec)
        direct.close()

    def test_cli_reports_through_the_server(self, sqlite_server: ServerProcess,
                                            client: HttpAdapter, tmp_path: Path) -> None:
        """``summary --json`` with RELAYBURN_STORAGE=http prints what the store holds."""
        client.write(Batch(salted(corpus(seed=43, n=40), "cli")))
        env = {"RELAYBURN_STORAGE": "http", "RELAYBURN_HTTP_URL": sqlite_server.url,
               "RELAYBURN_HTTP_TOKEN": TOKENS["reader"]}
        doc = json.loads(run_cli("summary", "--by", "source", "--tz", "UTC", "--json",
                                 env=env).stdout)
        want = client.summary(SummarySpec(by=("source",))).totals.requests
        assert doc["totals"]["requests"] == want
        bad = run_cli("summary", env={**env, "RELAYBURN_HTTP_TOKEN": "wrong-token-1234567890"},
                      check=False)
        assert bad.returncode != 0 and bad.stderr.startswith("Error: ")
        assert "RELAYBURN_HTTP_TOKEN" in bad.stderr and "Traceback" not in bad.stderr

    def test_unsafe_session_ids_read_as_empty(self, client: HttpAdapter) -> None:
        """Content of an id no store would hold is empty, as on the file store."""
        assert client.content("../etc/passwd") == [] and client.content("") == []

    def test_listings_are_complete_across_chunks(self, client: HttpAdapter) -> None:
        """A listing longer than the server's chunk arrives whole and in time order."""
        rnd = random.Random(44)
        recs = [turn(rnd, 5000 + i, session_id="s-long") for i in range(2345)]
        client.write(Batch(recs))  # type: ignore[arg-type]
        from relayburnd.storage.base import Filter

        got = list(client.turns(Filter(session_id="s-long")))
        assert sorted(t.id for t in got) == sorted(r.id for r in recs)
        assert [t.ts for t in got] == sorted(t.ts for t in got)


def test_server_log_holds_no_content(sqlite_server: ServerProcess, client: HttpAdapter) -> None:
    """Content text sent in batches never appears in the server's log."""
    marker = "secret-prompt-text-" + secrets.token_hex(8)
    client.write(Batch([content(7, marker, session="s-private")]))
    assert client.content("s-private")[0].text == marker
    assert marker not in sqlite_server.log()
    with sqlite3.connect(Path(sqlite_server.log_path).parent / "server.sqlite") as db:
        rows = db.execute("SELECT count(*) FROM content WHERE session_id='s-private'")
        assert rows.fetchone() == (1,)
