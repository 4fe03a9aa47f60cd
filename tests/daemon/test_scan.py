"""The scanner in process: new files are keyed exactly as the sources' discovery keys them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from relayburnd.cursors import CursorStore
from relayburnd.metrics import Metrics, parse_text
from relayburnd.scan import COLD_POLL, Scanner
from relayburnd.sources import load_source, source_kind
from relayburnd.tree import targets_for
from relayburnd.watch import Hints, fs_type

LINE = (b'{"type":"system","subtype":"compact_boundary","uuid":"u",'
        b'"timestamp":"2026-01-05T10:00:00Z"}\n')


def _scanner(sources: dict[str, tuple[Path, ...]], tmp: Path) -> Scanner:
    cursors = CursorStore(tmp / "cursors.json")
    names = list(sources)
    return Scanner({n: load_source(n) for n in names}, dict(sources),
                   {n: source_kind(n) for n in names}, Hints("poll", threading.Event()),
                   cursors.get, idle_grace=5.0)


def _discovered(name: str, roots: tuple[Path, ...]) -> set[str]:
    return {str(p) for p, _ in load_source(name).discover(roots)}


class TestScanner:
    def test_new_files_match_discovery(self, tmp_path: Path) -> None:
        """Files taken between discoveries (events, changed directories) carry the keys
        and roots ``discover()`` gives them, for Claude and Codex layouts."""
        pytest.importorskip("relayburnd.sources.codex")
        claude = tmp_path / "claude"
        codex = tmp_path / "codex"
        (claude / "projects" / "-p").mkdir(parents=True)
        (codex / "sessions" / "2026" / "01" / "05").mkdir(parents=True)
        (claude / "projects" / "-p" / "a.jsonl").write_bytes(LINE)
        roots: dict[str, tuple[Path, ...]] = {"claude": (claude,), "codex": (codex,)}
        scanner = _scanner(roots, tmp_path)
        now = time.monotonic()
        scanner.sweep(now)
        assert set(scanner.files) == _discovered("claude", roots["claude"])
        new = [
            claude / "projects" / "-p" / "b.jsonl",
            claude / "projects" / "-p" / "a" / "subagents" / "agent-1.jsonl",
            claude / "projects" / "-q" / "c.jsonl",
            codex / "sessions" / "2026" / "01" / "05" / "rollout-x.jsonl",
            codex / "archived_sessions" / "rollout-y.jsonl",
        ]
        for path in new:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(LINE)
        # no events in poll mode: changed directories are noticed on the cold poll
        scanner.tick(now + COLD_POLL + 0.1, set(), False)
        want = _discovered("claude", roots["claude"]) | _discovered("codex", roots["codex"])
        assert set(scanner.files) == want
        for key, tracked in scanner.files.items():
            found = dict((str(p), r) for name in roots for p, r in
                         load_source(name).discover(roots[name]))
            assert tracked.root == found[key]

    def test_missing_root_becomes_a_target_when_created(self, tmp_path: Path) -> None:
        """A Claude root that does not exist is a target all the same, read once created."""
        root = tmp_path / "later"
        targets = targets_for("claude", (root,), load_source("claude"))
        assert [t.path for t in targets] == [root / "projects"]
        scanner = _scanner({"claude": (root,)}, tmp_path)
        now = time.monotonic()
        scanner.sweep(now)
        assert scanner.tree.missing
        (root / "projects" / "-p").mkdir(parents=True)
        (root / "projects" / "-p" / "s.jsonl").write_bytes(LINE)
        orders = scanner.tick(now + 0.3, set(), False)
        assert [o.tracked.key for o in orders] == [str(root / "projects" / "-p" / "s.jsonl")]


class TestHelpers:
    def test_fs_type_reads_mountinfo(self, tmp_path: Path) -> None:
        """The filesystem type comes from the longest mount point holding the path."""
        assert fs_type(Path("/proc/self")) == "proc"
        assert fs_type(tmp_path) not in (None, "proc")

    def test_metrics_text_format(self) -> None:
        """Counters and labelled gauges render as Prometheus text and parse back."""
        m = Metrics()
        m.inc("bytes_read_total", 10)
        m.inc("records_parsed_total", 2, kind="turn")
        m.computed("lag_bytes", lambda: [((("source", "claude"),), 5.0)])
        text = m.render()
        assert "# TYPE relayburnd_bytes_read_total counter" in text
        samples = parse_text(text)
        assert samples["relayburnd_bytes_read_total"] == 10
        assert samples['relayburnd_records_parsed_total{kind="turn"}'] == 2
        assert samples['relayburnd_lag_bytes{source="claude"}'] == 5


def test_held_records_and_hot_files_set_the_next_tick(tmp_path: Path) -> None:
    """The loop waits for the first held record to fall due; hot files that inotify
    cannot see want every tick."""
    from relayburnd.scan import Tracked

    claude = tmp_path / "claude"
    (claude / "projects" / "-p").mkdir(parents=True)
    scanner = _scanner({"claude": (claude,)}, tmp_path)
    assert scanner.revisit_within(1000.0) is None
    assert scanner.tick_within(50.0) is None
    for name, revisit in (("a", 1003.5), ("b", 1001.25), ("c", None)):
        path = claude / "projects" / "-p" / f"{name}.jsonl"
        scanner.files[str(path)] = Tracked("claude", path, claude / "projects", str(path),
                                           str(path.parent), revisit_at=revisit)
        scanner._revisits.add(str(path))
    assert scanner.revisit_within(1000.0) == 1.25
    assert scanner.revisit_within(1002.0) == 0.0  # overdue
    hot = scanner.files[str(claude / "projects" / "-p" / "a.jsonl")]
    hot.hot_until = 100.0
    scanner._hot.add(hot.key)
    assert scanner.tick_within(50.0) == 0.0  # polling mode: inotify tells nothing
    assert scanner.tick_within(150.0) is None  # no longer hot


def test_files_not_looked_at_yet_count_as_behind(tmp_path: Path) -> None:
    """Right after start the scanner tracks files it has not stat'ed yet: their bytes
    are reported behind (a fresh daemon with a backlog never reports a lag of 0), and
    a file read through is not."""
    from relayburnd.tail import Cursor

    claude = tmp_path / "claude"
    (claude / "projects" / "-p").mkdir(parents=True)
    a, b = (claude / "projects" / "-p" / f"{n}.jsonl" for n in "ab")
    a.write_bytes(LINE * 3)
    b.write_bytes(LINE)
    cursors = CursorStore(tmp_path / "cursors.json")
    st = b.stat()
    cursors.put(str(b), Cursor(source="claude", dev=st.st_dev, ino=st.st_ino, size=st.st_size,
                               mtime_ns=st.st_mtime_ns, offset=st.st_size))
    scanner = Scanner({"claude": load_source("claude")}, {"claude": (claude,)},
                      {"claude": "tail"}, Hints("poll", threading.Event()), cursors.get,
                      idle_grace=5.0)
    scanner._discover(["claude"], time.monotonic())
    assert all(t.sig is None for t in scanner.files.values())
    assert scanner.per_source(cursors.get) == {"claude": (2, 3 * len(LINE))}
