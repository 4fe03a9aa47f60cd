"""Codex ``token_count`` arithmetic: usage vectors and the cumulative-difference rule.

Codex reports usage as a running total per thread (``total_token_usage``) plus
the usage of the last request (``last_token_usage``). Billing each request once
means differencing consecutive totals, because the UI re-emits an unchanged
snapshot with a fresh timestamp on every rate-limit refresh, and a new process
restarts the counter (format spec 3.7.2). Everything here is pure so the rule
lives in one place and is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

# Field names seen for each component, first match wins (format spec 3.7.1).
_INPUT = ("input_tokens", "prompt_tokens")
_CACHED = ("cached_input_tokens", "cached_tokens", "cache_read_input_tokens")
_OUTPUT = ("output_tokens", "completion_tokens")
_REASONING = ("reasoning_output_tokens", "reasoning_tokens")
_TOTAL = ("total_tokens",)
_DETAILS = (
    ("input_tokens_details", "cached_tokens", "cached"),
    ("prompt_tokens_details", "cached_tokens", "cached"),
    ("output_tokens_details", "reasoning_tokens", "reasoning"),
    ("completion_tokens_details", "reasoning_tokens", "reasoning"),
)


class Usage(NamedTuple):
    """One usage object: input includes cached, output includes reasoning."""

    input: int
    cached: int
    output: int
    reasoning: int
    total: int

    def is_zero(self) -> bool:
        return not (self.input or self.cached or self.output or self.reasoning)


class RawUsage(NamedTuple):
    """A usage object as written: a component the writer left out is None."""

    input: int | None
    cached: int | None
    output: int | None
    reasoning: int | None
    total: int | None


def _number(value: Any) -> int | None:
    """A non-negative count from an int, float or numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float):
        return max(int(value), 0) if value == value else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return max(int(float(text)), 0) if text else None
        except ValueError:
            return None
    return None


def _first(obj: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        n = _number(obj.get(name))
        if n is not None:
            return n
    return None


def read_usage(obj: Any) -> RawUsage | None:
    """Read a usage object under any of the known field names; None if it has no counts."""
    if not isinstance(obj, Mapping):
        return None
    found = {
        "input": _first(obj, _INPUT),
        "cached": _first(obj, _CACHED),
        "output": _first(obj, _OUTPUT),
        "reasoning": _first(obj, _REASONING),
        "total": _first(obj, _TOTAL),
    }
    for outer, inner, key in _DETAILS:
        nested = obj.get(outer)
        if found[key] is None and isinstance(nested, Mapping):
            found[key] = _number(nested.get(inner))
    if all(v is None for v in found.values()):
        return None
    return RawUsage(**found)


def complete(raw: RawUsage, prev: Usage | None) -> Usage:
    """Fill the gaps of a cumulative vector.

    A component the writer left out is taken from the previous vector rather
    than read as 0: some builds omit ``reasoning_output_tokens`` on some events,
    and a 0 there would look like a counter reset. A missing total is
    ``input + output`` (reasoning is already inside output).
    """

    def pick(value: int | None, index: int) -> int:
        if value is not None:
            return value
        return prev[index] if prev is not None else 0

    inp = pick(raw.input, 0)
    cached = pick(raw.cached, 1)
    out = pick(raw.output, 2)
    reasoning = pick(raw.reasoning, 3)
    total = raw.total if raw.total else inp + out
    return Usage(inp, cached, out, reasoning, total)


def as_last(raw: RawUsage) -> Usage:
    """A per-request vector: missing components are 0, a missing total is input + output."""
    inp, cached, out, reasoning = (v or 0 for v in raw[:4])
    return Usage(inp, cached, out, reasoning, raw.total or inp + out)


def billed(prev: Usage | None, cur: Usage | None, last: Usage | None) -> Usage | None:
    """Usage of the request behind one ``token_count`` event, or None if nothing new.

    * no cumulative vector: the event's ``last_token_usage``;
    * first cumulative vector of the file: ``last_token_usage`` when present (a
      file that starts mid-thread, e.g. a fork without replay, has a total that
      includes the parent's usage), else the total itself;
    * unchanged vector: a re-emit, nothing;
    * total equal to ``last``: the counter restarted at zero with this request
      (a new process, a sub-agent's own thread after its copied history), even
      when the new total happens to exceed the old one in every component;
    * every component grew or stayed: the difference (trusted over ``last``);
    * some component dropped: the counter restarted, so ``last`` when present,
      else the new total (everything since the restart).
    """
    if cur is None:
        return last
    if prev is None:
        return last if last is not None else cur
    if cur == prev:
        return None
    if cur == last:
        return last
    if all(c >= p for c, p in zip(cur, prev, strict=True)):
        return Usage(*(c - p for c, p in zip(cur, prev, strict=True)))
    return last if last is not None else cur
