"""Helpers for the source tests: fixture locations and the store's merge rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from relayburnd import records as R
from tests.sources.rollout_lines import RolloutLines

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def _fold(records: Iterable[R.Record]) -> dict[str, R.Record]:
    """Seal and fold as a store would: per id, the record with the greatest rank."""
    return R.fold(R.seal(r) for r in records)  # type: ignore[return-value]


def _turn_sums(folded: dict[str, R.Record]) -> dict[str, int]:
    turns = [r for r in folded.values() if isinstance(r, R.Turn)]
    return {
        "input": sum(t.input_tokens for t in turns),
        "output": sum(t.output_tokens for t in turns),
        "cache_write": sum(t.cache_write_tokens for t in turns),
        "cache_read": sum(t.cache_read_tokens for t in turns),
        "reasoning": sum(t.reasoning_tokens for t in turns),
        "turns": len(turns),
    }


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def fold() -> Callable[[Iterable[R.Record]], dict[str, R.Record]]:
    return _fold


@pytest.fixture
def turn_sums() -> Callable[[dict[str, R.Record]], dict[str, int]]:
    return _turn_sums


@pytest.fixture
def rollout() -> type[RolloutLines]:
    return RolloutLines
