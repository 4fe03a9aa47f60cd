"""Text and tool-outcome extraction for Codex rollout items.

Codex writes the same values in several shapes over its releases: tool
arguments as a JSON string or as an object, tool output as plain text, as a
JSON string wrapping ``output`` + ``metadata.exit_code``, as an object with
``content``/``success``, or as a list of content items. These helpers turn each
shape into text plus an outcome, so the parser stays a plain state machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

# Harness-written user messages that carry context, not something the user typed
# (format spec 3.5 and 7.6).
_INJECTED_PREFIXES = (
    "<environment_context>",
    "<user_instructions>",
    "<permissions instructions>",
    "<INSTRUCTIONS>",
    "# AGENTS.md instructions",
    "<turn_aborted>",
    "<user_shell_command>",
)
_EXIT_PATTERNS = (
    re.compile(r"^Exit code: (-?\d+)", re.MULTILINE),
    re.compile(r"Process exited with code (-?\d+)"),
)
_UUID_TAIL = re.compile(r"([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})$")
_TEXT_BLOCKS = frozenset({"input_text", "output_text", "text", "summary_text"})
_json = msgspec.json.Decoder()


def session_from_name(path: Path) -> str:
    """Session id of a file without session_meta: the uuid its name ends with."""
    m = _UUID_TAIL.search(path.stem)
    return m.group(1) if m else path.stem


def is_json_object(fragment: bytes) -> bool:
    """Whether an unterminated last line already holds a whole JSON object."""
    try:
        return isinstance(_json.decode(fragment.strip()), dict)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False


def is_injected(text: str) -> bool:
    """True for context the harness put into a user message (AGENTS.md, environment)."""
    return text.lstrip().startswith(_INJECTED_PREFIXES)


def block_texts(content: Any) -> list[str]:
    """Texts of a content array (``input_text``/``output_text``/``summary_text`` blocks)."""
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        return []
    out: list[str] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in _TEXT_BLOCKS:
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(text)
    return out


def raw_value_text(raw: bytes | None) -> str | None:
    """The text of a raw JSON value: a string's value, or the JSON of anything else."""
    if raw is None or raw in (b"", b"null"):
        return None
    if raw[:1] == b'"':
        try:
            value = _json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        return value if isinstance(value, str) else None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class Outcome:
    """What a tool output says: its text, exit code when stated, and failure."""

    text: str
    exit_code: int | None
    is_error: bool


def _exit_from_text(text: str) -> int | None:
    """Codex states the exit code in the first lines of a command's output."""
    head = text[:400]
    for pattern in _EXIT_PATTERNS:
        m = pattern.search(head)
        if m:
            return int(m.group(1))
    return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _from_mapping(obj: dict[str, Any]) -> Outcome:
    """``{"output": ..., "metadata": {"exit_code": n}}`` or ``{"content": ..., "success": b}``."""
    body = obj.get("output", obj.get("content"))
    if isinstance(body, str):
        text = body
    elif isinstance(body, list):
        text = "\n".join(block_texts(body))
    elif "content_items" in obj:
        text = "\n".join(block_texts(obj.get("content_items")))
    else:
        text = ""
    meta = obj.get("metadata")
    code = _int_or_none(meta.get("exit_code")) if isinstance(meta, dict) else None
    if code is None:
        code = _int_or_none(obj.get("exit_code"))
    if code is None and text:
        code = _exit_from_text(text)
    failed = obj.get("success") is False or (code is not None and code != 0)
    return Outcome(text, code, failed)


def tool_outcome(output: Any) -> Outcome:
    """Read a ``function_call_output``/``custom_tool_call_output`` payload ``output``."""
    if isinstance(output, dict):
        return _from_mapping(output)
    if isinstance(output, list):
        return Outcome("\n".join(block_texts(output)), None, False)
    if not isinstance(output, str):
        return Outcome("", None, False)
    stripped = output.lstrip()
    if stripped.startswith("{"):
        try:
            decoded = _json.decode(stripped.encode("utf-8", "surrogatepass"))
        except (msgspec.DecodeError, UnicodeDecodeError):
            decoded = None
        if isinstance(decoded, dict) and ("output" in decoded or "metadata" in decoded):
            inner = _from_mapping(decoded)
            return Outcome(output, inner.exit_code, inner.is_error)
    code = _exit_from_text(output)
    return Outcome(output, code, code is not None and code != 0)
