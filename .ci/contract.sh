#!/usr/bin/env bash
# The HTTP contract, checked by a fuzzer that reads it: schemathesis
# generates requests from openapi.yaml and checks every answer (status,
# headers, body, each SSE event) against it, on every route but the admin's
# sign-out of a user (which would sign out the admin running the check; the
# suite tests it).
#
# One worker: with two threads, Hypothesis (describing its strategies) and
# CPython 3.11's parser sometimes fail with "AST constructor recursion depth
# mismatch", an error of the tool, not of the API.
#
# Usage: .ci/contract.sh path/to/livehub [max-examples]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$1
examples=${2:-30}
venv=${SCHEMATHESIS_VENV:-target/schemathesis}
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
port=18765
log=$(mktemp)
"$binary" --addr "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    token=$(grep -o 'eyJ[A-Za-z0-9_.-]*' "$log" | head -1 || true)
    [ -n "$token" ] && break
    sleep 0.1
done
if [ -z "${token:-}" ]; then
    echo "the server printed no admin token:" >&2
    cat "$log" >&2
    exit 1
fi
"$venv/bin/schemathesis" --config-file .ci/schemathesis.toml run openapi.yaml \
    --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" \
    --checks all \
    --exclude-path '/api/v1/admin/users/{id}/disconnect' \
    --max-examples "$examples" \
    --seed "${SCHEMATHESIS_SEED:-20261201}" \
    --request-timeout 3 \
    --workers 1 \
    --no-color
