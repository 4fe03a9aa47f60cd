"""What happens to conversation content before it leaves the pipeline.

``full`` keeps text (after secret redaction when enabled), ``hash-only`` keeps
the SHA-256 and length but never the text, ``off`` drops content records, so
with ``hash-only`` and ``off`` prompt and response text never leave the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .records import ContentRecord, Record

# texts -> (redacted text, replacements) of each, in order
Redactor = Callable[[Sequence[str]], list[tuple[str, int]]]


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
            return [r for r in records if type(r) is not ContentRecord]
        with_text = [r for r in records if type(r) is ContentRecord and r.text is not None]
        if self.mode == "hash-only":
            for rec in with_text:
                rec.text = None
        elif self.redactor is not None and with_text:
            redacted = self.redactor([r.text for r in with_text])  # type: ignore[misc]
            for rec, (text, count) in zip(with_text, redacted, strict=True):
                rec.text, rec.redactions = text, count
        return records
