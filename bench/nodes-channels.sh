#!/usr/bin/env bash
# Channel messages across nodes: two livehub nodes on one real SurrealDB
# server (--settle 0, sharing low stamps every --share-interval), streams on
# node B, messages published through node A, for a durable and an ephemeral
# channel. The shared load tool (../shared/bench/sseload) talks to one
# address, so a local nginx sends /api/v1/channels/ to A and the rest to B.
# Loopback only.
#
#   bench/nodes-channels.sh [STREAMS] [RATE] [PUBLISHERS]
#
# Needs `cargo build --release`, the server (tools/surreal/build.sh, or
# LIVEHUB_TEST_SURREAL), nginx, and sseload (built by sidebyside.sh into
# target/bench-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
streams="${1:-10}"
rate="${2:-10000}"
publishers="${3:-16}"
surreal="${LIVEHUB_TEST_SURREAL:-target/surreal/debug/surreal}"
livehub=target/release/livehub
load=target/bench-tools/release/sseload
secret="bench secret for nodes-channels.sh, 32 bytes or more"
. bench/common.sh

start_surreal 19001
for port in 19101 19102; do
    RUST_LOG=warn LIVEHUB_CHANNEL_RULES='{"ephemeral": {"durable": false}}' LIVEHUB_PUBLISH_RATE=0 \
        "$livehub" --addr "127.0.0.1:$port" --db ws://127.0.0.1:19001 --db-user root --db-pass root \
        --db-name channels --settle 0 --share-interval "${SHARE_INTERVAL:-10ms}" --jwt-secret "$secret" \
        --max-streams-per-ip 0 --max-streams-per-user 0 >>"$dir/nodes.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$port/readyz"
done

mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream a { server 127.0.0.1:19101; keepalive 64; }
  upstream b { server 127.0.0.1:19102; keepalive 64; }
  server {
    listen 127.0.0.1:19100;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_read_timeout 1h;
    location /api/v1/channels/ { proxy_pass http://a; }
    location / { proxy_pass http://b; }
  }
}
CONF
nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx/" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19100) 2>/dev/null && break; sleep 0.05; done

for channel in durable ephemeral; do
    echo "== $channel channel: $streams streams on node B, $publishers publishers through node A, $rate msg/s target"
    "$load" --addr 127.0.0.1:19100 --sub "/api/v1/realtime?channels=$channel" \
        --publ "/api/v1/channels/$channel/messages" --conns "$streams" --rate "$rate" \
        --publishers "$publishers" --duration "${DUR:-10}" --settle 2 \
        --header "Authorization: Bearer $token"
done
