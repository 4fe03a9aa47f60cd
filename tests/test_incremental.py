"""Incremental equivalence: appending in arbitrary chunks between passes stores exactly
what one pass over the finished files stores (split lines, split responses, restarts)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayburnd.config import load_settings
from relayburnd.pipeline import Pipeline, build
from relayburnd.records import Record, kind_of
from relayburnd.storage.file import FileAdapter
from tests.conftest import PUBLIC, SYNTHETIC

SOURCES = [
    SYNTHETIC / "claude" / "c01-streaming-split",
    SYNTHETIC / "claude" / "c05-agent-progress",
    SYNTHETIC / "claude" / "c03-cross-file-copy",
    PUBLIC / "claude-code-log" / "claude",
]


def _corpus() -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every Claude file used, complete lines only."""
    files: list[tuple[str, bytes]] = []
    for i, root in enumerate(SOURCES):
        for path in sorted(root.rglob("*.jsonl")):
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                data = data[: data.rfind(b"\n") + 1]
            rel = f"projects/p{i}-{path.parent.name}/{path.name}"
            if "subagents" in path.parts:
                rel = f"projects/p{i}-{path.parents[2].name}/{path.parent.parent.name}/" \
                      f"subagents/{path.name}"
            files.append((rel, data))
    return files


CORPUS = _corpus()


def _snapshot(home: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """Everything the store holds, by kind and id (rank encodes the full content)."""
    adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(home)}))
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for rec in adapter.iter_records():
        out.setdefault(kind_of(rec), {})[rec.id] = (rec.rank,)
    adapter.close()
    return out


def _pass(home: Path, claude: Path) -> None:
    settings = load_settings({"RELAYBURN_HOME": str(home), "CLAUDE_CONFIG_DIR": str(claude)})
    pipeline, sink = build(settings)
    pipeline = Pipeline(settings, pipeline.deliverer, pipeline.cursors, sources=("claude",))
    try:
        pipeline.run_pass(final=True)
    finally:
        sink.close()


def _one_pass(tmp: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    claude = tmp / "whole" / "claude"
    for rel, data in CORPUS:
        dst = claude / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    _pass(tmp / "whole" / "home", claude)
    return _snapshot(tmp / "whole" / "home")


class TestChunkedAppends:
    """A chunked writer and repeated passes converge on the one-pass result."""

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cuts=st.lists(st.floats(0, 1), min_size=1, max_size=6))
    def test_any_split_points(self, tmp_path_factory: object, cuts: list[float]) -> None:
        """Cut every file at the same relative points (mid-line included) and pass after each."""
        tmp = Path(os.path.realpath(
            tmp_path_factory.mktemp("inc")))  # type: ignore[attr-defined]
        expected = _one_pass(tmp)
        claude = tmp / "chunked" / "claude"
        home = tmp / "chunked" / "home"
        written = {rel: 0 for rel, _ in CORPUS}
        for frac in [*sorted(cuts), 1.0]:
            for rel, data in CORPUS:
                target = int(len(data) * frac)
                if target <= written[rel]:
                    continue
                dst = claude / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with dst.open("ab") as fh:
                    fh.write(data[written[rel]:target])
                written[rel] = target
            _pass(home, claude)
        assert _snapshot(home) == expected
        shutil.rmtree(tmp, ignore_errors=True)

    def test_line_by_line(self, tmp_path: Path) -> None:
        """Every line in its own pass (the live-tailing extreme) gives the same store."""
        expected = _one_pass(tmp_path)
        claude = tmp_path / "lines" / "claude"
        home = tmp_path / "lines" / "home"
        rel, data = next((r, d) for r, d in CORPUS if "c01" in r or "p0-" in r)
        dst = claude / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        for line in data.splitlines(keepends=True):
            with dst.open("ab") as fh:
                fh.write(line)
            _pass(home, claude)
        for other, odata in CORPUS:
            if other == rel:
                continue
            p = claude / other
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(odata)
        _pass(home, claude)
        assert _snapshot(home) == expected

    def test_second_pass_stores_nothing(self, tmp_path: Path) -> None:
        """Running ingest twice stores nothing new the second time."""
        _one_pass(tmp_path)
        settings = load_settings({"RELAYBURN_HOME": str(tmp_path / "whole" / "home"),
                                  "CLAUDE_CONFIG_DIR": str(tmp_path / "whole" / "claude")})
        pipeline, sink = build(settings)
        pipeline = Pipeline(settings, pipeline.deliverer, pipeline.cursors, sources=("claude",))
        report = pipeline.run_pass(final=True)
        sink.close()
        assert report.files_read == 0
        assert report.written.inserted == 0 and report.written.updated == 0


def _records(home: Path) -> list[Record]:
    adapter = FileAdapter(load_settings({"RELAYBURN_HOME": str(home)}))
    try:
        return list(adapter.iter_records())
    finally:
        adapter.close()
