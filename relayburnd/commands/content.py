"""``relayburnd content``: read a session's stored transcript, prune old content.

``prune`` applies the retention rule of ``retention.py`` once, now, to any
store (with ``RELAYBURN_STORAGE=http`` the server deletes, for a token limited
to neither read nor write); the daemon applies it by itself at most hourly,
and ``relayburnd serve`` to its own store. ``show`` prints what the store holds for
one session, in conversation order; with ``content.store = hash-only`` that is
hashes and lengths, never text.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from ..cli import EXIT_USAGE, Abort, get_settings, handle_errors
from ..records import ContentRecord, to_dict


@click.group()
def content() -> None:
    """Stored conversation content: show a transcript, prune old content."""


@content.command("prune")
@click.option("--days", "days_text", metavar="N",
              help="Keep the last N days of content; 0 removes all of it. "
                   "Default: RELAYBURN_CONTENT_TTL_DAYS.")
@handle_errors
def prune_cmd(days_text: str | None) -> None:
    """Remove content older than the retention period."""
    from ..retention import parse_days, prune
    from ..storage import open_adapter

    days = parse_days(days_text) if days_text is not None else None
    settings = get_settings()
    if days is None:
        days = settings.content_ttl_days
        if days is None:
            click.echo("content is kept without limit (RELAYBURN_CONTENT_TTL_DAYS is empty); "
                       "nothing pruned")
            return
    adapter = open_adapter(settings)
    try:
        result = prune(adapter, days)
    finally:
        adapter.close()
    click.echo(result.one_line())


def transcript_order(records: list[ContentRecord]) -> list[ContentRecord]:
    """Conversation order whatever order a store returns: time, message, block position."""
    return sorted(records, key=lambda r: (r.ts, r.message_id, r.seq, r.id))


def format_record(rec: ContentRecord, tz: str) -> str:
    from ..reports import get_tz

    when = datetime.fromtimestamp(rec.ts / 1000, get_tz(tz)).isoformat(sep=" ",
                                                                       timespec="seconds")
    head = f"{when}  {rec.role}  {rec.block_type}"
    if rec.tool_name:
        head += f"  {rec.tool_name}"
    if rec.text is None:
        body = f"[text not stored] sha256:{rec.sha256 or '-'}  {rec.chars:,} chars"
    else:
        body = rec.text
    indented = "\n".join(f"    {line}" for line in body.splitlines() or [""])
    return f"{head}\n{indented}\n"


@content.command("show")
@click.argument("session_id")
@click.option("--tz", default="local", show_default=True,
              help="Time zone for the times: local, UTC or an IANA name.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@handle_errors
def show(session_id: str, tz: str, as_json: bool) -> None:
    """Print a session's transcript in order: time, role, block type and text."""
    from ..reports import get_tz, local_zone_name
    from ..storage import open_adapter
    from ..storage.file import is_safe_session_id

    if not is_safe_session_id(session_id):
        raise Abort(f"session id {session_id!r} is not valid (letters, digits and ._:@+=- only)",
                    EXIT_USAGE)
    zone = local_zone_name() if tz == "local" else tz
    get_tz(zone)
    adapter = open_adapter(get_settings())
    try:
        records = transcript_order(adapter.content(session_id))
    finally:
        adapter.close()
    if not records:
        raise Abort(f"no content is stored for session {session_id!r}")
    if as_json:
        click.echo(json.dumps([to_dict(r) for r in records], indent=2, ensure_ascii=False))
        return
    click.echo("\n".join(format_record(r, zone) for r in records), nl=False)
