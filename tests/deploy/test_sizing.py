"""The sidecar's resources in k8s/ against what relayburnd measurably uses
(tests/deploy/sizing.py, with a smaller corpus than the documented run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import K8S, Bundle, PgDatabase, cpu_cores, mem_mib
from sizing import measure


@pytest.mark.slow
@pytest.mark.postgres
def test_measured_usage_fits_the_requests_and_limits(tmp_path: Path, pg_db: PgDatabase) -> None:
    """Idle CPU and memory fit the requests, a backlog's peak memory fits the request too
    (so a busy sidecar is not the first evicted), and its CPU stays under the limit."""
    res = Bundle.load(K8S).sidecar()["resources"]
    figures = measure(tmp_path, claude_mb=30, codex_mb=6, opencode_sessions=10, idle_s=10,
                      steady_s=10, db=pg_db)
    assert figures.exit_code == 0
    assert figures.idle_cpu_percent / 100 <= cpu_cores(res["requests"]["cpu"]), figures
    assert figures.steady_cpu_percent / 100 <= cpu_cores(res["requests"]["cpu"]) * 2, figures
    assert figures.peak_rss_mib <= mem_mib(res["requests"]["memory"]), figures
    assert figures.backlog_cpu_mean_cores <= cpu_cores(res["limits"]["cpu"]), figures
