"""Codex CLI rollouts: discovery and an incremental, resumable parser.

Reading rules (format spec 3 and 7.4):

* Usage comes only from ``event_msg``/``token_count``. Each event is billed by
  the cumulative-difference rule in ``_codex_usage.billed``: re-emits count
  nothing, a counter drop counts the request at the drop, ``info: null`` is
  ignored without touching any state.
* A request's id is the thread id of the current segment plus the event's full
  cumulative vector, so an archived copy, a re-read after a move and a branch
  copy of the same history all produce the same ids. Without a cumulative
  vector (or without any thread id) the event timestamp joins the key.
* Fork and sub-agent files replay the parent's history after a second
  ``session_meta``; those copied lines (and, in such files, anything dated before
  the child was created) are not billed or stored again, but their cumulative
  vector becomes the baseline for the child's first own event.
* Tool calls wait in the state until the next billed request and ride on its
  turn: a ``function_call`` is written before the ``token_count`` of the request
  that asked for it. Calls whose request never reports usage (an interrupted
  turn, a file without token events) still appear as tool results and as
  ``tool_use`` content.
* Most text is written twice, as an ``event_msg`` and as a ``response_item``;
  it is stored once. User turns come from ``user_message`` events only, so the
  context the harness injects into user items is never a turn.
* Other records (user turns, content, compactions) are keyed by the segment's
  thread id plus the line's timestamp and a hash of its payload, or plus the
  ``call_id`` for tool items.
* Malformed, NUL-damaged and non-UTF-8 lines and unknown record kinds are
  skipped and counted; they never stop the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from .base import FileContext, JSONState, ParseResult

_NON_ROLLOUT = frozenset({"history.jsonl", "session_index.jsonl"})

# ------------------------------------------------------------ discovery


def _walk_jsonl(top: Path, *, skip_names: frozenset[str] = frozenset()) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda _e: None):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".jsonl") and not (dirpath == str(top) and name in skip_names):
                out.append(Path(dirpath) / name)
    return out


class CodexSource:
    """Codex CLI: ``sessions/**`` and ``archived_sessions/**`` below each Codex home."""

    name = "codex"

    def discover(self, roots: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
        """Every ``*.jsonl`` below ``sessions/`` and ``archived_sessions/``, in path order.

        An archived file whose name also exists below ``sessions/`` is the same
        rollout and is read once, from the active copy. A home with neither
        folder is read as a folder of rollouts itself.
        """
        seen: set[Path] = set()
        for root in roots:
            active_dir, archive_dir = root / "sessions", root / "archived_sessions"
            if active_dir.is_dir() or archive_dir.is_dir():
                active = _walk_jsonl(active_dir) if active_dir.is_dir() else []
                names = {p.name for p in active}
                archived = _walk_jsonl(archive_dir) if archive_dir.is_dir() else []
                files = active + [p for p in archived if p.name not in names]
            elif root.is_dir():
                files = _walk_jsonl(root, skip_names=_NON_ROLLOUT)
            else:
                continue
            for path in sorted(files, key=str):
                try:
                    resolved = path.resolve()
                except OSError:
                    resolved = path
                if resolved not in seen:
                    seen.add(resolved)
                    yield path, root

    def watch_dirs(self, roots: Sequence[Path]) -> list[Path]:
        out: list[Path] = []
        for root in roots:
            subs = [root / "sessions", root / "archived_sessions"]
            found = [d for d in subs if d.is_dir()]
            out.extend(found or [root])
        return out

    def parse(self, data: bytes, state: JSONState, ctx: FileContext, *, final: bool) -> ParseResult:
        # The parser and its shapes load with the first rollout read: a host without
        # Codex logs never imports them.
        from ._codex_parser import RolloutParser

        return RolloutParser(state, ctx).run(data, final)
