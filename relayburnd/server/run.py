"""Running the application under uvicorn with the limits the API documents.

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, lets
requests in flight finish for up to ``GRACEFUL_SHUTDOWN`` seconds (below
Kubernetes' default 30 s grace period), then the application's lifespan closes
the database connections.

The keep-alive timeout is longer than the client's idle-connection expiry
(httpx: 5 s), so it is always the client that drops an idle connection; the
other way round, a client can send a batch on a connection the server is
closing at that moment and see a spurious connection error.

One process decodes and validates batches under one GIL, which is what limits a
server with several busy clients (``bench/server.py``, ``docs/scaling.md``).
``--workers N`` runs N processes on one listening socket, each with its own
database connections; the server keeps no state, so they need no coordination.
Their metrics are summed through prometheus-client's multiprocess mode (one
file per process in a temporary directory), so ``/metrics`` is complete
whichever worker answers the scrape.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from ..logging import get_logger
from .app import ServerConfig, create_app

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from ..config import Settings

log = get_logger("server")

GRACEFUL_SHUTDOWN = 25
KEEP_ALIVE = 75
MAX_CONNECTIONS = 1000
SWITCH_INTERVAL = 0.001
_NO_AUTH_ENV = "_RELAYBURN_SERVE_NO_AUTH"  # parent -> workers: --insecure-no-auth was given


class _Server(uvicorn.Server):
    """uvicorn's server, except that a graceful stop on SIGTERM/SIGINT exits 0.

    uvicorn re-raises the signal once it has shut down, so the process would
    end "killed by SIGTERM"; relayburnd's commands exit 0 after a clean stop
    (``relayburnd exit-codes``), and supervisors then log no failure.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: the only addresses ``--insecure-no-auth`` may use."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tune_process() -> None:
    """Interpreter settings for a process that serves batches (both measured).

    * Database threads mostly wait on sockets; a thread coming back from I/O waits
      for the GIL up to the switch interval while another thread decodes a batch.
      At the default 5 ms that convoy cost about a fifth of the throughput with four
      clients; 1 ms recovers it for a little more switching.
    * Decoding a batch allocates tens of thousands of objects, so the cyclic GC runs
      full collections every few batches, each walking every object the imports
      left behind. Freezing those (they live as long as the process) took decoding
      and checking 1,000 turns from 5.2 to 3.5 ms; the records themselves are freed
      by reference counting as soon as their batch is written.
    """
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()


def _options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_keep_alive": KEEP_ALIVE,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        "limit_concurrency": MAX_CONNECTIONS,
    }


def worker_app() -> ASGIApp:
    """The application of one ``--workers`` process: settings from the inherited environment."""
    from ..config import load_settings
    from ..logging import configure

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    app = create_app(settings, insecure_no_auth=os.environ.get(_NO_AUTH_ENV) == "1")
    _tune_process()
    return app


def serve(settings: Settings, host: str, port: int, *, insecure_no_auth: bool = False,
          workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT (ConfigError/SinkError if the server cannot start)."""
    auth = "off (loopback only)" if insecure_no_auth else "bearer tokens"
    if workers > 1:
        _serve_workers(settings, host, port, insecure_no_auth, workers)
        return
    app = create_app(settings, insecure_no_auth=insecure_no_auth)
    _tune_process()
    log.info("server.listening", host=host, port=port, storage=settings.storage, auth=auth)
    _Server(uvicorn.Config(app, **_options(host, port))).run()
    log.info("server.stopped")


def _serve_workers(settings: Settings, host: str, port: int, insecure_no_auth: bool,
                   workers: int) -> None:
    from uvicorn.supervisors import Multiprocess

    ServerConfig.from_settings(settings, insecure_no_auth=insecure_no_auth)  # fail here, once
    metrics_dir = tempfile.mkdtemp(prefix="relayburnd-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[_NO_AUTH_ENV] = "1" if insecure_no_auth else "0"
    config = uvicorn.Config("relayburnd.server.run:worker_app", factory=True, workers=workers,
                            **_options(host, port))
    try:
        sock = config.bind_socket()
        # Workers get the socket by file descriptor, which hides its protocol from
        # asyncio, so it no longer sets TCP_NODELAY on connections; without it every
        # answer (headers, then body) waited 40 ms for a delayed ACK (measured).
        # Accepted connections inherit the option from the listening socket.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("server.listening", host=host, port=port, storage=settings.storage,
                 workers=workers, auth="off (loopback only)" if insecure_no_auth
                 else "bearer tokens")
        Multiprocess(config, sockets=[sock]).run()
        log.info("server.stopped")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
