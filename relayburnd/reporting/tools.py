"""``relayburnd tools``: most used tools and how often they fail.

Calls come from the tool calls of the requests in scope, once per call id (a
replayed response repeats its calls under the same ids). Results are the
tool-result events in scope, joined to their call by ``tool_use_id``; a result
is named after its call, else after the name its event carries, else
``unknown``. With ``--project`` or ``--model`` only results of calls in scope
count, since events carry neither. Per tool: calls, results, errors, error
rate (errors / results) and the median size of the output in bytes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..storage.base import Filter, StorageAdapter
from .load import billable_turns, results_filter
from .render import Col, fmt_int, fmt_num, fmt_pct

UNKNOWN = "unknown"


@dataclass
class ToolRow:
    name: str
    calls: int = 0
    results: int = 0
    errors: int = 0
    sizes: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.name,
            "calls": self.calls,
            "results": self.results,
            "errors": self.errors,
            "error_rate": self.errors / self.results if self.results else None,
            "median_output_bytes": statistics.median(self.sizes) if self.sizes else None,
        }


def tool_rows(adapter: StorageAdapter, flt: Filter) -> list[ToolRow]:
    """Rows sorted by calls, then results, then name."""
    names: dict[str, str] = {}
    for t in billable_turns(adapter, flt):
        for seq, call in enumerate(t.tool_calls):
            names.setdefault(call.id or f"{t.id}#{seq}", call.name or UNKNOWN)
    rows: dict[str, ToolRow] = {}

    def row(name: str) -> ToolRow:
        r = rows.get(name)
        if r is None:
            r = rows[name] = ToolRow(name)
        return r

    for name in names.values():
        row(name).calls += 1
    joined_only = flt.project is not None or flt.model is not None
    for ev in adapter.tool_results(results_filter(flt)):
        called = names.get(ev.tool_use_id)
        if called is None and joined_only:
            continue
        r = row(called or ev.tool_name or UNKNOWN)
        r.results += 1
        r.errors += int(ev.is_error)
        r.sizes.append(ev.output_bytes)
    return sorted(rows.values(), key=lambda r: (-r.calls, -r.results, r.name))


COLUMNS = [
    Col("tool", "Tool", right=False),
    Col("calls", "Calls", fmt_int),
    Col("results", "Results", fmt_int),
    Col("errors", "Errors", fmt_int),
    Col("error_rate", "Error rate", fmt_pct),
    Col("median_output_bytes", "Median output (bytes)", fmt_num),
]
