#!/usr/bin/env python3
"""Regenerate ``relayburnd/data/prices.json`` from LiteLLM's model price table.

Why a bundled table: cost must be computable offline and reproducibly (two hosts
pricing the same request must agree), so relayburnd never fetches prices at run
time. This script is how the bundled copy is refreshed.

Input: LiteLLM's ``model_prices_and_context_window.json`` (the data is MIT
licensed, https://github.com/BerriAI/litellm). An offline copy ships inside the
``litellm`` wheel on PyPI; there is no need to install litellm::

    pip download --no-deps litellm -d /tmp/litellm
    python scripts/update_prices.py /tmp/litellm/litellm-*.whl
    # or, with the JSON already extracted:
    python scripts/update_prices.py path/to/model_prices_and_context_window_backup.json

What is kept (to keep the table small): chat/responses models with an input and an
output price from the providers that coding agents talk to directly (Anthropic,
OpenAI, Google Gemini, DeepSeek, xAI, Mistral, Moonshot/Kimi, Zhipu/GLM, Qwen,
MiniMax), keyed by the bare model name (``gemini/gemini-2.5-pro`` becomes
``gemini-2.5-pro``). When several providers list the same bare name, the earlier
provider in ``PROVIDERS`` wins. Models that LiteLLM prices only through prompt-size
tiers (``tiered_pricing``, e.g. most Qwen models on DashScope) are left out: one
flat price would be wrong for most agent prompts, and an unpriced request is
reported as such rather than priced wrongly.

Two additions that LiteLLM does not carry:

* fast-mode multipliers for ``claude-opus-4-6`` and ``claude-opus-4-7`` (6x) and
  ``claude-opus-4-8`` (2x), used only where LiteLLM gives no
  ``provider_specific_entry.fast`` (Anthropic's published fast-mode pricing);
* long-context (above 200k prompt tokens) prices for Claude Sonnet 4.5
  (``LONG_CONTEXT``), which Anthropic publishes but some LiteLLM snapshots carry
  only on the Bedrock entry; used only where the entry has none;
* retired Anthropic models that newer LiteLLM snapshots dropped but that old
  Claude Code transcripts still name (``RETIRED``), at Anthropic's published
  list prices. A LiteLLM entry of the same name always wins.

The result is checked against the reference prices of the format spec
(``REFERENCE`` below, section 5.5); the script refuses to write a table that
prices those models differently, because the fixtures' expected costs depend on
them.

The table's ``version`` is ``<date>+litellm-<revision>-<sha256 prefix of the
input>``; every priced record stores it, so a cost can always be traced back to
the exact table that produced it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "relayburnd" / "data" / "prices.json"
WHEEL_MEMBER = "litellm/model_prices_and_context_window_backup.json"

# (LiteLLM provider, bare-name pattern). Order = precedence for equal bare names.
# The patterns drop models a provider merely hosts for someone else (e.g. GLM on
# Mistral), whose price is not the maker's direct price.
PROVIDERS: tuple[tuple[str, str], ...] = (
    ("anthropic", r"claude-"),
    ("openai", r"(gpt-|o\d|chatgpt-|codex-|computer-use)"),
    ("gemini", r"gemini-"),
    ("vertex_ai-language-models", r"gemini-"),
    ("deepseek", r"deepseek-"),
    ("xai", r"grok-"),
    ("mistral", r"(mistral-|open-mistral|codestral-|devstral-|magistral-|ministral-|pixtral-)"),
    ("codestral", r"codestral-"),
    ("moonshot", r"(kimi-|moonshot-)"),
    ("zai", r"glm-"),
    ("bigmodel", r"glm-"),
    ("dashscope", r"(qwen|qwq-)"),
    ("minimax", r"minimax-"),
)
MODES = {"chat", "responses"}

FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_write": "cache_creation_input_token_cost",
    "cache_read": "cache_read_input_token_cost",
    "input_above_200k": "input_cost_per_token_above_200k_tokens",
    "output_above_200k": "output_cost_per_token_above_200k_tokens",
    "cache_write_above_200k": "cache_creation_input_token_cost_above_200k_tokens",
    "cache_read_above_200k": "cache_read_input_token_cost_above_200k_tokens",
}

# Anthropic fast mode: premium multiplier on every token category.
FAST_MULTIPLIERS = {"claude-opus-4-6": 6.0, "claude-opus-4-7": 6.0, "claude-opus-4-8": 2.0}

# Anthropic's long-context rates (prompt > 200k tokens), per base model name.
_SONNET_LONG = {
    "input_above_200k": 6e-06, "output_above_200k": 2.25e-05,
    "cache_write_above_200k": 7.5e-06, "cache_read_above_200k": 6e-07,
}
LONG_CONTEXT: dict[str, dict[str, float]] = {"claude-sonnet-4-5": _SONNET_LONG}

# Retired Anthropic models (USD per token, Anthropic's published list prices).
RETIRED: dict[str, dict[str, float]] = {
    "claude-sonnet-4-20250514": {
        "input": 3e-06, "output": 1.5e-05, "cache_write": 3.75e-06, "cache_read": 3e-07,
        "input_above_200k": 6e-06, "output_above_200k": 2.25e-05,
        "cache_write_above_200k": 7.5e-06, "cache_read_above_200k": 6e-07,
    },
    "claude-opus-4-20250514": {
        "input": 1.5e-05, "output": 7.5e-05, "cache_write": 1.875e-05, "cache_read": 1.5e-06,
    },
    "claude-opus-4-1-20250805": {
        "input": 1.5e-05, "output": 7.5e-05, "cache_write": 1.875e-05, "cache_read": 1.5e-06,
    },
    "claude-3-7-sonnet-20250219": {
        "input": 3e-06, "output": 1.5e-05, "cache_write": 3.75e-06, "cache_read": 3e-07,
    },
    "claude-3-5-sonnet-20241022": {
        "input": 3e-06, "output": 1.5e-05, "cache_write": 3.75e-06, "cache_read": 3e-07,
    },
    "claude-3-5-haiku-20241022": {
        "input": 8e-07, "output": 4e-06, "cache_write": 1e-06, "cache_read": 8e-08,
    },
    "claude-3-haiku-20240307": {
        "input": 2.5e-07, "output": 1.25e-06, "cache_write": 3e-07, "cache_read": 3e-08,
    },
    "claude-3-opus-20240229": {
        "input": 1.5e-05, "output": 7.5e-05, "cache_write": 1.875e-05, "cache_read": 1.5e-06,
    },
}

# Names that no containment rule can reach, mapped to a key of the table.
ALIASES = {
    "gpt-5.3-spark": "gpt-5.3-codex-spark",
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-opus-4": "claude-opus-4-20250514",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-3-7-sonnet": "claude-3-7-sonnet-20250219",
    "claude-3-5-sonnet": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku": "claude-3-5-haiku-20241022",
}

# Format spec section 5.5: prices the fixtures' expected costs were computed with.
REFERENCE: dict[str, dict[str, float]] = {
    "claude-sonnet-4-20250514": RETIRED["claude-sonnet-4-20250514"],
    "claude-haiku-4-5": {"input": 1e-06, "output": 5e-06, "cache_write": 1.25e-06,
                         "cache_read": 1e-07},
    "claude-opus-4-6": {"input": 5e-06, "output": 2.5e-05, "cache_write": 6.25e-06,
                        "cache_read": 5e-07, "fast_multiplier": 6.0},
    "gpt-5": {"input": 1.25e-06, "output": 1e-05, "cache_read": 1.25e-07},
    "gpt-5.2-codex": {"input": 1.75e-06, "output": 1.4e-05, "cache_read": 1.75e-07},
}

_DATED = re.compile(r"^(?P<base>.+)-\d{8}$")


def read_source(path: Path) -> tuple[bytes, str]:
    """Bytes of the LiteLLM JSON and a revision label (the wheel's version, if any)."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            data = zf.read(WHEEL_MEMBER)
        # litellm-<version>-<python tag>-...whl
        parts = path.name.split("-")
        return data, parts[1] if len(parts) > 1 else "unknown"
    return path.read_bytes(), "json"


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def convert(entry: dict[str, Any]) -> dict[str, float] | None:
    """Our fields from one LiteLLM entry; None when it lacks an input or output price."""
    out: dict[str, float] = {}
    for ours, theirs in FIELDS.items():
        v = _price(entry.get(theirs))
        if v is not None:
            out[ours] = v
    if "input" not in out or "output" not in out:
        return None
    pse = entry.get("provider_specific_entry")
    fast = _price(pse.get("fast")) if isinstance(pse, dict) else None
    if fast is not None and fast > 0:
        out["fast_multiplier"] = fast
    return out


def build(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Select, rename and complete the entries (see the module docstring)."""
    models: dict[str, dict[str, float]] = {}
    for provider, pattern in PROVIDERS:
        name_re = re.compile(pattern)
        # Bare keys before prefixed ones, so a provider's canonical key wins.
        keys = sorted(
            (k for k, v in raw.items()
             if isinstance(v, dict) and v.get("litellm_provider") == provider),
            key=lambda k: ("/" in k, k),
        )
        for key in keys:
            entry = raw[key]
            if entry.get("mode") not in MODES:
                continue
            bare = key.split("/", 1)[1] if key.startswith(f"{provider}/") else key
            bare = bare.lower()
            if "/" in bare or ":" in bare or not name_re.match(bare) or bare in models:
                continue
            price = convert(entry)
            if price is not None:
                models[bare] = price
    for name, price in RETIRED.items():
        models.setdefault(name, dict(price))
    for name, price in models.items():
        m = _DATED.match(name)
        base = m.group("base") if m else name
        mult = FAST_MULTIPLIERS.get(name) or FAST_MULTIPLIERS.get(base)
        if mult is not None and "fast_multiplier" not in price:
            price["fast_multiplier"] = mult
        long_rates = LONG_CONTEXT.get(name) or LONG_CONTEXT.get(base)
        if long_rates is not None and "input_above_200k" not in price:
            price.update(long_rates)
    return {k: models[k] for k in sorted(models)}


def check_reference(models: dict[str, dict[str, float]]) -> list[str]:
    """Differences between the built table and the spec's reference prices."""
    problems = []
    for name, want in REFERENCE.items():
        got = models.get(name)
        if got is None:
            problems.append(f"{name}: missing")
            continue
        for field_name, value in want.items():
            if got.get(field_name) != value:
                problems.append(f"{name}.{field_name}: {got.get(field_name)!r} != {value!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="LiteLLM price JSON, or a litellm wheel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--revision", help="LiteLLM revision label (default: wheel version)")
    ap.add_argument("--date", help="version date, YYYY-MM-DD (default: today, UTC)")
    args = ap.parse_args(argv)

    data, revision = read_source(args.source)
    revision = args.revision or revision
    raw = json.loads(data)
    models = build(raw)
    problems = check_reference(models)
    if problems:
        print("reference prices differ, not writing:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    aliases = {a: t for a, t in sorted(ALIASES.items()) if t in models and a not in models}
    date = args.date or _dt.datetime.now(_dt.UTC).date().isoformat()
    sha = hashlib.sha256(data).hexdigest()
    table = {
        "version": f"{date}+litellm-{revision}-{sha[:12]}",
        "source": (
            f"LiteLLM model_prices_and_context_window.json (MIT, github.com/BerriAI/litellm), "
            f"revision {revision}, sha256 {sha}; direct-provider chat models keyed by bare "
            "name; fast multipliers for claude-opus-4-6/4-7 (6x) and 4-8 (2x), Sonnet 4.5 "
            "long-context rates and retired Anthropic models from Anthropic's published "
            "prices; "
            "generated by scripts/update_prices.py"
        ),
        "models": models,
        "aliases": aliases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(table, indent=1, sort_keys=False) + "\n"
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(models)} models, {len(aliases)} aliases, "
          f"version {table['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
