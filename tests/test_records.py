"""Sealing: the spliced encoding equals a plain encoding of the sealed record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relayburnd.records import (
    Batch,
    Compaction,
    ContentRecord,
    SessionRelationship,
    ToolCall,
    Turn,
    UserTurn,
    encode,
    make_id,
    seal,
    seal_line,
)

text = st.text(max_size=40)


@given(text, text, st.integers(0, 10**12), st.integers(-1, 10**9), st.booleans())
def test_seal_line_is_the_encoding_of_the_sealed_record(
    session: str, body: str, ts: int, out: int, sidechain: bool
) -> None:
    records = [
        Turn(id=make_id("t", session), source="claude", session_id=session, ts=ts,
             output_tokens=out, is_sidechain=sidechain, model=body or None,
             tool_calls=[ToolCall(id="tc", name=body)]),
        UserTurn(id=make_id("u", session), source="codex", session_id=session, ts=ts,
                 message_id=body, next_message_id=body or None),
        Compaction(id=make_id("c", session), source="claude", session_id=session, ts=ts),
        ContentRecord(id=make_id("x", body), source="opencode", session_id=session, ts=ts,
                      message_id="m", role="user", block_type="text", text=body),
        # a long encoding is spliced through a view, a short one by copying
        ContentRecord(id=make_id("y", body), source="claude", session_id=session, ts=ts,
                      message_id="m", role="tool", block_type="tool_result",
                      text=(body or "x") * 5000),
        SessionRelationship(id=make_id("r", body), source="claude", session_id=session,
                            parent_session_id=body, relation="subagent"),
        # an id JSON has to escape is encoded, not spliced
        Compaction(id=f'odd"{body}', source="claude", session_id=session, ts=ts),
    ]
    for rec in records:
        line = seal_line(rec)
        assert line == encode(rec)
        again = seal(rec.__copy__())
        assert again.rank == rec.rank


def test_batch_reuses_lines_only_for_the_same_id_and_rank() -> None:
    turn = Turn(id=make_id("t"), source="claude", session_id="s", ts=1, output_tokens=5)
    batch = Batch()
    batch.add(turn, line=seal_line(turn))
    assert batch.encoded(turn) == encode(turn)
    assert batch.nbytes == len(encode(turn))
    turn.output_tokens = 6  # changed after sealing: the stored line no longer applies
    seal(turn)
    assert batch.encoded(turn) == encode(turn)
