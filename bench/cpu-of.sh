#!/usr/bin/env bash
# Runs a server and records the CPU time it used (user + system seconds), so
# that a benchmark can state CPU per message or per delivered event: a figure
# far steadier than throughput on a machine whose cores the load tool shares.
#
#   REAL_BIN=target/release/livehub LIVEHUB_BIN=bench/cpu-of.sh \
#       ../shared/bench/sidebyside.sh 1000 2000 8 1 livehub
#   cat /tmp/cpu-of-livehub.txt
#
# Arguments are passed on. SIGTERM is passed on too, and the figure is the
# last one read (every 0.1 s) before the server exits. CPU_OF_OUT names the
# output file (default /tmp/cpu-of-<name of REAL_BIN>.txt).
set -u
out=${CPU_OF_OUT:-/tmp/cpu-of-$(basename "$REAL_BIN").txt}
"$REAL_BIN" "$@" & child=$!
trap 'kill -TERM $child' TERM INT
ticks=$(getconf CLK_TCK)
while [ -e /proc/$child/stat ]; do
  # Fields 14 and 15 of /proc/PID/stat: user and system time, in ticks.
  awk -v t="$ticks" '{printf "%.2f\n", ($14 + $15) / t}' /proc/$child/stat > "$out.tmp" 2>/dev/null && mv "$out.tmp" "$out"
  sleep 0.1
done
wait $child
