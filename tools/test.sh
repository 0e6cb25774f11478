#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests run
# (Node.js, nginx, Chromium, the browser tests' npm packages, the real
# SurrealDB server), then runs `cargo test`. What CI runs, and what to run
# before sending a change. Arguments go to `cargo test`
# (`tools/test.sh --test api readme::`).
#
# Installs with apt-get (as root, or through sudo) only what is missing;
# later runs find everything and start the tests at once. The first run
# builds SurrealDB twice (the embedded one for the tests, about 10 minutes
# on 2 cores, and the server, about 25, cached in
# $LIVEHUB_SURREAL_TARGET, default ~/.cache/livehub/surreal-target).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "installing $* needs root (or sudo)" >&2
        exit 1
    fi
}

apt_updated=
install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root apt-get install -y -qq "$@"
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: livehub needs a Rust toolchain (1.88 or newer, https://rustup.rs)" >&2
    exit 1
fi

say "Node.js (the README's JavaScript examples run in it)"
# Node.js 20 or newer has the standard EventSource (behind a flag).
has_eventsource() {
    node --experimental-eventsource -e 'if (typeof EventSource !== "function") process.exit(1)' >/dev/null 2>&1
}
if ! has_eventsource; then
    install nodejs npm
    has_eventsource || {
        echo "Node.js with EventSource (20 or newer) is needed for the README test" >&2
        exit 1
    }
fi
command -v npm >/dev/null 2>&1 || install npm
node --version

say "curl, jq and openssl (the README's shell examples use them)"
command -v curl >/dev/null 2>&1 || install curl
command -v jq >/dev/null 2>&1 || install jq
command -v openssl >/dev/null 2>&1 || install openssl
jq --version

say "nginx (a test runs the shipped deploy/nginx configuration in it)"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || install nginx
PATH="$PATH:/usr/sbin" nginx -v

say "Chromium and the browser tests' packages (Playwright, React, Vue)"
command -v chromium >/dev/null 2>&1 || install chromium
chromium --version
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

say "the real SurrealDB server (for the multi-node and fault tests)"
export LIVEHUB_SURREAL_TARGET="${LIVEHUB_SURREAL_TARGET:-$HOME/.cache/livehub/surreal-target}"
started=$SECONDS
LIVEHUB_TEST_SURREAL="$(tools/surreal/build.sh)"
export LIVEHUB_TEST_SURREAL
echo "$LIVEHUB_TEST_SURREAL ($((SECONDS - started)) s)"

say "cargo test $*"
cargo test "$@"
