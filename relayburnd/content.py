"""What happens to conversation content before it leaves the pipeline.

``full`` keeps text (after secret redaction when enabled), ``hash-only`` keeps
the SHA-256 and length but never the text, ``off`` drops content records, so
with ``hash-only`` and ``off`` prompt and response text never leave the host.
"""

from __future__ import annotations

from collections.abc import Callable

from .records import ContentRecord, Record

Redactor = Callable[[str], tuple[str, int]]


class ContentPolicy:
    """Applies ``content.store`` (and redaction) to a list of parsed records."""

    def __init__(self, mode: str, redactor: Redactor | None = None) -> None:
        if mode not in ("full", "hash-only", "off"):
            raise ValueError(mode)
        self.mode = mode
        self.redactor = redactor

    @property
    def wants_content(self) -> bool:
        return self.mode != "off"

    def apply(self, records: list[Record]) -> list[Record]:
        if self.mode == "off":
            return [r for r in records if not isinstance(r, ContentRecord)]
        for rec in records:
            if not isinstance(rec, ContentRecord) or rec.text is None:
                continue
            if self.mode == "hash-only":
                rec.text = None
            elif self.redactor is not None:
                rec.text, rec.redactions = self.redactor(rec.text)
        return records
