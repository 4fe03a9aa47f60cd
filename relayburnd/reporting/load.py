"""The turns a report counts, read through any adapter with the rules of ``summary``.

Why the extra check: a sidechain turn is a replay when a main-thread turn with
its message id exists anywhere (``reports.billable``), but a report reads only
the turns its filter selects, and the main copy can fall outside it (before
``--since``, or attributed to the resumed session). The adapter's own
``summary`` counts requests with the full rule, so when the filtered set still
holds sidechain turns and its count disagrees with ``summary``, the main-thread
message ids are read once from every turn. The filtered set can only be too
large (a turn is dropped only when its main copy was seen), so equal counts
mean the set is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from ..records import Turn, is_replay, replay_message_ids
from ..reports import date_range_filter, get_tz, model_label
from ..storage.base import Filter, StorageAdapter, SummarySpec, TokenTotals


@dataclass(frozen=True)
class Scope:
    """What a report covers: a filter (inclusive local dates) and the reporting zone."""

    filter: Filter
    tz: str

    @classmethod
    def from_options(
        cls, *, since: str | None, until: str | None, tz: str, sources: tuple[str, ...] = (),
        project: str | None = None, model: str | None = None, session: str | None = None,
    ) -> Scope:
        base = Filter(session_id=session, project=project, model=model, sources=sources)
        return cls(filter=date_range_filter(since, until, get_tz(tz), base), tz=tz)


def without_model(flt: Filter) -> Filter:
    return msgspec.structs.replace(flt, model=None)


def billable_turns(adapter: StorageAdapter, flt: Filter) -> list[Turn]:
    """Turns matching ``flt`` (model label included) that ``summary`` would count."""
    turns = list(adapter.turns(without_model(flt)))
    main = replay_message_ids(turns)
    kept = [t for t in turns if not is_replay(t, main)]
    if flt.model is not None:
        kept = [t for t in kept if model_label(t.model, t.speed) == flt.model]
    if any(t.is_sidechain and t.message_id for t in kept):
        spec = SummarySpec(by=("source",), filter=flt, tz="UTC")
        if adapter.summary(spec).totals.requests != len(kept):
            everywhere = replay_message_ids(adapter.turns())
            kept = [t for t in kept if not is_replay(t, everywhere)]
    kept.sort(key=lambda t: (t.ts, t.id))
    return kept


def user_turn_filter(flt: Filter) -> Filter:
    """User turns have no model: the model filter is applied through their session."""
    return without_model(flt)


def results_filter(flt: Filter) -> Filter:
    """Tool-result events have no project or model: those filters apply through the call."""
    return msgspec.structs.replace(flt, model=None, project=None)


@dataclass(kw_only=True)
class TurnTotals(TokenTotals):
    """Token, cost and model totals of a group of requests (a block, a session)."""

    models: set[str] = field(default_factory=set)

    def add_turn(self, t: Turn) -> None:
        super().add_turn(t)
        self.models.add(model_label(t.model, t.speed))
