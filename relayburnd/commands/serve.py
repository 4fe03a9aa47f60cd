"""``relayburnd serve``: the HTTP API that ``RELAYBURN_STORAGE=http`` clients talk to.

The backing store is chosen by the usual settings (``RELAYBURN_STORAGE=sqlite``
or ``postgres``); tokens by ``RELAYBURN_SERVER_TOKENS`` or
``RELAYBURN_SERVER_TOKENS_FILE``. The server's modules (and Starlette, uvicorn,
prometheus-client) are imported only when the command runs.
"""

from __future__ import annotations

import click

DEFAULT_PORT = 8787


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 or :: for every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes on the one port (each with its own database "
                   "connections); more than one uses more CPU cores.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Accept requests without a token; refused unless --host is a loopback "
                   "address. For trying things out on one machine.")
def serve(host: str, port: int, workers: int, insecure_no_auth: bool) -> None:
    """Serve the ingest and query API in front of the sqlite or postgres store."""
    from ..cli import EXIT_USAGE, Abort, get_settings, handle_errors

    @handle_errors
    def run() -> None:
        settings = get_settings(daemon=True)
        try:
            from ..server.run import is_loopback
            from ..server.run import serve as serve_forever
        except ModuleNotFoundError as exc:
            raise Abort(f"relayburnd serve needs {exc.name}: install the server extra "
                        "(pip install 'relayburnd[server]')") from None
        if insecure_no_auth and not is_loopback(host):
            raise Abort(f"--insecure-no-auth is refused on {host}: use a loopback address "
                        "(127.0.0.1, ::1) or configure RELAYBURN_SERVER_TOKENS", EXIT_USAGE)
        serve_forever(settings, host, port, insecure_no_auth=insecure_no_auth, workers=workers)

    run()
