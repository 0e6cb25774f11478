#!/usr/bin/env bash
# How fast records go in through batches: an NDJSON import of RECORDS records
# (one per line, committed 250 lines, or BATCH if lower, per transaction)
# into a release build on an embedded in-memory database, with one stream
# open that must receive every one of them, once, in order (resuming with
# Last-Event-ID when the node closes it for falling behind). Loopback only.
#
#   bench/import.sh [RECORDS] [BATCH]   (BATCH: --max-batch, default 1000)
#
# Prints the import's answer time, records/s, and when the stream had them
# all (and how often it resumed after falling behind). Needs `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-100000}"
batch="${2:-1000}"
livehub=target/release/livehub
port=18090
secret="bench secret for import.sh, 32 bytes or more"
. bench/common.sh
python3 - "$records" >"$dir/import.ndjson" <<'PY'
import json, sys
for n in range(int(sys.argv[1])):
    print(json.dumps({"id": f"r{n:07d}", "n": n, "title": f"record {n}", "tags": ["bench", "import"]}))
PY

LIVEHUB_ADDR=127.0.0.1:$port LIVEHUB_JWT_SECRET="$secret" LIVEHUB_MAX_BATCH="$batch" RUST_LOG=warn \
    "$livehub" >"$dir/livehub.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
auth=(-H "Authorization: Bearer $token")
curl -sf "${auth[@]}" -X POST -H 'Content-Type: application/json' \
    -d '{"name": "imported"}' "http://127.0.0.1:$port/api/v1/collections" >/dev/null

# The stream, as a browser's EventSource would read it: when the node closes
# it for falling behind (past --stream-buffer), it resumes from the last id
# it saw. It prints when it had every record, whether they came in order and
# once, and how many times it resumed.
python3 -u - "$port" "$token" "$records" >"$dir/streamed" <<'PY' &
import http.client, json, sys, time
port, token, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
seen, last_n, in_order, last_id, resumes = 0, -1, True, None, -1
while seen < want:
    resumes += 1
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token}"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    connection.request("GET", "/api/v1/realtime/imported", headers=headers)
    response = connection.getresponse()
    event_id = None
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: ") and '"record.created"' in line:
            n = json.loads(line[6:])["data"]["n"]
            in_order = in_order and n == last_n + 1
            last_n, seen, last_id = n, seen + 1, event_id
            if seen == want:
                break
        elif line == "":
            event_id = None
    connection.close()
print(f"{time.time():.3f} {seen} {in_order} {resumes}", flush=True)
PY
pids+=($!)
sleep 0.5

start=$(date +%s.%N)
status=$(curl -s -o "$dir/answer.json" -w '%{http_code}' "${auth[@]}" -X POST \
    -H 'Content-Type: application/x-ndjson' --data-binary "@$dir/import.ndjson" \
    "http://127.0.0.1:$port/api/v1/collections/imported/records")
answered=$(date +%s.%N)
for _ in $(seq 1 1200); do [ -s "$dir/streamed" ] && break; sleep 0.1; done
read -r streamed_at seen in_order resumes <"$dir/streamed" || { echo "the stream did not get every record (import: HTTP $status)"; grep -i lagging "$dir/livehub.log" | tail -2; exit 1; }
python3 - "$start" "$answered" "$streamed_at" "$records" "$status" "$seen" "$in_order" "$batch" "$dir/answer.json" "$resumes" <<'PY'
import json, sys
start, answered, streamed, records = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
answer = json.load(open(sys.argv[9]))
summary = {key: value for key, value in answer.items() if key != "items"}
print(f"import of {records} records (--max-batch {sys.argv[8]}): HTTP {sys.argv[5]} in {answered - start:.2f} s "
      f"({records / (answered - start):,.0f} records/s); answer {json.dumps(summary)}")
print(f"stream: {sys.argv[6]} records, in order and once: {sys.argv[7]}, all by {streamed - start:.2f} s, "
      f"resumed {sys.argv[10]} times")
PY
