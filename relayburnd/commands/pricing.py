"""``relayburnd pricing``: inspect the bundled price table.

Why it exists: a cost in a report is only as good as the price behind it. These
commands show which table entry a model name resolves to (the matching rules of
``relayburnd.pricing`` are fuzzy on purpose) and what the table contains, so a
surprising cost or an "unpriced" request can be explained without reading JSON.
"""

from __future__ import annotations

import json

import click

from ..pricing import (
    DEFAULT_CACHE_READ_FACTOR,
    DEFAULT_CACHE_WRITE_FACTOR,
    ONE_HOUR_WRITE_FACTOR,
    ModelPrice,
    PriceTable,
)

PER_MILLION = 1_000_000


def _per_million(value: float) -> str:
    # Round away binary noise (3e-06 * 1e6 = 2.9999999999999996) without hiding cents.
    return f"{round(value * PER_MILLION, 6):g}"


def _rows(price: ModelPrice) -> list[tuple[str, str, str]]:
    """(label, USD per million tokens, note) for every price the formula uses."""
    rows: list[tuple[str, str, str]] = [
        ("input", _per_million(price.input), ""),
        ("output", _per_million(price.output), ""),
    ]
    if price.cache_write is not None:
        rows.append(("cache write (5m)", _per_million(price.cache_write), ""))
    else:
        rows.append((
            "cache write (5m)",
            _per_million(DEFAULT_CACHE_WRITE_FACTOR * price.input),
            f"default {DEFAULT_CACHE_WRITE_FACTOR:g} x input",
        ))
    rows.append((
        "cache write (1h)",
        _per_million(ONE_HOUR_WRITE_FACTOR * price.input),
        f"{ONE_HOUR_WRITE_FACTOR:g} x input",
    ))
    if price.cache_read is not None:
        rows.append(("cache read", _per_million(price.cache_read), ""))
    else:
        rows.append((
            "cache read",
            _per_million(DEFAULT_CACHE_READ_FACTOR * price.input),
            f"default {DEFAULT_CACHE_READ_FACTOR:g} x input (Codex: input price)",
        ))
    for label, value in (
        ("input above 200k", price.input_above_200k),
        ("output above 200k", price.output_above_200k),
        ("cache write above 200k", price.cache_write_above_200k),
        ("cache read above 200k", price.cache_read_above_200k),
    ):
        if value is not None:
            rows.append((label, _per_million(value), "whole request when prompt > 200k"))
    if price.fast_multiplier is not None:
        rows.append(("fast mode", f"x{price.fast_multiplier:g}", "multiplier"))
    return rows


@click.group("pricing")
def pricing() -> None:
    """Show the bundled model price table and how model names match it."""


@pricing.command("show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
def show(model: str, as_json: bool) -> None:
    """Print the price entry MODEL resolves to, in USD per million tokens."""
    table = PriceTable.bundled()
    match = table.match(model)
    if match is None:
        raise click.ClickException(
            f"no price for model {model!r} in table {table.version}; requests with "
            "this model are reported as unpriced (see `relayburnd pricing list`)"
        )
    if as_json:
        click.echo(json.dumps({
            "model": model,
            "key": match.key,
            "matched_by": match.how,
            "version": table.version,
            "usd_per_token": match.price.as_dict(),
        }, indent=2))
        return
    click.echo(f"model:    {model}")
    click.echo(f"entry:    {match.key} (matched by {match.how})")
    click.echo(f"table:    {table.version}")
    click.echo("USD per million tokens:")
    rows = _rows(match.price)
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        line = f"  {label:<{width}}  {value:>10}"
        click.echo(f"{line}  ({note})" if note else line)


@pricing.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the whole table as JSON.")
def list_(as_json: bool) -> None:
    """List every model in the table (USD per million tokens)."""
    table = PriceTable.bundled()
    if as_json:
        click.echo(json.dumps({
            "version": table.version,
            "source": table.source,
            "models": {k: p.as_dict() for k, p in table},
            "aliases": dict(sorted(table.aliases.items())),
        }, indent=1))
        return
    header = ("model", "input", "output", "c.write", "c.read", ">200k in", "fast")
    lines = [header]
    for key, p in table:
        lines.append((
            key,
            _per_million(p.input),
            _per_million(p.output),
            _per_million(p.cache_write) if p.cache_write is not None else "-",
            _per_million(p.cache_read) if p.cache_read is not None else "-",
            _per_million(p.input_above_200k) if p.input_above_200k is not None else "-",
            f"x{p.fast_multiplier:g}" if p.fast_multiplier is not None else "-",
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                       strict=True)]
        click.echo("  ".join(cells).rstrip())
    click.echo(f"{len(table)} models, table {table.version}")
    if table.aliases:
        click.echo("aliases: " + ", ".join(f"{a} -> {t}" for a, t in sorted(table.aliases.items())))
