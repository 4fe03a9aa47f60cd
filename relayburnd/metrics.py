"""The daemon's counters and gauges, rendered in the Prometheus text format.

Why not prometheus-client: it is an optional extra, and the daemon needs
a dozen samples, a lock and a text renderer, which is less than the glue
to wire a registry. The names follow ``relayburnd_<name>_<unit>_total``
for counters. Counters are raised once per batch or pass, not per record,
so the hot path pays a lock and a dict update at most a few times a second.
Families derived from other state (lag, ages, the Deliverer's retry
counts) are computed when ``/metrics`` is scraped, through callbacks
registered with ``computed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, float]


@dataclass(frozen=True)
class Spec:
    """One metric family: its name without the prefix, type and help line."""

    name: str
    kind: str  # counter | gauge
    help: str


PREFIX = "relayburnd_"

SPECS: tuple[Spec, ...] = (
    Spec("bytes_read_total", "counter", "Bytes of agent logs read past their cursors."),
    Spec("records_parsed_total", "counter", "Records parsed from agent logs, by kind."),
    Spec("records_shipped_total", "counter",
         "Records the sink stored as new or as a larger snapshot."),
    Spec("records_deduplicated_total", "counter",
         "Records the sink already had (re-delivery absorbed)."),
    Spec("records_dead_lettered_total", "counter",
         "Records and lines written to deadletter.jsonl instead of the sink."),
    Spec("lines_skipped_total", "counter", "Log lines skipped, by reason."),
    Spec("lines_unterminated_total", "counter",
         "Unterminated last lines consumed at drain or from a deleted file."),
    Spec("batches_total", "counter", "Batches the sink acknowledged."),
    Spec("retries_total", "counter", "Retries of a batch after a transient sink error."),
    Spec("sink_errors_total", "counter", "Sink errors by class."),
    Spec("file_resets_total", "counter", "Files read again from 0 (truncated or replaced)."),
    Spec("parse_errors_total", "counter",
         "Reads that failed on an unexpected error; the file keeps its cursor."),
    Spec("deleted_unread_bytes_total", "counter",
         "Bytes lost because a file disappeared before they were read."),
    Spec("checkpoint_writes_total", "counter",
         "Cursor checkpoints written (journal lines and cursors.json rewrites)."),
    Spec("checkpoint_write_errors_total", "counter", "Failed cursor checkpoints."),
    Spec("files_tracked", "gauge", "Agent log files known, by source."),
    Spec("files_open", "gauge", "Log files held open (active, behind, or deleted)."),
    Spec("lag_bytes", "gauge", "Bytes on disk past the acknowledged cursors, by source."),
    Spec("oldest_unacked_age_seconds", "gauge",
         "Age of the oldest record read but not yet acknowledged."),
    Spec("last_flush_timestamp_seconds", "gauge",
         "Unix time of the last batch the sink acknowledged."),
    Spec("sink_up", "gauge", "1 when the last delivery attempt succeeded."),
    Spec("watch_mode", "gauge", "1 for the active watch mode (inotify, partial or poll)."),
    Spec("inotify_watches", "gauge", "inotify watches this process holds."),
    Spec("inotify_watches_needed", "gauge", "Directories that should be watched."),
    Spec("inotify_watch_shortfall", "gauge",
         "Directories without an inotify watch; their files are polled."),
    Spec("state_quarantined_total", "counter", "Corrupt state files renamed aside at start."),
    Spec("heartbeat_age_seconds", "gauge", "Seconds since the main loop last went round."),
)
_SPEC_BY_NAME = {s.name: s for s in SPECS}


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """A thread-safe set of the families in ``SPECS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {s.name: {} for s in SPECS}
        self._fns: dict[str, Callable[[], Iterable[Sample]]] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if not value:
            return
        key = _labels(labels)
        with self._lock:
            family = self._values[name]
            family[key] = family.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][_labels(labels)] = value

    def replace(self, name: str, samples: Iterable[Sample]) -> None:
        """Replace every sample of a gauge family (e.g. one per source)."""
        with self._lock:
            self._values[name] = dict(samples)

    def computed(self, name: str, fn: Callable[[], Iterable[Sample]]) -> None:
        """Compute a family at scrape time (gauges derived from state, counters kept
        by another component)."""
        if name not in _SPEC_BY_NAME:
            raise KeyError(name)
        self._fns[name] = fn

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when absent); for status and tests."""
        fn = self._fns.get(name)
        if fn is not None:
            return dict(fn()).get(_labels(labels), 0.0)
        with self._lock:
            return self._values[name].get(_labels(labels), 0.0)

    def total(self, name: str) -> float:
        """Sum over every label set of a family."""
        fn = self._fns.get(name)
        if fn is not None:
            return sum(v for _, v in fn())
        with self._lock:
            return sum(self._values[name].values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        computed = {name: list(fn()) for name, fn in self._fns.items()}
        lines: list[str] = []
        with self._lock:
            for spec in SPECS:
                samples = computed.get(spec.name)
                if samples is None:
                    samples = list(self._values[spec.name].items())
                full = PREFIX + spec.name
                lines.append(f"# HELP {full} {spec.help}")
                lines.append(f"# TYPE {full} {spec.kind}")
                if not samples and spec.kind == "counter":
                    samples = [((), 0.0)]
                for labels, value in sorted(samples):
                    if labels:
                        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                        lines.append(f"{full}{{{inner}}} {_format_value(value)}")
                    else:
                        lines.append(f"{full} {_format_value(value)}")
        return "\n".join(lines) + "\n"


def parse_text(text: str) -> dict[str, float]:
    """Samples of a rendered page keyed by ``name{labels}``; used by status and tests."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


__all__ = ["PREFIX", "SPECS", "Metrics", "Spec", "parse_text"]
