"""``relayburnd run``, ``drain``, ``status`` and ``doctor``: the daemon's commands.

``run`` is the long-running shipper (systemd unit, sidecar, CI background
step); ``drain`` is one complete pass for CI runners that kill without a
signal; ``status`` and ``doctor`` answer "is it working, and if not, why".

Exit codes are the CLI's (``relayburnd exit-codes``): 0 when everything read
was delivered, 75 when records were left undelivered (the per-file account
is printed on stderr), 1 for an error such as a second instance on the same
RELAYBURN_HOME, 2 for an invalid setting.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_SOURCES = ("claude", "codex", "opencode")
_source_option = click.option(
    "--source", "sources", multiple=True, type=click.Choice(_SOURCES),
    help="Only these agents (repeatable). Default: all.")


def _handled(fn: F) -> F:
    """``cli.handle_errors``, looked up at call time (cli imports this module)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..cli import handle_errors

        return handle_errors(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _chosen(sources: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s for s in _SOURCES if s in sources) if sources else _SOURCES


def _exit_with(result: Any) -> None:
    """Exit 0, or 75 with one line per file: its path and the bytes not delivered."""
    from ..cli import EXIT_UNDELIVERED, Abort

    if result.code == 0:
        return
    lines = [f"  {path}: {n} bytes not delivered"
             for path, n in sorted(result.undelivered.items())]
    raise Abort(
        f"{len(result.undelivered)} file(s) not delivered ({result.reason}):\n"
        + "\n".join(lines),
        EXIT_UNDELIVERED,
    )


@click.command("run")
@_source_option
@_handled
def run(sources: tuple[str, ...]) -> None:
    """Tail agent logs and ship them until stopped.

    SIGTERM or SIGINT drains (linger while files are written, final pass,
    flush until RELAYBURN_DRAIN_TIMEOUT); a second signal exits at once.
    """
    from ..cli import get_settings
    from ..daemon import Daemon

    settings = get_settings(daemon=True)
    _exit_with(Daemon(settings, sources=_chosen(sources)).run())


@click.command("drain")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to keep retrying the sink (default RELAYBURN_DRAIN_TIMEOUT).")
@_source_option
@_handled
def drain(timeout: float | None, sources: tuple[str, ...]) -> None:
    """Read every agent log to the end, deliver, commit cursors, exit.

    For CI runners that kill background processes without a signal: run it
    as a last step. Unterminated last lines and responses still open are
    shipped. Exits 75 when something could not be delivered in time.
    """
    from ..cli import get_settings
    from ..daemon import Daemon

    settings = get_settings()
    result = Daemon(settings, sources=_chosen(sources), drain_timeout=timeout,
                    oneshot=True).run()
    click.echo(result.report.one_line())
    _exit_with(result)


@click.group("ctl")
def ctl() -> None:
    """Tell a running daemon on this RELAYBURN_HOME about the platform's lifecycle."""


@ctl.command("prestop")
@_handled
def prestop_cmd() -> None:
    """Mark that the pod began stopping (for a Kubernetes preStop hook).

    At SIGTERM the daemon then drains for at most RELAYBURN_GRACE_PERIOD
    seconds from this moment, minus 2 s, so it exits on its own before
    SIGKILL even when the hook itself used part of the grace period.
    """
    from .. import prestop
    from ..cli import get_settings
    from ..home import HomeLayout

    settings = get_settings()
    layout = HomeLayout(settings.home).ensure()
    prestop.mark(layout.prestop)
    if settings.grace_period is None:
        click.echo("prestop marked; RELAYBURN_GRACE_PERIOD is not set, so the drain "
                   "keeps RELAYBURN_DRAIN_TIMEOUT")
    else:
        click.echo(f"prestop marked; the drain ends within {settings.grace_period:g} s "
                   "of now, less 2 s")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_handled
def status(as_json: bool) -> None:
    """Files tracked and bytes behind per agent, last flush, sink health.

    Works whether or not the daemon runs (its status.json adds the flush
    time and the sink's health).
    """
    from ..cli import get_settings
    from ..status import build_report

    report = build_report(get_settings())
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    for line in report.lines():
        click.echo(line)


@click.command("doctor")
@_handled
def doctor() -> None:
    """Check agent directories, inotify limits, RELAYBURN_HOME, the lock and the sink.

    Each problem comes with a fix; exits 1 when a check fails.
    """
    from ..cli import Abort, get_settings
    from ..doctor import FAIL, run_checks

    checks = run_checks(get_settings())
    for check in checks:
        for line in check.lines():
            click.echo(line)
    failed = [c.name for c in checks if c.result == FAIL]
    if failed:
        raise Abort(f"{len(failed)} check(s) failed: {', '.join(failed)}")


__all__ = ["doctor", "drain", "run", "status"]
