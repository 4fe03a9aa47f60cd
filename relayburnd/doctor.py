"""``relayburnd doctor``: check what the daemon needs, and say how to fix each problem.

Checks (each ends ``ok``, ``warn`` or ``FAIL`` with a concrete fix):

* agent directories: which sources have log directories, and how many files;
* inotify: ``fs.inotify.max_user_watches`` / ``max_user_instances`` against
  the directories to watch (watchdog does not report a shortfall itself);
* RELAYBURN_HOME: exists or can be created, and is writable;
* instance: whether a relayburnd already holds the lock on this home;
* state: ``cursors.json`` readable, no quarantined state files left over;
* sink: the configured adapter's ``healthcheck()``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import RelayburnError, SinkError
from .home import HomeLayout
from .sources import load_source, roots_for
from .status import lock_holder, read_json
from .tree import targets_for
from .watch import events_unreliable

OK, WARN, FAIL = "ok", "warn", "FAIL"
SOURCE_NAMES = ("claude", "codex", "opencode")


@dataclass
class Check:
    name: str
    result: str
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{self.result:<4}  {self.name}: {self.detail}"]
        if self.fix and self.result != OK:
            out.append(f"      fix: {self.fix}")
        return out


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _count_dirs(top: Path) -> int:
    count = 0
    stack = [str(top)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        count += 1
        stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    return count


def check_sources(settings: Settings) -> tuple[list[Check], list[Path]]:
    checks: list[Check] = []
    watch_roots: list[Path] = []
    found_any = False
    for name in SOURCE_NAMES:
        roots = roots_for(settings, name)
        try:
            src = load_source(name)
        except ModuleNotFoundError as exc:
            checks.append(Check(f"{name} logs", WARN, f"source module {exc.name} missing",
                                "reinstall relayburnd"))
            continue
        targets = targets_for(name, roots, src)
        present = [t.path for t in targets if t.path.is_dir()]
        watch_roots.extend(present)
        if not present:
            checks.append(Check(
                f"{name} logs", WARN,
                "no log directory under " + ", ".join(str(r) for r in roots),
                {"claude": "set CLAUDE_CONFIG_DIR", "codex": "set CODEX_HOME",
                 "opencode": "set OPENCODE_DATA_DIR"}[name]
                + " if the agent keeps its data elsewhere; it is watched once it appears"))
            continue
        found_any = True
        files = 0
        if hasattr(src, "discover"):
            files = sum(1 for _ in src.discover(roots))
        odd = [f"{p} ({kind})" for p in present if (kind := events_unreliable(p))]
        detail = f"{', '.join(str(p) for p in present)}; {files} log files"
        if odd:
            detail += "; polled, no inotify events on " + ", ".join(odd)
        checks.append(Check(f"{name} logs", OK, detail))
    if not found_any:
        checks.append(Check(
            "agent directories", FAIL, "no agent log directory found",
            "set CLAUDE_CONFIG_DIR, CODEX_HOME or OPENCODE_DATA_DIR to where the agents "
            "write (the daemon still starts and waits for them)"))
    return checks, watch_roots


def check_inotify(settings: Settings, watch_roots: list[Path]) -> Check:
    if settings.watch == "poll":
        return Check("inotify", OK, "not used (RELAYBURN_WATCH=poll); files are polled")
    # a user namespace (container) may set a lower limit of its own
    limits = [v for v in (_read_int("/proc/sys/fs/inotify/max_user_watches"),
                          _read_int("/proc/sys/user/max_inotify_watches")) if v is not None]
    watches = min(limits) if limits else None
    instances = _read_int("/proc/sys/fs/inotify/max_user_instances")
    if watches is None:
        return Check("inotify", WARN, "not available on this system; files are polled",
                     "nothing to do (polling costs more CPU), or set RELAYBURN_WATCH=poll")
    dirs = sum(_count_dirs(r) for r in watch_roots)
    detail = (f"{dirs} directories to watch; max_user_watches {watches}, "
              f"max_user_instances {instances}")
    need = max(2 * dirs, dirs + 1024)
    if dirs > watches:
        return Check("inotify", FAIL, detail + "; directories beyond the limit are polled",
                     f"sudo sysctl fs.inotify.max_user_watches={need} and persist it in "
                     "/etc/sysctl.d/90-relayburnd.conf")
    if dirs * 2 > watches:
        return Check("inotify", WARN, detail + "; little headroom (other programs use watches too)",
                     f"sudo sysctl fs.inotify.max_user_watches={need}")
    return Check("inotify", OK, detail)


def check_home(settings: Settings) -> Check:
    root = settings.home
    try:
        HomeLayout(root).ensure()
        fd, name = tempfile.mkstemp(prefix=".doctor-", dir=root)
        os.close(fd)
        os.unlink(name)
    except (RelayburnError, OSError) as exc:
        return Check("RELAYBURN_HOME", FAIL, f"{root}: {exc}",
                     f"create {root} writable by this user, or set RELAYBURN_HOME")
    return Check("RELAYBURN_HOME", OK, f"{root} is writable")


def check_instance(settings: Settings) -> Check:
    pid = lock_holder(HomeLayout(settings.home).instance_lock)
    if pid is None:
        return Check("instance", OK, "no relayburnd running on this home")
    return Check("instance", OK, f"relayburnd pid {pid} holds {settings.home}; a second "
                 "daemon on the same home would be refused")


def check_state(settings: Settings) -> Check:
    layout = HomeLayout(settings.home)
    leftovers = sorted(p.name for p in settings.home.glob("*.corrupt-*")) \
        if settings.home.is_dir() else []
    if layout.cursors.exists() and read_json(layout.cursors) is None:
        return Check("state", WARN, "cursors.json is unreadable",
                     "nothing to do: the daemon quarantines it at start and reads the logs "
                     "again (records are deduplicated)")
    if leftovers:
        return Check("state", WARN, "quarantined state files: " + ", ".join(leftovers),
                     f"inspect and delete them from {settings.home}")
    return Check("state", OK, "cursors readable")


def check_sink(settings: Settings) -> Check:
    from .storage import open_adapter

    name = settings.storage
    try:
        adapter = open_adapter(settings)
        try:
            adapter.healthcheck()
        finally:
            adapter.close()
    except SinkError as exc:
        return Check("sink", FAIL, f"{name}: {exc} ({type(exc).__name__})", _sink_fix(settings))
    except RelayburnError as exc:
        return Check("sink", FAIL, f"{name}: {exc}", _sink_fix(settings))
    return Check("sink", OK, f"{name} reachable")


def _sink_fix(settings: Settings) -> str:
    return {
        "file": f"make {settings.home} writable and check that no other process holds "
                "store.lock",
        "sqlite": "check RELAYBURN_SQLITE_PATH points to a writable file",
        "postgres": "check RELAYBURN_PG_DSN (host, port, user, password) and that the "
                    "server accepts connections from this host",
        "http": "check RELAYBURN_HTTP_URL and RELAYBURN_HTTP_TOKEN, and that "
                "`relayburnd serve` runs there",
    }.get(settings.storage, "check the RELAYBURN_STORAGE settings")


def run_checks(settings: Settings) -> list[Check]:
    checks, watch_roots = check_sources(settings)
    checks.append(check_inotify(settings, watch_roots))
    home = check_home(settings)
    checks.append(home)
    checks.append(check_instance(settings))
    checks.append(check_state(settings))
    checks.append(check_sink(settings) if home.result == OK or settings.storage != "file"
                  else Check("sink", FAIL, "file store needs RELAYBURN_HOME", home.fix))
    return checks


__all__ = ["FAIL", "OK", "WARN", "Check", "run_checks"]
