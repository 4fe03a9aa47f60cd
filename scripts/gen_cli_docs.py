#!/usr/bin/env python3
"""Write docs/cli.md from the command line's own help texts (``--check`` compares instead).

The reference is generated so it cannot drift from the code; ``tests/test_docs.py``
runs the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relayburnd.cli import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=" ".join(path))
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                out.extend(_walk(sub, [*path, name]))
    return out


def render() -> str:
    parts = [
        "# Command reference",
        "",
        "Generated from the commands' own help (`python scripts/gen_cli_docs.py`).",
        "`burn` is the same program as `relayburnd`.",
        "",
    ]
    for path, cmd in _walk(cli, ["relayburnd"]):
        ctx = click.Context(cmd, info_name=" ".join(path))
        parts.append(f"## {' '.join(path)}")
        parts.append("")
        parts.append("```text")
        parts.append(cmd.get_help(ctx).rstrip())
        parts.append("```")
        parts.append("")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if DOC.read_text() != text:
            print("docs/cli.md is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
