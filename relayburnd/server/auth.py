"""Bearer tokens of ``relayburnd serve``: where they come from and how they are checked.

Tokens come from ``RELAYBURN_SERVER_TOKENS`` (comma-separated) and
``RELAYBURN_SERVER_TOKENS_FILE`` (one per line, ``#`` comments), in the forms::

    <token>                    named token1, token2, ... by position
    <name>:<token>             the name is what logs and metrics show
    <name>:<token>:read        may only query
    <name>:<token>:write       may only send batches (a host shipping its own
                               logs never needs to read the others' content)

A presented token is hashed once and compared with the SHA-256 of every
configured token using ``hmac.compare_digest``, without stopping at a match, so
the time taken says nothing about which token matched or how much of it.
Tokens never appear in messages, logs or metrics; only their names do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SCOPES = ("read", "write")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN_RULE = "at least 16 characters from A-Z a-z 0-9 . _ ~ + / = -"


@dataclass(frozen=True)
class Identity:
    """Who sent a request: the token's name and what it may do."""

    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Identity("anonymous", frozenset(SCOPES))


def _entry(raw: str, where: str, position: int) -> tuple[Identity, str]:
    parts = raw.split(":")
    scopes = frozenset(SCOPES)
    if len(parts) == 1:
        name, token = f"token{position}", parts[0]
    elif len(parts) in (2, 3):
        name, token = parts[0], parts[1]
        if len(parts) == 3:
            if parts[2] not in SCOPES:
                raise ConfigError(f"{where}: entry {position} has an unknown scope; "
                                  "use read or write, or leave it out for both")
            scopes = frozenset({parts[2]})
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: entry {position} has an invalid name; a name is "
                              "1-64 characters from A-Z a-z 0-9 . _ -")
    else:
        raise ConfigError(f"{where}: entry {position} is not token, name:token or "
                          "name:token:scope")
    if not _TOKEN.fullmatch(token):
        # Neither part is echoed: a mistyped entry may have its secret in either place.
        raise ConfigError(f"{where}: the token of entry {position} is invalid: "
                          f"a token is {_TOKEN_RULE}")
    return Identity(name, scopes), token


class TokenSet:
    """The configured tokens, kept only as SHA-256 digests."""

    def __init__(self, entries: Iterable[tuple[Identity, str]]) -> None:
        self._digests: list[tuple[bytes, Identity]] = []
        seen_names: set[str] = set()
        seen: set[bytes] = set()
        for identity, token in entries:
            digest = hashlib.sha256(token.encode()).digest()
            if digest in seen:
                raise ConfigError(f"server tokens: the token named {identity.name} is listed "
                                  "twice; give every client its own token")
            if identity.name in seen_names:
                raise ConfigError(f"server tokens: the name {identity.name} is used twice")
            seen.add(digest)
            seen_names.add(identity.name)
            self._digests.append((digest, identity))

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def names(self) -> list[str]:
        return [identity.name for _, identity in self._digests]

    def check(self, presented: str) -> Identity | None:
        """The identity of ``presented``, or None; constant time over all tokens."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: Identity | None = None
        for known, identity in self._digests:
            if hmac.compare_digest(known, digest):
                found = identity
        return found


def parse_tokens(env_value: str, file_path: str) -> TokenSet:
    """Tokens from the setting's value and the tokens file (ConfigError if invalid)."""
    entries: list[tuple[Identity, str]] = []
    raw = [e.strip() for e in env_value.split(",") if e.strip()]
    for raw_entry in raw:
        entries.append(_entry(raw_entry, "RELAYBURN_SERVER_TOKENS", len(entries) + 1))
    if file_path:
        path = Path(file_path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"RELAYBURN_SERVER_TOKENS_FILE={str(path)!r} cannot be read: {reason}"
            ) from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(_entry(line, str(path), len(entries) + 1))
    return TokenSet(entries)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
