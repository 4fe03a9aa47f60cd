"""The documentation and the public surface stay in step with the code."""

from __future__ import annotations

import subprocess
import sys

import click

import relayburnd
from relayburnd.cli import cli
from tests.conftest import REPO


def _commands(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            out.extend(_commands(sub, f"{path} {name}"))
    return out


class TestCommandDocs:
    """Every command has help text and an entry in docs/cli.md."""

    def test_every_command_has_help(self) -> None:
        """No command is undocumented in --help."""
        missing = [p for p, c in _commands(cli, "relayburnd") if not (c.help or "").strip()]
        assert missing == []

    def test_reference_is_current(self) -> None:
        """docs/cli.md equals what scripts/gen_cli_docs.py generates."""
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_cli_docs.py"),
                               "--check"], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr

    def test_readme_commands_exist(self) -> None:
        """Both quick-start commands name real commands."""
        readme = (REPO / "README.md").read_text()
        assert "pip install" in readme and "python -m pytest" in readme
        ctx = click.Context(cli)
        for name in ("ingest", "summary", "run"):
            assert cli.get_command(ctx, name) is not None


class TestPublicSurface:
    """The package's exported names are pinned."""

    def test_package_all(self) -> None:
        """relayburnd exports only its version."""
        assert relayburnd.__all__ == ["__version__"]

    def test_storage_all(self) -> None:
        """relayburnd.storage exports the adapter seam."""
        import relayburnd.storage as storage

        assert sorted(storage.__all__) == [
            "ADAPTERS", "Filter", "StorageAdapter", "SummarySpec", "open_adapter",
        ]
