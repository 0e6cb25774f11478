#!/usr/bin/env bash
# Builds the real SurrealDB server (`surreal`, from the surrealdb-server
# crate) that the multi-node and fault tests run, and prints its path.
# From scratch it takes about 25 minutes on 2 cores; after that, seconds.
#
#   LIVEHUB_SURREAL_TARGET  where to build (default: target/surreal)
#
# The tests look for the binary at target/surreal/debug/surreal, or where
# LIVEHUB_TEST_SURREAL says.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${LIVEHUB_SURREAL_TARGET:-target/surreal}"
cargo build --quiet --locked --manifest-path tools/surreal/Cargo.toml --target-dir "$target" >&2
echo "$target/debug/surreal"
