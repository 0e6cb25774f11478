#!/usr/bin/env bash
# Several livehub nodes on one real SurrealDB server, measured with the load
# tool (examples/load.rs): delivery across nodes (writes through node A,
# streams on node B) with and without a settle window, and one node against
# two (streams and writes spread over both). Loopback only.
#
#   bench/nodes.sh [STREAMS] [WRITES] [RATE]
#
# SETTLES (default "250ms 0"): the settle windows of the cross-node runs;
# SHARE_INTERVAL (default 10ms); CROSS_NODES (default 2): how many nodes
# the cross-node runs start (writes through the first, streams on the
# first or the second, the others idle); CROSS_ONLY=1 skips the
# one-against-two runs.
#
# Needs the release binaries (cargo build --release --bin livehub --example
# load) and the server (tools/surreal/build.sh). Prints the load tool's
# report for each run.
set -euo pipefail
cd "$(dirname "$0")/.."
streams="${1:-100}"
writes="${2:-2000}"
rate="${3:-200}"
surreal="${LIVEHUB_TEST_SURREAL:-target/surreal/debug/surreal}"
livehub="${LIVEHUB_BIN:-target/release/livehub}"
load=target/release/examples/load
secret="bench secret for nodes.sh, 32 bytes or more"
. bench/common.sh

start_surreal 19001

# start_node PORT DATABASE SETTLE
start_node() {
    RUST_LOG=warn "$livehub" --addr "127.0.0.1:$1" --db ws://127.0.0.1:19001 \
        --db-user root --db-pass root --db-name "$2" --settle "$3" \
        --share-interval "${SHARE_INTERVAL:-10ms}" --jwt-secret "$secret" --max-streams-per-ip 0 --max-streams-per-user 0 >>"$dir/nodes.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$1/readyz"
}
stop_nodes() {
    for pid in "${pids[@]:1}"; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    pids=("${pids[0]}")
}
# run TITLE STREAMS WRITES RATE [LOAD OPTIONS...]
run() {
    echo "== $1"
    LIVEHUB_TOKEN="$token" "$load" --streams "$2" --writes "$3" --rate "$4" "${@:5}"
    echo
}

for settle in ${SETTLES:-250ms 0}; do
    for node in $(seq "${CROSS_NODES:-2}"); do
        start_node $((19100 + node)) "cross$settle" "$settle"
    done
    echo "== ${CROSS_NODES:-2} nodes"
    run "settle $settle: writes through A, streams on A" "$streams" "$writes" "$rate" --url http://127.0.0.1:19101 --write-url http://127.0.0.1:19101
    run "settle $settle: writes through A, streams on B" "$streams" "$writes" "$rate" --url http://127.0.0.1:19102 --write-url http://127.0.0.1:19101
    stop_nodes
done

[ -n "${CROSS_ONLY:-}" ] && exit 0

# One node against two, at a saturating write rate, streams and writers
# spread over the nodes.
start_node 19101 single 0
run "one node, $((streams * 10)) streams, rate unbounded" $((streams * 10)) $((writes * 5)) 0 \
    --writers 8 --url http://127.0.0.1:19101
stop_nodes
start_node 19101 pair 0
start_node 19102 pair 0
run "two nodes, $((streams * 10)) streams, rate unbounded" $((streams * 10)) $((writes * 5)) 0 \
    --writers 8 --url http://127.0.0.1:19101,http://127.0.0.1:19102
