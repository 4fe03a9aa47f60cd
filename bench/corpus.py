#!/usr/bin/env python3
"""Deterministic, realistic corpus of AI coding agent session logs.

Why it exists: benchmarks need hundreds of megabytes shaped like real agent logs
(streamed responses, huge tool results, sub-agents, copies of copies), and parity
checks need ground truth that does not come from any parser. This generator writes
the logs *and* keeps its own books while writing: every billed request is counted
exactly once, when it is generated, so ``expected.json`` holds the correct per-day,
per-model totals without reading a single file back.

Usage::

    python bench/corpus.py --out DIR --claude-mb 200 [--codex-mb N]
        [--opencode-sessions N] [--seed 1] [--no-quirks]

Layout (each top-level directory can be used as the agent's home)::

    DIR/claude/projects/<encoded cwd>/<session>.jsonl
    DIR/claude/projects/<encoded cwd>/<session>/subagents/agent-<id>.jsonl (+ .meta.json)
    DIR/claude/projects/<encoded cwd>/agent-<id>.jsonl              (2.0.x sub-agents)
    DIR/codex/sessions/YYYY/MM/DD/rollout-<start>-<thread id>.jsonl
    DIR/codex/archived_sessions/rollout-…jsonl                      (moved and copied)
    DIR/opencode/storage/{project,session,message,part}/…json
    DIR/opencode/opencode.db                                        (newer sessions)
    DIR/isolated/<case>/…                                           (cases that poison a report)
    DIR/expected.json

What the logs contain is described in ``bench/README.md``; the format itself in
the format spec (``session-formats.md``). The same seed and sizes always give
byte-identical output.

"Quirks" are requests shaped so that the reference tracker (ccusage 20.0.24)
reports them differently from a correct tracker (format spec section 8). Each
quirk lives in its own files; ``expected.json`` lists them with both the correct
totals and the totals ccusage is documented to report for those files, so a
parity check can name every difference instead of tolerating it.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import shutil
import sqlite3
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000
CCUSAGE_VERSION = "20.0.24"
FORMAT_VERSION = 1

_encoder = msgspec.json.Encoder()
B62 = string.ascii_letters + string.digits
_B64_TO_B62 = bytes.maketrans(b"+/", b"xQ")
_VARIANT = {h: "89ab"[int(h, 16) & 3] for h in "0123456789abcdef"}


class FastRandom(random.Random):
    """``random.Random`` with a float-based ``randint`` (3x faster, still deterministic).

    Generation speed is dominated by the number of random draws; the tiny bias of
    flooring ``random() * n`` is irrelevant for synthetic logs.
    """

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))

# ------------------------------------------------------------------ pricing (optional)


class Pricer:
    """Cost of one request, priced with relayburnd's bundled table when importable.

    Costs in ``expected.json`` therefore check that a tracker prices every request
    on its own (the long-context rule is per request) and sums correctly; they do
    not check the prices themselves.
    """

    def __init__(self) -> None:
        self.table: Any = None
        self.version: str | None = None
        try:
            sys.path.insert(0, str(REPO))
            from relayburnd.pricing import PriceTable
            from relayburnd.records import Turn
        except Exception:  # pragma: no cover - the bench runs without the package too
            return
        finally:
            if sys.path and sys.path[0] == str(REPO):
                sys.path.pop(0)
        self.table = PriceTable.bundled()
        self.version = self.table.version
        self._turn = Turn
        self._cache: dict[tuple[Any, ...], float | None] = {}

    def cost(self, source: str, model: str | None, tok: Tok, speed: str | None = None,
             logged: float | None = None) -> float | None:
        if self.table is None:
            return None
        t = self._turn(
            id="x", source=source, session_id="s", ts=0, model=model,
            input_tokens=tok.input, output_tokens=tok.output,
            cache_write_tokens=tok.cache_write, cache_read_tokens=tok.cache_read,
            cache_write_5m_tokens=tok.write_5m, cache_write_1h_tokens=tok.write_1h,
            reasoning_tokens=tok.reasoning, speed=speed, logged_cost_usd=logged,
        )
        value: float | None = self.table.cost(t)
        return value

    def price(self, model: str) -> Any:
        return None if self.table is None else self.table.price(model)


# ------------------------------------------------------------------ accounting


@dataclass
class Tok:
    """Normalised tokens of one request (format spec section 1)."""

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0
    reasoning: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read

    def is_zero(self) -> bool:
        return not (self.input or self.output or self.cache_write or self.cache_read)


TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens",
                "reasoning_tokens")


class Cell:
    __slots__ = ("cost", "cr", "cw", "inp", "out", "reasoning", "requests", "unpriced")

    def __init__(self) -> None:
        self.requests = self.inp = self.out = self.cw = self.cr = self.reasoning = 0
        self.unpriced = 0
        self.cost = 0.0

    def add(self, tok: Tok, cost: float | None, requests: int = 1) -> None:
        self.requests += requests
        self.inp += tok.input
        self.out += tok.output
        self.cw += tok.cache_write
        self.cr += tok.cache_read
        self.reasoning += tok.reasoning
        if cost is None:
            self.unpriced += requests
        else:
            self.cost += cost

    def merge(self, other: Cell) -> None:
        self.requests += other.requests
        self.inp += other.inp
        self.out += other.out
        self.cw += other.cw
        self.cr += other.cr
        self.reasoning += other.reasoning
        self.unpriced += other.unpriced
        self.cost += other.cost

    def tokens(self) -> dict[str, int]:
        return {
            "input_tokens": self.inp,
            "output_tokens": self.out,
            "cache_write_tokens": self.cw,
            "cache_read_tokens": self.cr,
            "reasoning_tokens": self.reasoning,
            "total_tokens": self.inp + self.out + self.cw + self.cr,
        }

    def as_dict(self, with_cost: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, **self.tokens()}
        if with_cost:
            out["cost_usd"] = round(self.cost, 10)
            if self.unpriced:
                out["unpriced_requests"] = self.unpriced
        return out


class Ledger:
    """Correct totals per (day, model label) of one source."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}

    def add(self, day: str, label: str, tok: Tok, cost: float | None, requests: int = 1) -> None:
        cell = self.cells.get((day, label))
        if cell is None:
            cell = self.cells[(day, label)] = Cell()
        cell.add(tok, cost, requests)

    def as_json(self, with_cost: bool) -> dict[str, Any]:
        days: dict[str, Any] = {}
        grand = Cell()
        for (day, label) in sorted(self.cells):
            cell = self.cells[(day, label)]
            d = days.setdefault(day, {"models": {}, "total": Cell()})
            d["models"][label] = cell.as_dict(with_cost)
            d["total"].merge(cell)
            grand.merge(cell)
        for d in days.values():
            d["total"] = d["total"].as_dict(with_cost)
        return {"days": days, "total": grand.as_dict(with_cost)}


class DayTokens:
    """Per-day token (and cost) sums of a quirk's file set."""

    def __init__(self) -> None:
        self.days: dict[str, Cell] = {}

    def add(self, day: str, tok: Tok, cost: float | None = None, requests: int = 1) -> None:
        cell = self.days.get(day)
        if cell is None:
            cell = self.days[day] = Cell()
        cell.add(tok, cost, requests)

    def as_json(self, with_cost: bool) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for day in sorted(self.days):
            c = self.days[day]
            out[day] = {"requests": c.requests, **c.tokens()}
            if with_cost:
                out[day]["cost_usd"] = round(c.cost, 10)
        return out


@dataclass
class Quirk:
    """Files whose requests ccusage is documented to report differently."""

    kind: str
    source: str
    spec: str
    description: str
    files: list[str] = field(default_factory=list)
    correct: DayTokens = field(default_factory=DayTokens)
    ccusage: DayTokens = field(default_factory=DayTokens)
    # Costs are comparable where ccusage computes them with the same prices and
    # formula (Claude in --mode calculate, Codex), not for OpenCode's logged costs.
    with_cost: bool = True

    def as_json(self, priced: bool) -> dict[str, Any]:
        with_cost = priced and self.with_cost
        return {
            "kind": self.kind,
            "source": self.source,
            "spec": self.spec,
            "description": self.description,
            "ccusage_version": CCUSAGE_VERSION,
            "files": sorted(set(self.files)),
            "correct": self.correct.as_json(with_cost),
            "ccusage": self.ccusage.as_json(with_cost),
        }


# ------------------------------------------------------------------ helpers


class Clock:
    """ISO 8601 strings for epoch milliseconds, with the date part cached."""

    def __init__(self) -> None:
        self._dates: dict[int, str] = {}

    def date(self, ms: int) -> str:
        d = ms // DAY_MS
        s = self._dates.get(d)
        if s is None:
            s = self._dates[d] = datetime.fromtimestamp(d * 86400, UTC).strftime("%Y-%m-%d")
        return s

    def iso(self, ms: int) -> str:
        d, rem = divmod(ms, DAY_MS)
        prefix = self._dates.get(d) or self.date(ms)
        return (f"{prefix}T{rem // 3_600_000:02d}:{rem // 60_000 % 60:02d}:"
                f"{rem // 1000 % 60:02d}.{rem % 1000:03d}Z")

    def iso_micro(self, ms: int, micro: int) -> str:
        return self.iso(ms)[:-1] + f"{micro:03d}Z"

    def compact(self, ms: int) -> str:
        """``2026-01-05T10-00-00`` (Codex rollout file names)."""
        return self.iso(ms)[:19].replace(":", "-")


_WORDS = tuple((  # noqa: SIM905 - a word list reads better as text
    "the a of to in for is on that by this with it from as be are was not or at an def "
    "class return import self None True False if else elif for while try except raise "
    "with yield async await lambda const let var function export default new int str bool "
    "list dict map filter reduce value key index item result error err config user "
    "session token request response client server handler router model test assert expect "
    "describe it should fixture mock patch setup teardown cache login logout auth "
    "password hash verify payload header body status code message file path dir read "
    "write open close stream buffer chunk offset length size build deploy release version "
    "migrate schema table column row query select insert update delete where join order "
    "group limit count sum avg min max TODO FIXME NOTE refactor cleanup helper util utils "
    "common core api v1 v2 src lib tests docs app main index package module component "
    "service worker "
).split())
_PUNCT = ("(", ")", "{", "}", "[", "]", ":", ";", ",", ".", "=", "==", "->", "=>", "+", "-",
          "*", "/", "#", "//", "'", '"', "<", ">", "_", "0", "1", "2", "42", "100")


