#!/usr/bin/env bash
# What a node pays for each change it reads from the changefeed and
# delivers to no one (decode, route, drop): two nodes on one real SurrealDB
# server, `--settle 0`; the load tool writes through node A (and streams
# there, so that it knows when every write is in), node B has no stream and
# runs under bench/cpu-of.sh. B's CPU time over the run, less what it uses
# idle for as long, divided by the writes, is the cost per event; one core
# divided by it is the write rate at which such a node saturates. Loopback
# only.
#
#   bench/drop-cost.sh [WRITES] [WRITERS]
#
# Needs the release binaries (cargo build --release --bin livehub --example
# load) and the server (tools/surreal/build.sh, or LIVEHUB_TEST_SURREAL).
set -euo pipefail
cd "$(dirname "$0")/.."
writes="${1:-20000}"
writers="${2:-8}"
surreal="${LIVEHUB_TEST_SURREAL:-target/surreal/debug/surreal}"
livehub=target/release/livehub
load=target/release/examples/load
secret="bench secret for drop-cost.sh, 32 bytes or more"
. bench/common.sh

start_surreal 19201

flags=(--db ws://127.0.0.1:19201 --db-user root --db-pass root --db-name drop --settle 0
    --jwt-secret "$secret" --max-streams-per-ip 0 --max-streams-per-user 0)
RUST_LOG=warn "$livehub" --addr 127.0.0.1:19202 "${flags[@]}" >>"$dir/nodes.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:19202/readyz
REAL_BIN="$livehub" CPU_OF_OUT="$dir/cpu-b.txt" RUST_LOG=warn bench/cpu-of.sh \
    --addr 127.0.0.1:19203 "${flags[@]}" >>"$dir/nodes.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:19203/readyz

cpu() { sleep 0.3; cat "$dir/cpu-b.txt"; }
# Idle: what B spends with nothing written (health checks, its feed's
# polls, presence upkeep).
idle_start=$(cpu)
sleep 10
idle_end=$(cpu)
idle_rate=$(python3 -c "print(($idle_end - $idle_start) / 10.3)")

start=$(cpu)
began=$(date +%s.%N)
LIVEHUB_TOKEN="$token" "$load" --url http://127.0.0.1:19202 --streams 10 \
    --writes "$writes" --writers "$writers" --rate 0
# B reads the last writes a moment after A's streams have them.
sleep 1
ended=$(date +%s.%N)
end=$(cpu)
python3 - "$start" "$end" "$began" "$ended" "$idle_rate" "$writes" <<'PY'
import sys
start, end, began, ended, idle_rate, writes = map(float, sys.argv[1:])
elapsed = ended - began
used = end - start - idle_rate * elapsed
per_event = used / writes
print(f"node B (no streams): {end - start:.2f} CPU s over {elapsed:.1f} s, "
      f"{idle_rate * 100:.1f}% of a core idle")
print(f"per event read and dropped: {per_event * 1e6:.1f} us "
      f"({writes / elapsed:.0f} writes/s in this run)")
print(f"a node saturates one core at about {1 / per_event:,.0f} writes/s of the cluster")
PY
