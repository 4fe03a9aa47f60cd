"""What a source is: where an agent's logs live and an incremental parser for them.

Two shapes exist, because agents write in two ways:

* ``TailSource`` (Claude Code, Codex): append-only JSONL files. The pipeline
  reads complete lines past a byte cursor and hands them to ``parse`` with the
  parser state saved in that cursor. ``parse`` is pure: it never touches the
  file system or the environment, so fixture bytes drive it in tests.
* ``PollSource`` (OpenCode): files rewritten in place and a SQLite database.
  ``poll`` re-reads what changed since the state it was given.

Both return records plus the new state; the pipeline commits that state only
after the sink acknowledged the records (the source file is the buffer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from ..records import Record

JSONState = dict[str, Any]


class ParseResult(msgspec.Struct):
    """Records parsed from ``consumed`` bytes, the state after them, and what was skipped."""

    records: list[Record]
    state: JSONState
    consumed: int
    skipped: Counter[str] = msgspec.field(default_factory=Counter)
    # (offset relative to the data start, length, reason) of each skipped line
    skipped_lines: list[tuple[int, int, str]] = msgspec.field(default_factory=list)
    # the state holds records not yet emitted (e.g. a response still streaming)
    pending: bool = False


class FileContext(msgspec.Struct, frozen=True):
    """What a parser may know about the file besides its bytes.

    ``with_content`` is False when content is not stored at all, so parsers
    may skip extracting text.
    """

    path: Path
    root: Path
    offset: int = 0
    with_content: bool = True


class TailSource(Protocol):
    name: str

    def discover(self, roots: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
        """Yield ``(file, root)`` for every log file below the roots, in path order."""
        ...

    def parse(
        self, data: bytes, state: JSONState, ctx: FileContext, *, final: bool
    ) -> ParseResult:
        """Parse complete lines in ``data`` (it ends at a newline or is empty).

        ``final`` means no more bytes are expected soon (idle file, last pass):
        records held back while a response might still be streaming are emitted.
        """
        ...


class PollResult(msgspec.Struct):
    records: list[Record]
    state: JSONState
    skipped: Counter[str] = msgspec.field(default_factory=Counter)
    errors: list[str] = msgspec.field(default_factory=list)
    files_read: int = 0


class PollSource(Protocol):
    name: str

    def poll(self, roots: Sequence[Path], state: JSONState) -> PollResult:
        """Read what changed since ``state`` and return it with the next state."""
        ...
