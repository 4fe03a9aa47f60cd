"""The drain budget after a prestop mark."""

from __future__ import annotations

from pathlib import Path

from relayburnd import prestop


def test_without_a_mark_the_drain_timeout_holds(tmp_path: Path) -> None:
    assert prestop.drain_budget(tmp_path / "p.json", 60.0, 20.0) == (20.0, "drain timeout")


def test_the_budget_is_what_is_left_of_the_grace_period(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    prestop.mark(path, now=1000.0)
    assert prestop.marked_at(path) == 1000.0
    budget, why = prestop.drain_budget(path, 60.0, 20.0, now=1050.0)
    assert (budget, why) == (60 - 50 - prestop.SAFETY, "grace period left after prestop")
    # plenty of grace left: the drain timeout is the smaller bound
    assert prestop.drain_budget(path, 60.0, 20.0, now=1001.0) == (20.0, "drain timeout")
    # less than SAFETY left: still a moment to commit what was acknowledged
    assert prestop.drain_budget(path, 60.0, 20.0, now=1059.5)[0] == prestop.MIN_BUDGET
    # a mark older than the grace period did not lead to this shutdown
    assert prestop.drain_budget(path, 60.0, 20.0, now=1100.0) == (
        20.0, "stale prestop mark ignored")


def test_a_mark_without_a_grace_period_or_unreadable_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    prestop.mark(path, now=1000.0)
    assert prestop.drain_budget(path, None, 20.0, now=1050.0)[0] == 20.0
    path.write_bytes(b"{not json")
    assert prestop.marked_at(path) is None
    assert prestop.drain_budget(path, 60.0, 20.0)[0] == 20.0
    prestop.clear(path)
    prestop.clear(path)
    assert not path.exists()