class Filler:
    """Cheap pseudo-text and base64 by slicing large pre-built buffers.

    Slicing a 6 MiB string at a random offset costs a memcpy, which is what keeps
    generation above 50 MB/s while tool results range from bytes to megabytes.
    """

    def __init__(self, rng: random.Random) -> None:
        lines = []
        size = 0
        while size < 300_000:
            n = rng.randint(0, 14)
            indent = " " * (4 * rng.randint(0, 3))
            words = rng.choices(_WORDS, k=n)
            if n and rng.random() < 0.5:
                words.insert(rng.randint(0, n), rng.choice(_PUNCT))
            line = indent + " ".join(words)
            lines.append(line)
            size += len(line) + 1
        # 20 rotations of a 300 kB block: 6 MB that does not repeat at a short period.
        parts = []
        for _ in range(20):
            cut = rng.randrange(len(lines))
            parts.append("\n".join(lines[cut:] + lines[:cut]))
        self.text_buf = "\n".join(parts)
        self.words_buf = " ".join(rng.choices(_WORDS, k=50_000))
        raw = rng.getrandbits(8 * 900_000).to_bytes(900_000, "little")
        self.b64_buf = base64.b64encode(raw).decode("ascii") * 5  # 6 MB
        self.rng = rng

    def text(self, n: int) -> str:
        n = max(0, min(n, len(self.text_buf) - 1))
        start = int(self.rng.random() * (len(self.text_buf) - n))
        return self.text_buf[start:start + n]

    def b64(self, n: int) -> str:
        n = max(4, min(n, len(self.b64_buf) - 4)) // 4 * 4
        start = int(self.rng.random() * ((len(self.b64_buf) - n) // 4)) * 4
        return self.b64_buf[start:start + n]

    def sentence(self, lo: int = 20, hi: int = 200) -> str:
        n = self.rng.randint(lo, hi)
        start = int(self.rng.random() * (len(self.words_buf) - n))
        return self.words_buf[start:start + n].strip()


class Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counter = 0

    def b62(self, n: int) -> str:
        """``n`` characters from [A-Za-z0-9] (base64 of random bits, '+/' mapped)."""
        k = (n * 3) // 4 + 3
        raw = self.rng.getrandbits(8 * k).to_bytes(k, "little")
        return base64.b64encode(raw).translate(_B64_TO_B62).decode("ascii")[:n]

    def hexs(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def uuid4(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def uuid7(self, ms: int) -> str:
        rand = self.rng.getrandbits(74)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= (rand >> 62) << 64
        value |= 0b10 << 62
        value |= rand & ((1 << 62) - 1)
        return str(uuid.UUID(int=value))

    def opencode(self, prefix: str, ms: int) -> str:
        self.counter += 1
        stamp = (ms * 0x1000 + (self.counter & 0xFFF)) & 0xFFFFFFFFFFFF
        return f"{prefix}_{stamp:012x}" + self.b62(14)


class JsonlOut:
    """Append-only JSONL writer that counts bytes (compact JSON unless ``spaced``)."""

    def __init__(self, path: Path, spaced: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.f = path.open("wb", buffering=1 << 20)
        self.bytes = 0
        self.lines = 0
        self.spaced = spaced

    def write(self, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode() if self.spaced else _encoder.encode(obj)
        self.f.write(data)
        self.f.write(b"\n")
        self.bytes += len(data) + 1
        self.lines += 1

    def close(self) -> None:
        self.f.close()


# ------------------------------------------------------------------ corpus


CLAUDE_PROJECTS = (
    "/home/dev/demo-app", "/home/dev/api-server", "/home/dev/my_app.v2",
    "/home/dev/src/github.com/acme/web", "/Users/sam/work/payments",
    "/home/dev/infra-terraform", "/home/dev/ml-pipeline", "/srv/repos/monorepo",
    "/home/dev/rust-cli", "/home/dev/notes (2026)",
)
BRANCHES = ("main", "main", "main", "dev", "feature/login", "fix/flaky-tests", "")
# (version, weight). Behaviour changes by version: see ClaudeSession.
CLAUDE_VERSIONS = (("1.0.98", 4), ("2.0.14", 6), ("2.0.42", 10), ("2.1.2", 10),
                   ("2.1.19", 20), ("2.1.30", 30), ("2.1.41", 20))
CLAUDE_MODELS = (("claude-sonnet-4-5-20250929", 34), ("claude-opus-4-6", 18),
                 ("claude-sonnet-4-20250514", 10), ("claude-opus-4-5-20251101", 10),
                 ("claude-sonnet-4-6", 10), ("claude-haiku-4-5-20251001", 5),
                 ("claude-opus-4-1-20250805", 6), ("claude-opus-4-7", 7))
SUBAGENT_MODEL = "claude-haiku-4-5-20251001"
GATEWAY_MODELS = ("claude-sonnet-4-5-20250929", "kimi-k2.5", "glm-4.6")
CODEX_MODELS = (("gpt-5.2-codex", 35), ("gpt-5-codex", 15), ("gpt-5.1-codex-max", 15),
                ("gpt-5", 10), ("gpt-5.2", 10), ("gpt-5.3-codex", 10), ("gpt-5.1-codex-mini", 5))
CODEX_VERSIONS = ("0.46.0", "0.63.0", "0.80.0", "0.92.0")
OPENCODE_MODELS = (("anthropic", "claude-sonnet-4-5", 35), ("anthropic", "claude-opus-4-6", 10),
                   ("openai", "gpt-5.1-codex", 20), ("openai", "gpt-5.2", 10),
                   ("moonshotai", "kimi-k2.5", 10), ("zai-coding-plan", "glm-4.6", 10),
                   ("anthropic", "claude-haiku-4-5", 5))


def _cumulative(pairs: tuple[tuple[str, int], ...]) -> tuple[tuple[str, ...], list[int]]:
    total = 0
    cum = []
    for _, w in pairs:
        total += w
        cum.append(total)
    return tuple(n for n, _ in pairs), cum


_TOOL_WEIGHTS = (("Read", 30), ("Bash", 25), ("Edit", 15), ("Grep", 8), ("Glob", 5),
                 ("Write", 4), ("TodoWrite", 5), ("WebFetch", 2),
                 ("mcp__playwright__browser_take_screenshot", 1))
_TOOLS = _cumulative(_TOOL_WEIGHTS)
_TOOLS_WITH_TASK = _cumulative((*_TOOL_WEIGHTS, ("Task", 4)))


def encode_project(cwd: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def _weighted(rng: random.Random, items: tuple[tuple[Any, ...], ...]) -> Any:
    return rng.choices(items, weights=[it[-1] for it in items])[0]


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


class Corpus:
    """Shared state of one generation run: RNG, buffers, ledgers, quirk list."""

    def __init__(self, out: Path, seed: int, start: str, days: int) -> None:
        self.out = out
        self.rng: random.Random = FastRandom(seed)
        self.ids = Ids(self.rng)
        self.clock = Clock()
        self.fill = Filler(self.rng)
        self.pricer = Pricer()
        self.start_ms = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
        self.days = days
        self.ledgers = {"claude": Ledger(), "codex": Ledger(), "opencode": Ledger()}
        self.quirks: list[Quirk] = []
        self.isolated: list[dict[str, Any]] = []
        self.bytes = {"claude": 0, "codex": 0, "opencode": 0}
        self.files = {"claude": 0, "codex": 0, "opencode": 0}
        self.stats: dict[str, int] = {}
        # Share of tool results of 1-5 MB: "a few" per 200 MB corpus.
        self.huge_p = 0.0004

    def stat(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def session_start(self) -> int:
        """A working-hours-biased start time within the date range."""
        rng = self.rng
        day = rng.randrange(self.days)
        hour = rng.choices(range(24), weights=[1, 1, 1, 1, 1, 2, 3, 6, 9, 10, 10, 9, 8, 9, 10,
                                               10, 9, 8, 6, 5, 4, 3, 2, 1])[0]
        return self.start_ms + day * DAY_MS + hour * 3_600_000 + rng.randrange(3_600_000)


# ------------------------------------------------------------------ Claude Code


@dataclass
class Stream:
    """One conversation thread being written: main transcript or a sub-agent's."""

    out: JsonlOut | None
    sidechain: bool = False
    agent_id: str | None = None
    prev_uuid: str | None = None
    ctx: int = 0  # tokens in the conversation so far
    cache_until: int = 0  # ms until which the prompt cache is warm
    progress: JsonlOut | None = None  # parent transcript receiving agent_progress copies
    progress_tool_id: str | None = None
    parent_stream: Stream | None = None


@dataclass
class ClaudeStyle:
    """How one session deviates from the plain shape (quirks use these)."""

    timestamps: str = "ms"  # ms | micro
    spaced: bool = False
    version: str | None = None
    gateway: bool = False  # requestless responses (proxy/gateway)
    gateway_streamed: bool = False  # ... written over several lines (quirk)
    null_tool_input: bool = False  # one tool_use input carries "model":null (quirk)
    long_context: bool = False  # prompts above 200k tokens (quirk, cost only)
    features: bool = True  # sub-agents, side questions, synthetic lines, compaction


@dataclass
class _Line:
    tok: Tok
    ts: int
    has_null: bool


class ClaudeSession:
    """Writes one Claude Code session (and its sub-agent files) and books its requests."""

    def __init__(self, c: Corpus, *, project: str, start: int, style: ClaudeStyle,
                 quirk: Quirk | None = None, session_id: str | None = None,
                 model: str | None = None) -> None:
        self.c = c
        rng = c.rng
        self.rng = rng
        self.style = style
        self.quirk = quirk
        self.cwd = project
        self.proj_dir = c.out / "claude" / "projects" / encode_project(project)
        self.session_id = session_id or c.ids.uuid4()
        self.version = style.version or _weighted(rng, CLAUDE_VERSIONS)[0]
        v = _vtuple(self.version) if style.version != "dev-build" else (2, 1, 30)
        self.legacy = v < (2, 0, 0)
        self.tie_style = v < (2, 0, 50)  # every block line carries the final usage
        self.new_layout = v >= (2, 1, 2)  # subagents/ directory, agent_progress copies
        self.breakdown = v >= (2, 0, 0)  # usage.cache_creation 5m/1h object
        self.model = model or _weighted(rng, CLAUDE_MODELS)[0]
        if style.gateway:
            self.model = rng.choice(GATEWAY_MODELS)
        if style.long_context:
            self.model = "claude-sonnet-4-20250514"
        self.ttl_1h = self.new_layout and rng.random() < 0.25
        self.fast_ok = (self.model == "claude-opus-4-6" and v >= (2, 1, 30)
                        and rng.random() < 0.2)
        self.fast = False
        self.branch = rng.choice(BRANCHES)
        self.t = start
        self.sys_prefix = rng.randint(9_000, 18_000)
        self.path = self.proj_dir / f"{self.session_id}.jsonl"
        self.main = Stream(out=JsonlOut(self.path, spaced=style.spaced))
        self.turn_boundaries: list[tuple[int, int]] = []  # (lines written, time)
        self.files: list[Path] = [self.path]
        self.recent_main: list[dict[str, Any]] = []  # last assistant lines (for /btw replay)
        self.requests = 0
        self.limit = 1_000_000 if style.long_context else rng.randint(140_000, 165_000)

    # -------------------------------------------------------------- envelope

    def ts(self, ms: int) -> str:
        if self.style.timestamps == "micro":
            return self.c.clock.iso_micro(ms, self.rng.randrange(1000))
        return self.c.clock.iso(ms)

    def env(self, s: Stream, kind: str, uid: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "parentUuid": s.prev_uuid,
            "isSidechain": s.sidechain,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": self.version,
            "gitBranch": self.branch,
        }
        if s.agent_id:
            d["agentId"] = s.agent_id
        d["type"] = kind
        d["uuid"] = uid
        return d

    def emit(self, s: Stream, line: dict[str, Any]) -> None:
        assert s.out is not None or s.progress is not None
        if s.out is not None:
            s.out.write(line)
        if s.progress is not None and line.get("type") in ("user", "assistant"):
            parent = s.parent_stream
            assert parent is not None
            puid = self.c.ids.uuid4()
            wrapper = self.env(parent, "progress", puid)
            wrapper["data"] = {
                "type": "agent_progress",
                "agentId": s.agent_id,
                "prompt": "",
                "message": {k: line[k] for k in ("type", "timestamp", "requestId", "uuid",
                                                 "message") if k in line},
                "normalizedMessages": [],
            }
            wrapper["parentToolUseID"] = s.progress_tool_id
            wrapper["toolUseID"] = f"agent_msg_{self.c.ids.b62(24)}"
            wrapper["timestamp"] = self.ts(self.t + 40)
            s.progress.write(wrapper)
            parent.prev_uuid = puid
        if "uuid" in line:
            s.prev_uuid = line["uuid"]

    # -------------------------------------------------------------- accounting

    def book(self, day: str, tok: Tok, speed: str | None, model: str,
             ccusage_lines: list[_Line] | None, all_lines: list[_Line]) -> None:
        label = f"{model}-fast" if speed == "fast" else model
        cost = self.c.pricer.cost("claude", model, tok, speed)
        self.c.ledgers["claude"].add(day, label, tok, cost)
        self.requests += 1
        q = self.quirk
        if q is None:
            return
        q.correct.add(day, tok, cost)
        if self.style.timestamps != "ms" or self.style.spaced or self.version == "dev-build":
            return  # ccusage ignores every line of this file
        if self.style.gateway_streamed:
            # 20.0.24 `claude daily` does not merge requestless lines: each one counts.
            for ln in all_lines:
                q.ccusage.add(self.c.clock.date(ln.ts), ln.tok,
                              self._ccusage_cost(model, ln.tok, speed))
            return
        lines = ccusage_lines if ccusage_lines is not None else all_lines
        # ccusage keeps, per request, the surviving line with the largest token sum
        # (the first one on ties); lines with a textual "model":null are dropped.
        kept = [ln for ln in lines if not ln.has_null]
        if kept:
            best = kept[0]
            for ln in kept[1:]:
                if ln.tok.total > best.tok.total:
                    best = ln
            q.ccusage.add(self.c.clock.date(best.ts), best.tok,
                          self._ccusage_cost(model, best.tok, speed))

    def _ccusage_cost(self, model: str, tok: Tok, speed: str | None) -> float:
        """Format spec 5.3 as ccusage computes it: each category split at 200k on its own.

        Equal to the correct cost unless one request has more than 200k prompt
        tokens. Uses relayburnd's prices, which equal ccusage's for the models the
        generator writes (the parity test checks costs of ordinary days too).
        """
        p = self.c.pricer.price(model)
        if p is None:
            return 0.0
        fast = (p.fast_multiplier or 1.0) if speed == "fast" else 1.0

        def tier(n: int, base: float, above: float | None) -> float:
            if n <= 200_000 or above is None:
                return n * base
            return 200_000 * base + (n - 200_000) * above

        # Missing cache prices: 1.25 x input (write), 0.1 x input (read), section 5.1.
        write = p.cache_write if p.cache_write is not None else 1.25 * p.input
        read = p.cache_read if p.cache_read is not None else 0.1 * p.input
        two_above = 2 * p.input_above_200k if p.input_above_200k is not None else None
        return (tier(tok.input, p.input, p.input_above_200k)
                + tier(tok.output, p.output, p.output_above_200k)
                + tier(tok.write_5m if (tok.write_5m or tok.write_1h) else tok.cache_write,
                       write, p.cache_write_above_200k)
                + tier(tok.write_1h, 2 * p.input, two_above)
                + tier(tok.cache_read, read, p.cache_read_above_200k)) * fast

    # -------------------------------------------------------------- lines

    def write_meta_lines_at_start(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:
            self.main.out.write({"type": "summary", "summary": self.c.fill.sentence(20, 60),  # type: ignore[union-attr]
                                 "leafUuid": self.c.ids.uuid4()})

    def user_prompt(self, s: Stream, text: str, *, meta: bool = False) -> int:
        uid = self.c.ids.uuid4()
        if s is self.main and not meta and self.rng.random() < 0.8:
            files = {f"src/{w}.py": {"backupFileName": f"{self.c.ids.hexs(16)}@v{i + 1}",
                                     "version": i + 1, "backupTime": self.ts(self.t)}
                     for i, w in enumerate(self.rng.sample(_WORDS, self.rng.randint(0, 3)))}
            self.main.out.write({"type": "file-history-snapshot", "messageId": uid,  # type: ignore[union-attr]
                                 "snapshot": {"messageId": uid, "trackedFileBackups": files,
                                              "timestamp": self.ts(self.t)},
                                 "isSnapshotUpdate": False})
        line = self.env(s, "user", uid)
        line["message"] = {"role": "user", "content": text}
        line["timestamp"] = self.ts(self.t)
        if meta:
            line["isMeta"] = True
        elif self.new_layout:
            line["permissionMode"] = "default"
        self.emit(s, line)
        return max(1, len(text) // 4)

    def system(self, s: Stream, subtype: str, **fields: Any) -> None:
        line = self.env(s, "system", self.c.ids.uuid4())
        line["subtype"] = subtype
        line.update(fields)
        line["timestamp"] = self.ts(self.t)
        self.emit(s, line)

    def compact(self, s: Stream) -> None:
        """Auto-compaction: boundary line, summary user line, smaller context."""
        pre = s.ctx
        last = s.prev_uuid
        s.prev_uuid = None
        self.system(s, "compact_boundary", content="Conversation compacted",
                    logicalParentUuid=last, level="info",
                    compactMetadata={"trigger": "auto", "preTokens": pre})
        summary = ("This session is being continued from a previous conversation that ran "
                   "out of context. The conversation is summarized below:\n"
                   + self.c.fill.text(self.rng.randint(2000, 8000)))
        uid = self.c.ids.uuid4()
        line = self.env(s, "user", uid)
        line["message"] = {"role": "user", "content": summary}
        line["isCompactSummary"] = True
        line["isVisibleInTranscriptOnly"] = True
        line["timestamp"] = self.ts(self.t + 5)
        self.emit(s, line)
        s.ctx = self.rng.randint(12_000, 30_000)
        s.cache_until = 0
        self.c.stat("claude_compactions")

    # -------------------------------------------------------------- requests

    def usage_for(self, s: Stream, new: int, output: int) -> Tok:
        rng = self.rng
        prompt = s.ctx + new
        inp = rng.randint(1, 9)
        if self.style.gateway:
            # Gateways often report no cache usage at all.
            inp, cr, cw = prompt, 0, 0
        elif s.ctx == 0 or self.t > s.cache_until:
            cr = min(self.sys_prefix if rng.random() < 0.7 else 0, prompt - inp)
            cw = prompt - inp - cr
        else:
            cr = s.ctx
            cw = max(0, prompt - inp - cr)
        tok = Tok(input=inp, output=output, cache_write=cw, cache_read=cr)
        if self.breakdown and cw:
            if self.ttl_1h:
                one_h = cw if rng.random() < 0.7 else rng.randint(0, cw)
                tok.write_1h = one_h
                tok.write_5m = cw - one_h
            else:
                tok.write_5m = cw
        s.ctx = prompt + output
        s.cache_until = self.t + (3_600_000 if self.ttl_1h else 300_000)
        return tok

    def usage_obj(self, tok: Tok, output: int, speed: str | None) -> dict[str, Any]:
        u: dict[str, Any] = {
            "input_tokens": tok.input,
            "cache_creation_input_tokens": tok.cache_write,
            "cache_read_input_tokens": tok.cache_read,
        }
        if self.breakdown and not self.style.gateway:
            u["cache_creation"] = {"ephemeral_5m_input_tokens": tok.write_5m,
                                   "ephemeral_1h_input_tokens": tok.write_1h}
        u["output_tokens"] = output
        if not self.style.gateway:
            u["service_tier"] = "standard"
        if speed:
            u["speed"] = speed
        return u

    def blocks_for(self, s: Stream, final: bool, allow_task: bool) -> list[dict[str, Any]]:
        rng = self.rng
        fill = self.c.fill
        blocks: list[dict[str, Any]] = []
        if rng.random() < 0.55:
            blocks.append({"type": "thinking", "thinking": fill.text(rng.randint(100, 2500)),
                           "signature": fill.b64(rng.randint(200, 700))})
        if final or rng.random() < 0.6:
            blocks.append({"type": "text", "text": fill.text(rng.randint(20, 1500))})
        if not final:
            n = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            for _ in range(min(n, 4 - len(blocks))):
                blocks.append(self.tool_use(s, allow_task))
        return blocks[:4] or [{"type": "text", "text": fill.text(40)}]

    def tool_use(self, s: Stream, allow_task: bool) -> dict[str, Any]:
        rng = self.rng
        fill = self.c.fill
        names, cum = _TOOLS_WITH_TASK if allow_task else _TOOLS
        name = rng.choices(names, cum_weights=cum)[0]
        path = f"{self.cwd}/src/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.py"
        if name == "Read":
            inp: dict[str, Any] = {"file_path": path}
        elif name == "Bash":
            cmd = rng.choice(["pytest -q", "npm test", "git status", "ls -la", "rg -n"])
            inp = {"command": f"{cmd} {rng.choice(_WORDS)}",
                   "description": fill.sentence(10, 50)}
        elif name == "Edit":
            inp = {"file_path": path, "old_string": fill.text(rng.randint(20, 600)),
                   "new_string": fill.text(rng.randint(20, 900))}
        elif name == "Write":
            inp = {"file_path": path, "content": fill.text(rng.randint(200, 6000))}
        elif name in ("Grep", "Glob"):
            inp = {"pattern": rng.choice(_WORDS), "path": self.cwd}
        elif name == "TodoWrite":
            inp = {"todos": [{"content": fill.sentence(10, 60), "status": rng.choice(
                ["pending", "in_progress", "completed"]), "activeForm": fill.sentence(10, 40)}
                for _ in range(rng.randint(1, 6))]}
        elif name == "WebFetch":
            inp = {"url": f"https://docs.example.com/{rng.choice(_WORDS)}",
                   "prompt": fill.sentence(10, 80)}
        elif name == "Task":
            inp = {"description": fill.sentence(10, 40),
                   "prompt": fill.text(rng.randint(200, 1500)),
                   "subagent_type": rng.choice(["Explore", "general-purpose", "Plan"])}
        else:
            inp = {"fullPage": False}
        return {"type": "tool_use", "id": f"toolu_01{self.c.ids.b62(22)}", "name": name,
                "input": inp}

    def respond(self, s: Stream, new: int, *, final: bool, allow_task: bool,
                model: str | None = None) -> list[dict[str, Any]]:
        """Write one API response (1-4 lines) and book it; returns its tool_use blocks."""
        rng = self.rng
        model = model or self.model
        blocks = self.blocks_for(s, final, allow_task)
        null_at = -1
        if self.style.null_tool_input and not final and self.requests % 3 == 1:
            for i, b in enumerate(blocks):
                if b["type"] == "tool_use":
                    b["name"] = "mcp__cfg__set_option"
                    b["input"] = {"model": None, "temperature": 0.2}
                    null_at = i
                    break
        chars = sum(len(b.get("thinking", "")) + len(b.get("text", ""))
                    + len(_encoder.encode(b.get("input", ""))) for b in blocks)
        output = max(12, chars // 3 + rng.randint(0, 60))
        interrupted = not final and not self.tie_style and rng.random() < 0.01
        if self.fast_ok and rng.random() < 0.08:
            self.fast = not self.fast
        speed = "fast" if self.fast else None
        tok = self.usage_for(s, new, output)
        # Line timestamps; no response straddles a UTC midnight.
        times = [self.t + rng.randint(800, 6000)]
        for _ in blocks[1:]:
            times.append(times[-1] + rng.randint(30, 2500))
        if times[0] // DAY_MS != times[-1] // DAY_MS:
            shift = (times[-1] // DAY_MS) * DAY_MS + 50 - times[0]
            times = [t + shift for t in times]
        msg_id = f"msg_01{self.c.ids.b62(22)}"
        if self.style.gateway:
            msg_id = f"chatcmpl-{self.c.ids.b62(29)}"
        req_id = None if self.style.gateway else f"req_011C{self.c.ids.b62(20)}"
        stop = "end_turn" if final else "tool_use"
        n = len(blocks)
        gateway_split = self.style.gateway and self.style.gateway_streamed
        placeholders = sorted(rng.randint(1, 8) for _ in range(n))
        written: list[_Line] = []
        for i, block in enumerate(blocks):
            last = i == n - 1
            if self.style.gateway and not gateway_split and not last:
                continue  # gateways write the whole response once
            stop_reason: str | None
            if self.tie_style or (self.style.gateway and not gateway_split):
                out_tok, stop_reason = output, stop
            else:
                out_tok = output if last else placeholders[i]
                stop_reason = stop if last else None
            if interrupted and last:
                out_tok, stop_reason = placeholders[-1] + rng.randint(3, 40), None
            line_tok = Tok(tok.input, out_tok, tok.cache_write, tok.cache_read,
                           write_5m=tok.write_5m, write_1h=tok.write_1h)
            uid = self.c.ids.uuid4()
            line = self.env(s, "assistant", uid)
            content = [block] if not (self.style.gateway and not gateway_split) else blocks
            line["message"] = {"model": model, "id": msg_id, "type": "message",
                               "role": "assistant", "content": content,
                               "stop_reason": stop_reason, "stop_sequence": None,
                               "usage": self.usage_obj(line_tok, out_tok, speed)}
            if req_id:
                line["requestId"] = req_id
            line["timestamp"] = self.ts(times[i])
            if self.legacy:
                line["costUSD"] = round(self.c.pricer.cost("claude", model, line_tok) or 0.0, 8)
            self.t = times[i]
            self.emit(s, line)
            written.append(_Line(line_tok, times[i], i == null_at))
            if s is self.main:
                self.recent_main.append(line)
                del self.recent_main[:-6]
        best = max(written, key=lambda ln: ln.tok.output)  # last one on ties
        for ln in reversed(written):
            if ln.tok.output == best.tok.output:
                best = ln
                break
        final_tok = best.tok
        if interrupted:
            s.ctx -= output - final_tok.output
        self.book(self.c.clock.date(best.ts), final_tok, speed, model, None, written)
        if interrupted:
            self.t += rng.randint(500, 3000)
            self.user_prompt(s, "[Request interrupted by user for tool use]")
            return []
        return [b for b in blocks if b["type"] == "tool_use"]

    def synthetic(self, s: Stream) -> None:
        line = self.env(s, "assistant", self.c.ids.uuid4())
        line["message"] = {
            "id": self.c.ids.uuid4(), "model": "<synthetic>", "role": "assistant",
            "stop_reason": "stop_sequence", "stop_sequence": "", "type": "message",
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0,
                      "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}},
            "content": [{"type": "text", "text": self.rng.choice(
                ["API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
                 "No response requested."])}],
        }
        line["isApiErrorMessage"] = True
        self.t += self.rng.randint(500, 4000)
        line["timestamp"] = self.ts(self.t)
        self.emit(s, line)
        self.c.stat("claude_synthetic_lines")

    # -------------------------------------------------------------- tool results

    def result_size(self) -> int:
        r = self.rng.random()
        if r < self.c.huge_p:
            return self.rng.randint(1_000_000, 5_000_000)
        if r < 0.05:
            return self.rng.randint(12_000, 30_000)
        if r < 0.12:
            return self.rng.randint(2_000, 12_000)
        return int(self.rng.paretovariate(1.3) * 60)  # mostly small, long tail

    def tool_result(self, s: Stream, uses: list[dict[str, Any]], asst_uuid: str | None,
                    task_results: dict[str, dict[str, Any]]) -> int:
        """User line(s) with tool_result blocks; returns tokens added to the context."""
        rng = self.rng
        fill = self.c.fill
        blocks = []
        new = 0
        tool_use_result: Any = None
        for use in uses:
            tid = use["id"]
            name = use["name"]
            is_error = rng.random() < 0.04
            if name == "Task":
                summary = fill.text(rng.randint(300, 3000))
                content: Any = [{"type": "text", "text": summary}]
                tool_use_result = task_results.get(tid)
                new += len(summary) // 4
            else:
                size = min(self.result_size(), 2_000_000 if name == "Bash" else 5_000_000)
                if name == "mcp__playwright__browser_take_screenshot":
                    size = max(size, 20_000)
                    content = [{"type": "image", "source": {
                        "type": "base64", "media_type": "image/png", "data": fill.b64(size)}}]
                    new += 1_600
                    tool_use_result = [{"type": "image", "file": {"base64": "<omitted>"}}]
                else:
                    text = fill.text(size)
                    content = text
                    new += min(size // 4, 25_000)
                    if size >= 1_000_000:
                        self.c.stat("claude_huge_tool_results")
                    if name == "Bash":
                        tool_use_result = {"stdout": text if size < 200_000 else text[:30_000],
                                           "stderr": "", "interrupted": False, "isImage": False}
                    elif name == "Read":
                        tool_use_result = {"type": "text", "file": {
                            "filePath": use["input"].get("file_path", ""),
                            "content": text if size < 200_000 else text[:30_000],
                            "numLines": text.count("\n") + 1, "startLine": 1,
                            "totalLines": text.count("\n") + 1}}
                    elif name == "Edit":
                        tool_use_result = {"filePath": use["input"].get("file_path", ""),
                                           "oldString": use["input"].get("old_string", ""),
                                           "newString": use["input"].get("new_string", ""),
                                           "structuredPatch": [{"oldStart": 1, "oldLines": 3,
                                                                "newStart": 1, "newLines": 4,
                                                                "lines": text[:400].split("\n")}],
                                           "userModified": False}
                    else:
                        tool_use_result = {"type": "text", "output": text[:2000]}
            block: dict[str, Any] = {"tool_use_id": tid, "type": "tool_result", "content": content}
            if is_error:
                block["is_error"] = True
            blocks.append(block)
        new += 40 * len(uses)
        # Parallel results: one line with several blocks, or one line per result.
        groups = [blocks] if len(blocks) == 1 or rng.random() < 0.6 else [[b] for b in blocks]
        for group in groups:
            self.t += rng.randint(100, 4000)
            line = self.env(s, "user", self.c.ids.uuid4())
            line["message"] = {"role": "user", "content": group}
            line["timestamp"] = self.ts(self.t)
            if tool_use_result is not None:
                line["toolUseResult"] = tool_use_result
            if asst_uuid:
                line["sourceToolAssistantUUID"] = asst_uuid
            self.emit(s, line)
        if self.new_layout and rng.random() < 0.1 and s is self.main:
            hook = self.env(s, "progress", self.c.ids.uuid4())
            hook["data"] = {"type": "hook_progress", "hookEvent": "PostToolUse",
                            "hookName": f"PostToolUse:{uses[0]['name']}",
                            "command": "npx prettier --write"}
            hook["parentToolUseID"] = uses[0]["id"]
            hook["toolUseID"] = uses[0]["id"]
            hook["timestamp"] = self.ts(self.t + 3)
            self.main.out.write(hook)  # type: ignore[union-attr]
        return new

    # -------------------------------------------------------------- sub-agents

    def run_subagent(self, task: dict[str, Any]) -> dict[str, Any]:
        """A Task sub-agent: its own transcript file, plus agent_progress copies (2.1.x)."""
        rng = self.rng
        agent_id = self.c.ids.hexs(17 if self.new_layout else 8)
        progress_only = self.new_layout and rng.random() < 0.05
        if self.new_layout:
            sub_dir = self.proj_dir / self.session_id / "subagents"
            path = sub_dir / f"agent-{agent_id}.jsonl"
        else:
            path = self.proj_dir / f"agent-{agent_id}.jsonl"
        out = None
        if not progress_only:
            out = JsonlOut(path)
            self.files.append(path)
            if self.new_layout:
                meta = {"agentType": task["input"].get("subagent_type", "general-purpose"),
                        "description": task["input"].get("description", ""),
                        "toolUseId": task["id"]}
                (path.parent / f"agent-{agent_id}.meta.json").write_text(json.dumps(meta))
        else:
            self.c.stat("claude_subagents_progress_only")
        s = Stream(out=out, sidechain=True, agent_id=agent_id)
        if self.new_layout:
            s.progress = self.main.out
            s.progress_tool_id = task["id"]
            s.parent_stream = self.main
        model = SUBAGENT_MODEL if rng.random() < 0.6 else self.model
        self.t += rng.randint(200, 1500)
        new = self.user_prompt(s, task["input"].get("prompt", "explore")) + 4_000
        n_req = rng.randint(2, 8)
        tools_used = 0
        for i in range(n_req):
            final = i == n_req - 1
            uses = self.respond(s, new, final=final, allow_task=False, model=model)
            if final or not uses:
                break
            tools_used += len(uses)
            new = self.tool_result(s, uses, s.prev_uuid, {})
        if out is not None:
            out.close()
            self.c.bytes["claude"] += out.bytes
            self.c.files["claude"] += 1
        self.c.stat("claude_subagents")
        # The harness's own summary of the run; trackers must not count it.
        return {"status": "completed", "prompt": task["input"].get("prompt", "")[:200],
                "agentId": agent_id, "content": [{"type": "text", "text": "done"}],
                "totalDurationMs": rng.randint(5_000, 300_000),
                "totalTokens": s.ctx, "totalToolUseCount": tools_used,
                "usage": {"input_tokens": rng.randint(5, 50),
                          "cache_creation_input_tokens": rng.randint(0, 20_000),
                          "cache_read_input_tokens": rng.randint(0, 90_000),
                          "output_tokens": rng.randint(100, 5000), "service_tier": "standard"}}

    def side_question(self) -> None:
        """/btw: a sidechain log that replays a main-thread response, then answers."""
        rng = self.rng
        if not self.recent_main:
            return
        agent_id = "aside" + self.c.ids.hexs(12)
        path = self.proj_dir / self.session_id / "subagents" / f"agent-{agent_id}.jsonl"
        out = JsonlOut(path)
        self.files.append(path)
        src = rng.choice(self.recent_main)
        replay = dict(src)
        replay["parentUuid"] = None
        replay["isSidechain"] = True
        replay["agentId"] = agent_id
        replay["uuid"] = self.c.ids.uuid4()
        replay["requestId"] = f"req_011C{self.c.ids.b62(20)}"
        msg = dict(replay["message"])
        usage = dict(msg["usage"])
        usage["cache_read_input_tokens"] += rng.randint(1000, 40_000)
        msg["usage"] = usage
        replay["message"] = msg
        self.t += rng.randint(1000, 30_000)
        replay["timestamp"] = self.ts(self.t)
        out.write(replay)  # a copy, never booked
        s = Stream(out=out, sidechain=True, agent_id=agent_id, prev_uuid=replay["uuid"],
                   ctx=usage["cache_read_input_tokens"], cache_until=self.t + 300_000)
        self.respond(s, 60, final=True, allow_task=False)
        out.close()
        self.c.bytes["claude"] += out.bytes
        self.c.files["claude"] += 1
        self.c.stat("claude_side_questions")

    # -------------------------------------------------------------- session

    def run(self, turns: int) -> None:
        rng = self.rng
        s = self.main
        self.write_meta_lines_at_start()
        features = self.style.features and not self.style.gateway
        allow_task = features and not self.legacy
        for turn in range(turns):
            if turn:
                self.t += int(rng.expovariate(1 / 240_000)) + 5_000
            if features and rng.random() < 0.05 and self.new_layout:
                self.main.out.write({"type": "queue-operation", "operation": "enqueue",  # type: ignore[union-attr]
                                     "timestamp": self.ts(self.t), "sessionId": self.session_id,
                                     "content": self.c.fill.sentence(10, 80)})
            if rng.random() < 0.03:
                self.user_prompt(s, "<local-command-caveat>Caveat: The messages below were "
                                    "generated by the user while running local commands."
                                    "</local-command-caveat>", meta=True)
            new = self.user_prompt(s, self.c.fill.text(rng.randint(20, 1200)))
            if s.ctx == 0:
                new += rng.randint(8_000, 16_000)  # system prompt and tool definitions
            turn_start = self.t
            n_req = max(1, int(rng.expovariate(1 / 5)) + 1)
            for i in range(min(n_req, 25)):
                final = i == n_req - 1
                if s.ctx + new > self.limit and features:
                    self.compact(s)
                if features and rng.random() < 0.004:
                    self.synthetic(s)
                uses = self.respond(s, new, final=final, allow_task=allow_task)
                if not uses:
                    break
                asst_uuid = s.prev_uuid
                task_results = {u["id"]: self.run_subagent(u) for u in uses if u["name"] == "Task"}
                if self.new_layout and rng.random() < 0.05 and uses[0]["name"] == "Bash":
                    prog = self.env(s, "progress", self.c.ids.uuid4())
                    prog["data"] = {"type": "bash_progress", "output": self.c.fill.text(200),
                                    "fullOutput": self.c.fill.text(600),
                                    "elapsedTimeSeconds": rng.randint(3, 60), "totalLines": 40}
                    prog["parentToolUseID"] = uses[0]["id"]
                    prog["toolUseID"] = f"bash-progress-{rng.randint(0, 9)}"
                    prog["timestamp"] = self.ts(self.t + 1000)
                    self.emit(s, prog)
                new = self.tool_result(s, uses, asst_uuid, task_results)
            if self.new_layout:
                self.t += rng.randint(10, 200)
                self.system(s, "turn_duration", durationMs=self.t - turn_start, isMeta=False)
            if features and self.new_layout and rng.random() < 0.02:
                self.side_question()
            self.turn_boundaries.append((s.out.lines, self.t))  # type: ignore[union-attr]

    def close(self) -> None:
        out = self.main.out
        assert out is not None
        out.close()
        self.c.bytes["claude"] += out.bytes
        self.c.files["claude"] += 1


def claude_resume(c: Corpus, parent: ClaudeSession, turns: int) -> ClaudeSession:
    """A ``--resume`` session: a new file starting with copies of the parent's lines."""
    rng = c.rng
    cut_lines, _ = rng.choice(parent.turn_boundaries)
    child = ClaudeSession(c, project=parent.cwd, start=parent.t + rng.randint(600_000, 2 * DAY_MS),
                          style=ClaudeStyle(version=parent.version), model=parent.model)
    old = f'"sessionId":"{parent.session_id}"'.encode()
    new = f'"sessionId":"{child.session_id}"'.encode()
    out = child.main.out
    assert out is not None
    last_uuid = None
    with parent.path.open("rb") as f:
        for i, raw in enumerate(f):
            if i >= cut_lines:
                break
            data = raw.replace(old, new)
            out.f.write(data)
            out.bytes += len(data)
            out.lines += 1
            m = re.search(rb'"uuid":"([0-9a-f-]{36})"', data)
            if m:
                last_uuid = m.group(1).decode()
    child.main.prev_uuid = last_uuid
    child.main.ctx = parent.main.ctx // 2 + 5_000
    child.run(turns)
    child.close()
    c.stat("claude_resumed_sessions")
    return child


def generate_claude(c: Corpus, target_bytes: int, quirks: bool) -> None:
    rng = c.rng
    while c.bytes["claude"] < target_bytes:
        project = rng.choice(CLAUDE_PROJECTS)
        gateway = rng.random() < 0.02
        sess = ClaudeSession(c, project=project, start=c.session_start(),
                             style=ClaudeStyle(gateway=gateway))
        sess.run(rng.randint(2, 40))
        sess.close()
        c.stat("claude_sessions")
        if not gateway and rng.random() < 0.08 and sess.turn_boundaries:
            claude_resume(c, sess, rng.randint(1, 12))
    if quirks:
        claude_quirks(c)


def claude_quirks(c: Corpus) -> None:
    rng = c.rng
    cases: list[tuple[str, str, str, ClaudeStyle]] = [
        ("claude.timestamp_microseconds", "section 2.11 step 6; section 8 #15",
         "transcript re-serialised with 6-digit fractional seconds: ccusage drops every line",
         ClaudeStyle(timestamps="micro", features=False)),
        ("claude.null_in_tool_input", "section 2.11 step 4; section 8 #10",
         "tool_use input with \"model\":null: ccusage drops that line (the request keeps its "
         "earlier placeholder snapshot, or disappears)",
         ClaudeStyle(null_tool_input=True, features=False, version="2.1.30")),
        ("claude.non_semver_version", "section 2.11 step 7; section 8 #16",
         "version \"dev-build\": ccusage drops every line",
         ClaudeStyle(version="dev-build", features=False)),
        ("claude.pretty_printed", "section 2.11 step 3; section 8 #11",
         "lines written with spaces after ':' and ',' (\"usage\": {): ccusage ignores them",
         ClaudeStyle(spaced=True, features=False)),
        ("claude.requestless_streamed", "section 8 #3",
         "gateway responses without requestId streamed over several lines: ccusage 20.0.24 "
         "`claude daily` counts every line",
         ClaudeStyle(gateway=True, gateway_streamed=True, features=False)),
        ("claude.long_context", "section 5.3; section 8 #13",
         "prompts above 200k tokens: same tokens, ccusage tiers each category separately "
         "and reports a lower cost",
         ClaudeStyle(long_context=True, features=False, version="2.1.30")),
    ]
    for kind, spec, desc, style in cases:
        for _ in range(2):
            q = Quirk(kind=kind, source="claude", spec=spec, description=desc)
            sess = ClaudeSession(c, project=rng.choice(CLAUDE_PROJECTS), start=c.session_start(),
                                 style=style, quirk=q)
            if style.long_context:
                sess.main.ctx = 0
                sess.sys_prefix = 0
            turns = rng.randint(2, 5)
            if style.long_context:
                # Grow the context past 200k quickly with big reads.
                sess.main.ctx = rng.randint(195_000, 230_000)
                sess.main.cache_until = sess.t + 300_000
            sess.run(turns)
            sess.close()
            q.files = [c.rel(p) for p in sess.files]
            c.quirks.append(q)


# ------------------------------------------------------------------ Codex


@dataclass
class CodexUsage:
    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0
    total: int = 0

    def obj(self) -> dict[str, int]:
        return {"input_tokens": self.input, "cached_input_tokens": self.cached,
                "output_tokens": self.output, "reasoning_output_tokens": self.reasoning,
                "total_tokens": self.total}

    def plus(self, o: CodexUsage) -> CodexUsage:
        return CodexUsage(self.input + o.input, self.cached + o.cached, self.output + o.output,
                          self.reasoning + o.reasoning, self.total + o.total)

    def tok(self) -> Tok:
        return Tok(input=self.input - self.cached, output=self.output,
                   cache_read=self.cached, reasoning=self.reasoning)


RATE_LIMITS = {"primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": 1767650000},
               "secondary": {"used_percent": 3.0, "window_minutes": 10080,
                             "resets_at": 1768000000}}


class CodexSession:
    """Writes one Codex rollout and books its requests."""

    def __init__(self, c: Corpus, *, start: int, quirk: Quirk | None = None,
                 total_only: bool | None = None, archived: str = "no",
                 cli_version: str | None = None) -> None:
        self.c = c
        rng = c.rng
        self.rng = rng
        self.quirk = quirk
        self.start = start
        self.t = start
        self.thread_id = c.ids.uuid7(start)
        self.cwd = rng.choice(CLAUDE_PROJECTS)
        self.model = _weighted(rng, CODEX_MODELS)[0]
        self.cli_version = cli_version or rng.choice(CODEX_VERSIONS)
        self.total_only = (rng.random() < 0.1) if total_only is None else total_only
        self.reemit_p = rng.choice([0.02, 0.1, 0.25, 0.5])
        name = f"rollout-{c.clock.compact(start)}-{self.thread_id}.jsonl"
        if archived == "moved":
            self.path = c.out / "codex" / "archived_sessions" / name
        else:
            d = c.clock.date(start)
            self.path = c.out / "codex" / "sessions" / d[:4] / d[5:7] / d[8:10] / name
        self.archived = archived
        self.out = JsonlOut(self.path)
        self.cum = CodexUsage()
        self.ctx = 0
        self.events: list[tuple[int, dict[str, Any]]] = []  # (ts, info) of real token events
        # turn_context and token_count items in file order, for fork replays
        self.history: list[tuple[str, dict[str, Any]]] = []
        self.first_vs: tuple[CodexUsage, str] | None = None
        self.meta: dict[str, Any] = {}

    def line(self, kind: str, payload: dict[str, Any], ts: int | None = None) -> None:
        self.out.write({"timestamp": self.c.clock.iso(self.t if ts is None else ts),
                        "type": kind, "payload": payload})

    def session_meta(self, source: Any = "cli", forked_from: str | None = None) -> None:
        rng = self.rng
        payload: dict[str, Any] = {"id": self.thread_id, "timestamp": self.c.clock.iso(self.t),
                                   "cwd": self.cwd,
                                   "originator": rng.choice(["codex_cli_rs", "codex_vscode",
                                                             "codex_exec"]),
                                   "cli_version": self.cli_version, "source": source,
                                   "model_provider": "openai"}
        if forked_from:
            payload["forked_from_id"] = forked_from
        if rng.random() < 0.4:
            payload["base_instructions"] = {"text": self.c.fill.text(rng.randint(3000, 12000))}
        payload["git"] = {"commit_hash": self.c.ids.hexs(40),
                          "branch": rng.choice(BRANCHES) or "main",
                          "repository_url": f"git@github.com:acme/{rng.choice(_WORDS)}.git"}
        self.meta = payload
        self.line("session_meta", payload)
        env_text = (f"<environment_context>\n  <cwd>{self.cwd}</cwd>\n  <approval_policy>on-request"
                    "</approval_policy>\n  <sandbox_mode>workspace-write</sandbox_mode>\n  "
                    "<network_access>restricted</network_access>\n  <shell>bash</shell>\n"
                    "</environment_context>")
        self.line("response_item", {"type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": env_text}]})
        if rng.random() < 0.5:
            self.line("response_item", {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": f"# AGENTS.md instructions for {self.cwd}\n\n"
                 f"<INSTRUCTIONS>\n{self.c.fill.text(rng.randint(500, 4000))}\n</INSTRUCTIONS>"}]})

    def turn_context(self) -> None:
        payload = {"cwd": self.cwd, "approval_policy": "on-request",
                   "sandbox_policy": {"type": "workspace-write", "network_access": False,
                                      "exclude_tmpdir_env_var": False, "exclude_slash_tmp": False},
                   "model": self.model, "effort": self.rng.choice(["low", "medium", "high"]),
                   "summary": "auto"}
        self.history.append(("turn_context", payload))
        self.line("turn_context", payload)

    def token_event(self, last: CodexUsage | None, ts: int | None = None,
                    reemit: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {"total_token_usage": self.cum.obj()}
        if last is not None and not self.total_only:
            info["last_token_usage"] = last.obj()
        info["model_context_window"] = 272_000
        payload = {"type": "token_count", "info": info, "rate_limits": RATE_LIMITS}
        self.line("event_msg", payload, ts)
        self.history.append(("event_msg", payload))
        if not reemit:
            self.events.append((self.t if ts is None else ts, info))
        return info

    def request(self, new: int) -> CodexUsage:
        rng = self.rng
        prompt = self.ctx + new
        cached = (self.ctx // 256) * 256 if self.ctx and rng.random() < 0.93 else 0
        cached = min(cached, prompt)
        output = rng.randint(30, 2500)
        reasoning = int(output * rng.random() * 0.8)
        if self.first_vs is not None:
            # A sub-agent's first own request relative to the copied parent total
            # (its own counter restarts at zero): below it in every component, or
            # above it in every component (then the cumulative vector alone does not
            # reveal the restart).
            ref, where = self.first_vs
            if where == "above":
                prompt = max(prompt, ref.input + 500)
                output = max(output, ref.output + 10)
                reasoning = max(min(reasoning, output), min(ref.reasoning + 1, output))
                cached = min(cached, prompt)
            else:
                prompt = min(prompt, max(1, ref.input // 2))
                output = min(output, max(1, ref.output // 2))
                reasoning = min(reasoning, ref.reasoning // 2)
                cached = min(cached, ref.cached // 2, prompt)
            self.first_vs = None
        u = CodexUsage(prompt, cached, output, reasoning, prompt + output)
        self.ctx = prompt + output - reasoning
        return u

    def book(self, u: CodexUsage, ts: int) -> None:
        tok = u.tok()
        day = self.c.clock.date(ts)
        cost = self.c.pricer.cost("codex", self.model, tok)
        self.c.ledgers["codex"].add(day, self.model, tok, cost)
        if self.quirk is not None:
            self.quirk.correct.add(day, tok, cost)

    def emit_request(self, new: int, *, final: bool) -> None:
        rng = self.rng
        fill = self.c.fill
        self.t += rng.randint(1500, 40_000)
        self.line("response_item", {"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "**" + fill.sentence(10, 40) + "**\n\n"
             + fill.text(rng.randint(50, 600))}], "content": None,
            "encrypted_content": "gAAAAAB" + fill.b64(rng.randint(800, 6000))})
        u = self.request(new)
        self.cum = self.cum.plus(u)
        if final:
            text = fill.text(rng.randint(50, 2000))
            self.line("event_msg", {"type": "agent_message", "message": text})
            self.line("response_item", {"type": "message", "role": "assistant",
                                        "content": [{"type": "output_text", "text": text}]})
        else:
            call_id = f"call_{self.c.ids.b62(24)}"
            if rng.random() < 0.25:
                self.line("response_item", {"type": "custom_tool_call", "status": "completed",
                                            "call_id": call_id, "name": "apply_patch",
                                            "input": "*** Begin Patch\n*** Update File: src/"
                                            + rng.choice(_WORDS) + ".py\n@@\n-"
                                            + fill.text(rng.randint(50, 800)).replace("\n", "\n-")
                                            + "\n+" + fill.text(rng.randint(50, 900)).replace(
                                                "\n", "\n+") + "\n*** End Patch\n"})
            else:
                args = {"command": ["bash", "-lc", f"rg -n {rng.choice(_WORDS)} src"],
                        "workdir": self.cwd, "timeout_ms": 120000}
                self.line("response_item", {"type": "function_call", "name": "shell",
                                            "arguments": json.dumps(args), "call_id": call_id})
        self.token_event(u)
        self.book(u, self.t)
        while rng.random() < self.reemit_p:
            self.t += rng.randint(50, 20_000)
            self.token_event(u, reemit=True)
            self.c.stat("codex_reemits")
        if rng.random() < 0.05:
            self.line("event_msg", {"type": "token_count", "info": None,
                                    "rate_limits": RATE_LIMITS})
        if not final:
            self.t += rng.randint(200, 30_000)
            size = int(rng.paretovariate(1.2) * 150)
            if rng.random() < 0.03:
                size = rng.randint(20_000, 200_000)
            output = json.dumps({"output": fill.text(size),
                                 "metadata": {"exit_code": rng.choice([0, 0, 0, 1]),
                                              "duration_seconds": round(rng.random() * 9, 1)}})
            self.line("response_item", {"type": "function_call_output",
                                        "call_id": f"call_{self.c.ids.b62(24)}", "output": output})
            self.ctx += min(size // 4, 30_000)

    def run(self, turns: int) -> None:
        rng = self.rng
        for turn in range(turns):
            if turn:
                self.t += int(rng.expovariate(1 / 300_000)) + 5_000
            self.turn_context()
            text = self.c.fill.text(rng.randint(20, 800))
            self.line("event_msg", {"type": "user_message", "message": text, "images": []})
            self.line("response_item", {"type": "message", "role": "user",
                                        "content": [{"type": "input_text", "text": text}]})
            self.line("event_msg", {"type": "task_started", "model_context_window": 272_000})
            new = len(text) // 4 + (rng.randint(6_000, 12_000) if self.ctx == 0 else 0)
            n_req = min(30, int(rng.expovariate(1 / 6)) + 1)
            for i in range(n_req):
                if self.ctx + new > 220_000:
                    self.line("compacted", {"message": self.c.fill.text(rng.randint(1000, 4000)),
                                            "replacement_history": []})
                    self.line("event_msg", {"type": "context_compacted"})
                    self.ctx = rng.randint(12_000, 30_000)
                    self.c.stat("codex_compactions")
                self.emit_request(new, final=i == n_req - 1)
                new = 0
            self.line("event_msg", {"type": "task_complete", "last_agent_message": "done"})

    def close(self) -> None:
        self.out.close()
        self.c.bytes["codex"] += self.out.bytes
        self.c.files["codex"] += 1
        if self.archived == "copied":
            dest = self.c.out / "codex" / "archived_sessions" / self.path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path, dest)
            self.c.bytes["codex"] += self.out.bytes
            self.c.files["codex"] += 1
            self.c.stat("codex_archived_copies")


def codex_child(c: Corpus, parent: CodexSession, kind: str, replay_events: int,
                quirk: Quirk | None = None, first: str | None = None) -> CodexSession:
    """A Desktop fork (``forked_from_id``) or a ``thread_spawn`` sub-agent of ``parent``.

    Both files start with the child's meta, the parent's meta and a burst of the
    parent's history re-written at the copy time; only what follows is new usage.
    """
    rng = c.rng
    k = min(replay_events, len(parent.events))
    if kind == "fork":
        at = parent.t + rng.randint(60_000, 3 * 3_600_000)
    else:
        at = parent.events[k - 1][0] + rng.randint(1_000, 20_000)
    at = at // 1000 * 1000 + 1000  # whole second, after the last copied event
    child = CodexSession(c, start=at, quirk=quirk, total_only=False)
    child.model = parent.model
    child.cwd = parent.cwd
    if kind == "fork":
        child.session_meta(forked_from=parent.thread_id)
    else:
        child.session_meta(source={"subagent": {"thread_spawn": {
            "parent_thread_id": parent.thread_id, "depth": 1,
            "agent_nickname": rng.choice(["Scout", "Builder", "Reviewer"]),
            "agent_role": "explorer"}}})
    pmeta = dict(parent.meta)
    pmeta["timestamp"] = c.clock.iso(at)
    child.line("session_meta", pmeta, at)
    if kind == "fork":
        # The whole parent history (here: its turn contexts and token events).
        for item_kind, payload in parent.history:
            child.line(item_kind, payload, at)
    else:
        # A burst of the parent's first k token events, all at the spawn time.
        for _, info in parent.events[:k]:
            child.line("event_msg", {"type": "token_count", "info": info,
                                     "rate_limits": RATE_LIMITS}, at)
    if kind == "fork":
        child.cum = CodexUsage(**{f: v for f, v in zip(
            ("input", "cached", "output", "reasoning", "total"),
            parent.events[k - 1][1]["total_token_usage"].values(), strict=True)})
        child.ctx = parent.ctx
    else:
        child.model = "gpt-5.1-codex-mini" if rng.random() < 0.5 else parent.model
    if first is not None:
        total = parent.events[k - 1][1]["total_token_usage"]
        child.first_vs = (CodexUsage(*total.values()), first)
    child.t = at + rng.randint(2_000, 10_000)
    child.run(rng.randint(1, 4))
    child.close()
    c.stat(f"codex_{kind}s")
    return child



def generate_codex(c: Corpus, target_bytes: int, quirks: bool) -> None:
    rng = c.rng
    while c.bytes["codex"] < target_bytes:
        r = rng.random()
        archived = "copied" if r < 0.04 else "moved" if r < 0.08 else "no"
        sess = CodexSession(c, start=c.session_start(), archived=archived)
        sess.session_meta()
        sess.run(rng.randint(1, 12))
        sess.close()
        c.stat("codex_sessions")
        if not sess.total_only and len(sess.events) >= 3:
            if rng.random() < 0.04:
                codex_child(c, sess, "fork", len(sess.events))
            elif rng.random() < 0.04:
                codex_child(c, sess, "spawn", rng.randint(2, len(sess.events)))
    if quirks:
        codex_quirks(c)


def _ccusage_codex(events: list[dict[str, Any]]) -> list[Tok]:
    """ccusage's per-event usage (format spec 3.8 step 3) for total-only events."""
    prev: dict[str, int] | None = None
    out = []
    for info in events:
        cur = info["total_token_usage"]
        last = info.get("last_token_usage")
        if last is not None:
            u = dict(last)
        elif prev is None:
            u = dict(cur)
        else:
            u = {k: max(0, cur[k] - prev[k]) for k in cur}
        prev = cur
        if not (u["input_tokens"] or u["cached_input_tokens"] or u["output_tokens"]
                or u["reasoning_output_tokens"]):
            out.append(Tok())
            continue
        cached = min(u["cached_input_tokens"], u["input_tokens"])
        out.append(Tok(input=u["input_tokens"] - cached, cache_read=cached,
                       output=u["output_tokens"], reasoning=u["reasoning_output_tokens"]))
    return out


def codex_quirks(c: Corpus) -> None:
    rng = c.rng
    for _ in range(2):
        # Counter reset (new process) in a rollout without last_token_usage.
        q = Quirk(kind="codex.counter_reset", source="codex", spec="section 3.8; section 8 #27",
                  description="cumulative total drops (new process) in a total-only rollout: "
                              "ccusage's saturating delta loses the usage at the drop")
        sess = CodexSession(c, start=c.session_start(), quirk=q, total_only=True)
        sess.session_meta()
        sess.run(rng.randint(2, 3))
        # The process restarts: the counter begins again from zero.
        sess.cum = CodexUsage()
        sess.ctx = rng.randint(8_000, 20_000)
        sess.t += rng.randint(600_000, 3_600_000)
        sess.run(rng.randint(1, 3))
        sess.close()
        q.files = [c.rel(sess.path)]
        for (ts, _), tok in zip(sess.events, _ccusage_codex([i for _, i in sess.events]),
                                strict=True):
            if not tok.is_zero():
                q.ccusage.add(c.clock.date(ts), tok, c.pricer.cost("codex", sess.model, tok))
        c.quirks.append(q)

    # Named agreements: cases the format spec documents as ccusage defects that
    # 20.0.24 no longer shows (the parity test asserts the agreement by name).
    q = Quirk(kind="codex.single_event_subagent_replay", source="codex",
              spec="section 3.7.4; section 3.8 step 5; section 8 #25",
              description="thread_spawn sub-agents whose copied parent history holds a single "
                          "token event: the copy is not counted (the same-second rule of "
                          "20.0.11 misses it; 20.0.24 was observed to agree). The child's own "
                          "counter restarts at zero: its first total is below the copied one "
                          "in one file and above it in every component in the other, where "
                          "only last_token_usage shows the restart")
    for first in ("below", "above"):
        parent = CodexSession(c, start=c.session_start(), quirk=q, total_only=False)
        parent.reemit_p = 0.0
        parent.session_meta()
        parent.run(rng.randint(1, 3))
        parent.close()
        child = codex_child(c, parent, "spawn", 1, quirk=q, first=first)
        q.files += [c.rel(parent.path), c.rel(child.path)]
    q.ccusage.days = {d: _copy_cell(cell) for d, cell in q.correct.days.items()}
    c.quirks.append(q)

    q = Quirk(kind="codex.reemit", source="codex", spec="section 3.7.2 step 2; section 8 #21",
              description="token_count snapshots re-emitted with new timestamps: counted once "
                          "(20.0.11 counted every copy; 20.0.24 agrees with the correct count)")
    sess = CodexSession(c, start=c.session_start(), quirk=q, total_only=False)
    sess.reemit_p = 0.7
    sess.session_meta()
    sess.run(rng.randint(2, 4))
    sess.close()
    q.files = [c.rel(sess.path)]
    q.ccusage.days = {d: _copy_cell(cell) for d, cell in q.correct.days.items()}
    c.quirks.append(q)

    q = Quirk(kind="codex.fork_replay", source="codex", spec="section 3.7.4; section 8 #24",
              description="Desktop fork replaying the parent's history at the fork time: "
                          "replay not counted (20.0.11 counted it; 20.0.24 agrees)")
    parent = CodexSession(c, start=c.session_start(), quirk=q, total_only=False)
    parent.reemit_p = 0.0
    parent.session_meta()
    parent.run(rng.randint(2, 3))
    parent.close()
    child = codex_child(c, parent, "fork", len(parent.events), quirk=q)
    q.files = [c.rel(parent.path), c.rel(child.path)]
    q.ccusage.days = {d: _copy_cell(cell) for d, cell in q.correct.days.items()}
    c.quirks.append(q)

    # A microsecond timestamp makes ccusage abort the whole Codex report: isolated home.
    home = c.out / "isolated" / "codex-microsecond-timestamp"
    start = c.session_start()
    tid = c.ids.uuid7(start)
    d = c.clock.date(start)
    name = f"rollout-{c.clock.compact(start)}-{tid}.jsonl"
    path = home / "sessions" / d[:4] / d[5:7] / d[8:10] / name
    out = JsonlOut(path)
    out.write({"timestamp": c.clock.iso(start), "type": "session_meta",
               "payload": {"id": tid, "timestamp": c.clock.iso(start), "cwd": "/home/dev/demo-app",
                           "originator": "codex_cli_rs", "cli_version": "0.92.0",
                           "source": "cli", "model_provider": "openai"}})
    out.write({"timestamp": c.clock.iso(start + 500), "type": "turn_context",
               "payload": {"cwd": "/home/dev/demo-app", "model": "gpt-5.2-codex"}})
    u = CodexUsage(4000, 1024, 300, 100, 4300)
    out.write({"timestamp": c.clock.iso_micro(start + 3000, 417), "type": "event_msg",
               "payload": {"type": "token_count", "info": {"total_token_usage": u.obj(),
                                                             "last_token_usage": u.obj(),
                                                             "model_context_window": 272000},
                           "rate_limits": RATE_LIMITS}})
    out.close()
    correct = DayTokens()
    correct.add(d, u.tok(), c.pricer.cost("codex", "gpt-5.2-codex", u.tok()))
    c.isolated.append({
        "kind": "codex.timestamp_microseconds", "source": "codex",
        "spec": "section 3.8 step 7; section 8 #15",
        "description": "a token_count line with a 6-digit fraction: ccusage aborts the whole "
                       "Codex report (\"Invalid Codex timestamp\"); a correct tracker counts it",
        "home": c.rel(home), "files": [c.rel(path)],
        "correct": correct.as_json(c.pricer.table is not None),
        "ccusage_error": "Invalid Codex timestamp", "ccusage_version": CCUSAGE_VERSION,
    })


def _copy_cell(cell: Cell) -> Cell:
    n = Cell()
    n.merge(cell)
    return n


# ------------------------------------------------------------------ OpenCode


class OpenCodeWriter:
    """JSON storage files and an ``opencode.db`` with the columns readers use."""

    def __init__(self, c: Corpus) -> None:
        self.c = c
        self.root = c.out / "opencode"
        self.storage = self.root / "storage"
        self.db: sqlite3.Connection | None = None
        self.projects: dict[str, str] = {}
        self.made_dirs: set[Path] = set()

    def open_db(self) -> sqlite3.Connection:
        if self.db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.root / "opencode.db")
            db.executescript("""
                CREATE TABLE project (id TEXT PRIMARY KEY, worktree TEXT NOT NULL, vcs TEXT,
                  name TEXT, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL,
                  sandboxes TEXT NOT NULL DEFAULT '[]');
                CREATE TABLE session (id TEXT PRIMARY KEY, project_id TEXT NOT NULL,
                  parent_id TEXT, slug TEXT NOT NULL, directory TEXT NOT NULL,
                  title TEXT NOT NULL, version TEXT NOT NULL, cost REAL NOT NULL DEFAULT 0,
                  tokens_input INTEGER NOT NULL DEFAULT 0, tokens_output INTEGER NOT NULL DEFAULT 0,
                  tokens_reasoning INTEGER NOT NULL DEFAULT 0,
                  tokens_cache_read INTEGER NOT NULL DEFAULT 0,
                  tokens_cache_write INTEGER NOT NULL DEFAULT 0,
                  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL,
                  time_compacting INTEGER, time_archived INTEGER);
                CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL,
                  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
                CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL,
                  session_id TEXT NOT NULL, time_created INTEGER NOT NULL,
                  time_updated INTEGER NOT NULL, data TEXT NOT NULL);
                CREATE INDEX message_session ON message(session_id);
                CREATE INDEX part_message ON part(message_id);
            """)
            self.db = db
        return self.db

    def write_json(self, path: Path, obj: Any) -> int:
        if path.parent not in self.made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(path.parent)
        data = msgspec.json.format(_encoder.encode(obj), indent=2)
        path.write_bytes(data)
        self.c.files["opencode"] += 1
        self.c.bytes["opencode"] += len(data)
        return len(data)

    def close(self) -> None:
        if self.db is not None:
            self.db.commit()
            self.db.close()
            db_path = self.root / "opencode.db"
            self.c.bytes["opencode"] += db_path.stat().st_size
            self.c.files["opencode"] += 1


class OpenCodeSession:
    def __init__(self, c: Corpus, w: OpenCodeWriter, *, start: int, db: bool, stale_json: bool,
                 quirk: Quirk | None = None, parent_id: str | None = None) -> None:
        self.c = c
        self.w = w
        self.rng = c.rng
        self.t = start
        self.db = db
        self.stale_json = stale_json
        self.quirk = quirk
        self.cwd = self.rng.choice(CLAUDE_PROJECTS)
        self.project_id = w.projects.setdefault(self.cwd, c.ids.hexs(40))
        self.session_id = c.ids.opencode("ses", start)
        self.parent_id = parent_id
        provider, model, _ = _weighted(self.rng, OPENCODE_MODELS)
        self.provider, self.model = provider, model
        self.ctx = 0
        self.files: list[Path] = []
        self.cost_total = 0.0
        self.last_user: str | None = None

    def rows(self, table: str, values: tuple[Any, ...]) -> None:
        db = self.w.open_db()
        marks = ",".join("?" * len(values))
        db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", values)

    def save_message(self, msg: dict[str, Any], parts: list[dict[str, Any]],
                     stale: dict[str, Any] | None = None) -> None:
        mid = msg["id"]
        if self.db:
            data = {k: v for k, v in msg.items() if k not in ("id", "sessionID")}
            updated = msg["time"].get("completed", msg["time"].get("created", self.t))
            self.rows("message", (mid, self.session_id, msg["time"].get("created", updated),
                                  updated, json.dumps(data)))
            for p in parts:
                pdata = {k: v for k, v in p.items() if k not in ("id", "messageID", "sessionID")}
                self.rows("part", (p["id"], mid, self.session_id, updated, updated,
                                   json.dumps(pdata)))
            if stale is not None:
                path = self.w.storage / "message" / self.session_id / f"{mid}.json"
                self.w.write_json(path, stale)
                self.files.append(path)
            return
        path = self.w.storage / "message" / self.session_id / f"{mid}.json"
        self.w.write_json(path, msg)
        self.files.append(path)
        for p in parts:
            ppath = self.w.storage / "part" / mid / f"{p['id']}.json"
            self.w.write_json(ppath, p)
            self.files.append(ppath)

    def step_tokens(self) -> tuple[dict[str, Any], Tok]:
        rng = self.rng
        new = rng.randint(200, 6000) + (rng.randint(8_000, 14_000) if self.ctx == 0 else 0)
        output = rng.randint(30, 2000)
        if self.provider == "openai":
            cached = (self.ctx // 256) * 256
            tok = Tok(input=self.ctx + new - cached, output=output, cache_read=cached,
                      reasoning=int(output * rng.random() * 0.6))
        elif self.provider == "anthropic":
            tok = Tok(input=rng.randint(2, 12), output=output, cache_read=self.ctx,
                      cache_write=new)
        else:
            tok = Tok(input=new, output=output, cache_read=self.ctx)
        self.ctx += new + output
        if self.ctx > 150_000:
            self.ctx = rng.randint(10_000, 25_000)
        tokens: dict[str, Any] = {"input": tok.input, "output": tok.output,
                                  "reasoning": tok.reasoning,
                                  "cache": {"read": tok.cache_read, "write": tok.cache_write}}
        if not tok.reasoning:
            tokens["total"] = tok.total
        return tokens, tok

    def logged_cost(self, tok: Tok) -> float:
        if self.provider in ("zai-coding-plan",) or self.rng.random() < 0.1:
            return 0
        value = self.c.pricer.cost("opencode", self.model, tok)
        return round(value, 8) if value is not None else 0

    def book(self, ts: int, steps: list[Tok], step_costs: list[float],
             ccusage_tok: Tok | None, ccusage_ts: int | None = None) -> None:
        """Book one message: each step is one billed request (format spec 4.5)."""
        day = self.c.clock.date(ts)
        tok = Tok()
        cost: float | None = 0.0
        for st, logged in zip(steps, step_costs, strict=True):
            tok = Tok(tok.input + st.input, tok.output + st.output,
                      tok.cache_write + st.cache_write, tok.cache_read + st.cache_read,
                      tok.reasoning + st.reasoning)
            c = self.c.pricer.cost("opencode", self.model, st, logged=logged or None)
            cost = None if c is None or cost is None else cost + c
        self.c.ledgers["opencode"].add(day, self.model, tok, cost, requests=len(steps))
        if self.quirk is not None:
            self.quirk.correct.add(day, tok, cost, requests=len(steps))
            if ccusage_tok is not None:
                cc_ts = ts if ccusage_ts is None else ccusage_ts
                self.quirk.ccusage.add(self.c.clock.date(cc_ts), ccusage_tok)

    def part(self, mid: str, kind: str, **fields: Any) -> dict[str, Any]:
        return {"id": self.c.ids.opencode("prt", self.t), "sessionID": self.session_id,
                "messageID": mid, "type": kind, **fields}

    def assistant(self, parent_msg: str, *, steps: int = 1, streaming: bool = False,
                  aborted: bool = False, no_created: bool = False) -> None:
        rng = self.rng
        created = self.t
        mid = self.c.ids.opencode("msg", created)
        parts: list[dict[str, Any]] = []
        step_toks: list[Tok] = []
        step_costs: list[float] = []
        tokens: dict[str, Any] = {}
        for i in range(steps):
            parts.append(self.part(mid, "step-start", snapshot=self.c.ids.hexs(7)))
            if self.provider == "openai":
                parts.append(self.part(mid, "reasoning",
                                       text=self.c.fill.text(rng.randint(50, 800)),
                                       time={"start": self.t, "end": self.t + 900}))
            last_step = i == steps - 1
            if not last_step or rng.random() < 0.6:
                self.t += rng.randint(800, 15_000)
                out_text = self.c.fill.text(int(rng.paretovariate(1.3) * 120))
                parts.append(self.part(
                    mid, "tool", callID=f"toolu_01{self.c.ids.b62(22)}",
                    tool=rng.choice(["read", "bash", "edit", "grep", "glob"]),
                    state={"status": "completed",
                           "input": {"filePath": f"{self.cwd}/src/{rng.choice(_WORDS)}.ts"},
                           "output": out_text, "title": "src", "metadata": {},
                           "time": {"start": self.t, "end": self.t + 150}}))
            self.t += rng.randint(1000, 20_000)
            parts.append(self.part(mid, "text", text=self.c.fill.text(rng.randint(20, 1200)),
                                   time={"start": self.t - 900, "end": self.t}))
            tokens, tok = self.step_tokens()
            if aborted:
                tok = Tok(input=rng.randint(2, 10), cache_write=rng.randint(1000, 6000))
                tokens = {"input": tok.input, "output": 0, "reasoning": 0,
                          "cache": {"read": 0, "write": tok.cache_write}}
            cost = self.logged_cost(tok)
            parts.append(self.part(mid, "step-finish",
                                   reason="stop" if last_step else "tool-calls",
                                   snapshot=self.c.ids.hexs(7), cost=cost, tokens=tokens))
            step_toks.append(tok)
            step_costs.append(cost)
        msg: dict[str, Any] = {"id": mid, "sessionID": self.session_id, "role": "assistant",
                               "time": {"created": created, "completed": self.t},
                               "parentID": parent_msg, "modelID": self.model,
                               "providerID": self.provider, "mode": "build", "agent": "build",
                               "path": {"cwd": self.cwd, "root": self.cwd},
                               # OpenCode adds every step's cost but keeps only the
                               # last step's tokens (format spec 4.5).
                               "cost": round(sum(step_costs), 8), "tokens": tokens,
                               "finish": "stop"}
        if streaming:
            msg["time"] = {"created": created}
            msg["tokens"] = {"input": 0, "output": 0, "reasoning": 0,
                             "cache": {"read": 0, "write": 0}}
            msg["cost"] = 0
            del msg["finish"]
            parts = [p for p in parts if p["type"] != "step-finish"]
            self.save_message(msg, parts)
            self.c.stat("opencode_streaming_messages")
            return
        if aborted:
            msg["error"] = {"name": "MessageAbortedError", "data": {"message": "aborted"}}
            del msg["finish"]
        if no_created:
            msg["time"] = {"completed": self.t}
        stale = None
        if self.db and self.stale_json and rng.random() < 0.5:
            # A JSON copy left behind by the migration, older than the database row.
            stale = json.loads(json.dumps(msg))
            stale["tokens"]["output"] = max(1, stale["tokens"]["output"] // 3)
            stale["time"].pop("completed", None)
            stale.pop("finish", None)
            self.c.stat("opencode_stale_json_copies")
        self.save_message(msg, parts, stale)
        # Day of a message: time.created (time.completed when created is missing).
        self.book(self.t if no_created else created, step_toks, step_costs,
                  ccusage_tok=step_toks[-1], ccusage_ts=0 if no_created else created)
        self.cost_total += sum(step_costs)

    def run(self, turns: int) -> None:
        rng = self.rng
        sess_json: dict[str, Any] = {"id": self.session_id, "slug": "-".join(rng.sample(_WORDS, 2)),
                     "version": rng.choice(["0.15.8", "1.0.150", "1.1.20"]),
                     "projectID": self.project_id, "directory": self.cwd,
                     "title": self.c.fill.sentence(10, 50),
                     "time": {"created": self.t, "updated": self.t}}
        if self.parent_id:
            sess_json["parentID"] = self.parent_id
        for _ in range(turns):
            self.t += int(rng.expovariate(1 / 200_000)) + 3_000
            uid = self.c.ids.opencode("msg", self.t)
            user = {"id": uid, "sessionID": self.session_id, "role": "user",
                    "time": {"created": self.t}, "agent": "build",
                    "model": {"providerID": self.provider, "modelID": self.model}}
            text = self.part(uid, "text", text=self.c.fill.text(rng.randint(20, 600)))
            self.save_message(user, [text])
            self.last_user = uid
            for _ in range(rng.randint(1, 4)):
                self.t += rng.randint(500, 3000)
                if rng.random() < 0.03:
                    self.assistant(uid, aborted=True)
                    self.c.stat("opencode_aborted_messages")
                    break
                self.assistant(uid)
        if self.last_user and rng.random() < 0.1:
            self.t += 2000
            self.assistant(self.last_user, streaming=True)
        sess_json["time"]["updated"] = self.t
        if self.db:
            self.rows("project", (self.project_id, self.cwd, "git", None, self.t, self.t, "[]"))
            self.rows("session", (self.session_id, self.project_id, self.parent_id,
                                  sess_json["slug"], self.cwd, sess_json["title"],
                                  sess_json["version"], self.cost_total, 0, 0, 0, 0, 0,
                                  sess_json["time"]["created"], self.t, None, None))
            if self.stale_json:
                spath = self.w.storage / "session" / self.project_id / f"{self.session_id}.json"
                self.w.write_json(spath, sess_json)
        else:
            spath = self.w.storage / "session" / self.project_id / f"{self.session_id}.json"
            self.w.write_json(spath, sess_json)
            self.files.append(spath)
            ppath = self.w.storage / "project" / f"{self.project_id}.json"
            if not ppath.exists():
                self.w.write_json(ppath, {"id": self.project_id, "worktree": self.cwd, "vcs": "git",
                                          "time": {"created": self.t, "updated": self.t}})
            self.files.append(ppath)


def generate_opencode(c: Corpus, sessions: int, quirks: bool) -> None:
    rng = c.rng
    if sessions <= 0:
        return
    w = OpenCodeWriter(c)
    mid_day = c.start_ms + c.days // 2 * DAY_MS
    for _ in range(sessions):
        start = c.session_start()
        db = start >= mid_day  # newer sessions live in the database
        sess = OpenCodeSession(c, w, start=start, db=db, stale_json=db and rng.random() < 0.3)
        sess.run(rng.randint(2, 15))
        c.stat("opencode_sessions")
        if rng.random() < 0.1:
            child = OpenCodeSession(c, w, start=sess.t + 1000, db=db, stale_json=False,
                                    parent_id=sess.session_id)
            child.run(rng.randint(1, 3))
            c.stat("opencode_child_sessions")
    if quirks:
        for kind, spec, desc, kw in (
            ("opencode.multi_step", "section 4.5; section 8 #33",
             "assistant message spanning several model requests: its tokens are the last "
             "step's, ccusage counts those; the correct count sums the step-finish parts",
             {"steps": 3}),
            ("opencode.missing_created", "section 4.6 step 4; section 8 #39",
             "message without time.created: ccusage dates it 1970-01-01; the correct day "
             "comes from time.completed", {"no_created": True}),
        ):
            for _ in range(2):
                q = Quirk(kind=kind, source="opencode", spec=spec, description=desc,
                          with_cost=False)
                sess = OpenCodeSession(c, w, start=c.session_start(), db=False, stale_json=False,
                                       quirk=q)
                while sess.provider == "openai":  # keep reasoning out of these cases
                    provider, model, _ = _weighted(rng, OPENCODE_MODELS)
                    sess.provider, sess.model = provider, model
                sess.t += 1000
                uid = c.ids.opencode("msg", sess.t)
                user = {"id": uid, "sessionID": sess.session_id, "role": "user",
                        "time": {"created": sess.t}, "agent": "build",
                        "model": {"providerID": sess.provider, "modelID": sess.model}}
                sess.save_message(user, [])
                sess.assistant(uid, **kw)
                sess.run(0)
                q.files = [c.rel(p) for p in sess.files]
                c.quirks.append(q)
    w.close()


# ------------------------------------------------------------------ driver


def generate(out: Path, *, claude_mb: float, codex_mb: float | None = None,
             opencode_sessions: int = 40, seed: int = 1, quirks: bool = True,
             start: str = "2026-01-05", days: int = 60) -> dict[str, Any]:
    """Write the corpus below ``out`` (which must not exist or be empty); returns expected."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; refusing to mix corpora")
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    began_cpu = time.process_time()
    c = Corpus(out, seed, start, days)
    codex_mb = claude_mb / 4 if codex_mb is None else codex_mb
    (out / "claude" / "projects").mkdir(parents=True)
    (out / "codex" / "sessions").mkdir(parents=True)
    (out / "opencode").mkdir(parents=True)
    generate_claude(c, int(claude_mb * 1_000_000), quirks)
    generate_codex(c, int(codex_mb * 1_000_000), quirks)
    generate_opencode(c, opencode_sessions, quirks)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    with_cost = c.pricer.table is not None
    total_bytes = sum(c.bytes.values())
    expected: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "generator": {"seed": seed, "claude_mb": claude_mb, "codex_mb": codex_mb,
                      "opencode_sessions": opencode_sessions, "quirks": quirks,
                      "start": start, "days": days},
        "timezone": "UTC",
        "price_version": c.pricer.version,
        "notes": [
            "Totals count every billed request once (format spec 2.10, 3.7, 4.5): the "
            "generator books a request when it writes it and never books a copy.",
            "Model labels are '<model>-fast' for fast-mode Claude requests.",
            "cost_usd is priced per request with relayburnd's bundled table (present only "
            "when relayburnd was importable); it checks per-request pricing and sums, not "
            "the prices.",
            "Codex input_tokens are uncached input (input - cached); cache_read_tokens are "
            "the cached part; total_tokens = input + output + cache write + cache read.",
            "OpenCode output_tokens are tokens.output; reasoning_tokens are reported "
            "separately and not added to output.",
        ],
        "sources": {name: led.as_json(with_cost) for name, led in c.ledgers.items()},
        "quirks": [q.as_json(with_cost) for q in c.quirks],
        "isolated": c.isolated,
        "files": c.files,
        "bytes": c.bytes,
        "stats": dict(sorted(c.stats.items())),
        "generation_seconds": round(elapsed, 3),
        "generation_cpu_seconds": round(cpu, 3),
    }
    # Written last so a reader can tell a finished corpus from a crashed run.
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    expected["_mb_per_s"] = total_bytes / 1e6 / elapsed if elapsed else 0.0
    expected["_mb_per_cpu_s"] = total_bytes / 1e6 / cpu if cpu else 0.0
    return expected


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    ap.add_argument("--claude-mb", type=float, default=200.0)
    ap.add_argument("--codex-mb", type=float, default=None, help="default: claude-mb / 4")
    ap.add_argument("--opencode-sessions", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default="2026-01-05", help="first day (UTC), YYYY-MM-DD")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--no-quirks", action="store_true",
                    help="leave out the cases ccusage reports differently")
    args = ap.parse_args(argv)
    exp = generate(args.out, claude_mb=args.claude_mb, codex_mb=args.codex_mb,
                   opencode_sessions=args.opencode_sessions, seed=args.seed,
                   quirks=not args.no_quirks, start=args.start, days=args.days)
    total = sum(exp["bytes"].values())
    print(f"wrote {total / 1e6:.1f} MB ({exp['files']}) in {exp['generation_seconds']:.1f}s "
          f"= {exp['_mb_per_s']:.0f} MB/s ({exp['_mb_per_cpu_s']:.0f} MB per CPU second); "
          f"expected totals in {args.out / 'expected.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
