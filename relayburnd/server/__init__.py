"""``relayburnd serve``: the ingest and query HTTP API in front of sqlite or postgres.

Hosts ship batches with ``RELAYBURN_STORAGE=http``; reports read through the
same API. The server is stateless (everything lives in the store), so several
can run behind one load balancer against one PostgreSQL.

Why Starlette on uvicorn, with msgspec validation
-------------------------------------------------

Measured with ``bench/server.py`` on a 2-vCPU machine that also ran PostgreSQL 15
and the clients, 1,000-turn batches (gzip level 1 on the wire):

* Starlette on uvicorn, decoding straight into the record structs with msgspec
  (one pass, strict types, no second object model), carried 23-30k turns/s from
  one client, 57-66% of the 37-45k of direct adapter writes in the same runs.
  The added cost per batch is about 5 ms on the client (encode, gzip) and 5 ms
  on the server (inflate, decode, checks: 3.5 ms of it msgspec and the checks
  once the GC was tuned, see ``run``), beside a 20-25 ms database write.
* One process is bound by its GIL: four clients got 29-34k turns/s (44-60% of
  direct), and ``--workers 2`` raised that to 42-45k (62-77%).
* Earlier measurements for this project: pydantic models cost about 20% of the
  throughput of msgspec structs, and the standard library's ``http.server``
  added 40-50 ms per request (a 40 ms stall is the signature of Nagle's
  algorithm meeting delayed ACKs, which ``--workers`` also met until
  ``TCP_NODELAY`` was set on its socket).

Later measurements (``docs/scaling.md`` section 2): zstd instead of gzip on
the wire cut the client's compression from 2.6 to 0.7 ms per 1,000 turns and
the server's inflating from 0.85 to 0.25 ms; uvloop and httptools, which
uvicorn uses when they are installed, cut about 0.4 ms of server CPU per
request.

``docs/scaling.md`` turns these figures into a capacity model.

Starlette, uvicorn (with uvloop and httptools) and prometheus-client are the
``server`` extra and are imported only by this package, which only
``relayburnd serve`` imports: a daemon that ships to a file or a database
never loads them.

Modules: ``app`` (routes, handlers), ``auth`` (tokens), ``body`` (size, time and
decompression limits), ``validate`` (strict record checks), ``pool`` (database
connections), ``telemetry`` (metrics), ``openapi`` (the API document), ``run``
(uvicorn).
"""

from __future__ import annotations
