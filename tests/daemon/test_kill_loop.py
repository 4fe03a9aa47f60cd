"""Repeated SIGKILLs at random moments while an agent writes: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from harness import Daemon, Layout, Writer, assert_exactly_once

KILLS = 24


class _Agent(threading.Thread):
    """Writes exchanges to three sessions; one of them writes lines in two pieces."""

    def __init__(self, writers: list[Writer], seed: int) -> None:
        super().__init__(daemon=True)
        self.writers = writers
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            w = self.rng.choice(self.writers)
            if w.prefix == "split":
                uid, line = w.compaction_line()
                cut = self.rng.randrange(1, len(line) - 1)
                w.append(line[:cut])
                time.sleep(self.rng.uniform(0.0, 0.05))
                w.append(line[cut:])
                w.compactions.append(uid)
            else:
                w.exchange()
            self.rounds += 1
            time.sleep(self.rng.uniform(0.001, 0.02))


@pytest.mark.slow
def test_kill_9_loop_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """24 SIGKILLs at random moments (startup included) during a steady stream of appends,
    each followed by a restart, end with exactly the records the agent wrote."""
    layout = Layout.make(tmp_path)
    writers = [
        Writer(layout.project() / "a.jsonl", prefix="a"),
        Writer(layout.project("-work-two") / "b.jsonl", prefix="b"),
        Writer(layout.project() / "c.jsonl", prefix="split"),
    ]
    agent = _Agent(writers, seed=2026)
    agent.start()
    rng = random.Random(99)
    try:
        for _ in range(KILLS):
            d = Daemon(layout, RELAYBURN_BATCH_MAX_RECORDS=str(rng.choice([20, 200, 5000]))).start(
                ready=False)
            time.sleep(rng.uniform(0.2, 1.5))
            assert d.proc is not None and d.proc.poll() is None, d.output()
            d.kill9()
    finally:
        agent.stop_event.set()
        agent.join(5)
    with Daemon(layout).start() as d:
        code, _ = d.stop()
        assert code == 0, d.output()
    print(f"\n{KILLS} kills, {agent.rounds} writes by the agent")
    assert agent.rounds > 100
    assert_exactly_once(layout.home, writers)
