#!/usr/bin/env bash
# Install the reference usage tracker (ccusage) used by tests/parity/ into .ci/node/.
#
# Why pinned: ccusage changes its counting rules between releases (see the format
# spec, sections 2.11, 3.8 and 4.6), so the parity tests name the differences of
# one exact version. 20.0.24 is the newest release whose npm package still ships
# the native linux-x64 binary; later builds lack it.
#
# Idempotent: when the pinned version is already installed and runs, nothing is
# downloaded. Prints the path of the installed executable on success.
set -euo pipefail

VERSION="${CCUSAGE_VERSION:-20.0.24}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.ci/node"
BIN="$PREFIX/node_modules/.bin/ccusage"

installed_version() {
  # ccusage reads agent directories only for reports; --version touches nothing,
  # but run it in an empty environment anyway so a user's config cannot interfere.
  [ -x "$BIN" ] || return 1
  env -i PATH="$PATH" HOME="$PREFIX" LOG_LEVEL=0 "$BIN" --version 2>/dev/null \
    | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1
}

if [ "$(installed_version || true)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install-reference: npm not found on PATH" >&2; exit 1; }
mkdir -p "$PREFIX"
# --no-save/--no-package-lock: .ci/node holds only the tool, no manifest to maintain.
npm install --prefix "$PREFIX" --no-save --no-package-lock --no-audit --no-fund \
  "ccusage@$VERSION" >&2

got="$(installed_version || true)"
if [ "$got" != "$VERSION" ]; then
  echo "install-reference: ccusage@$VERSION installed but '$BIN --version' printed '$got'" >&2
  exit 1
fi
echo "$BIN"
