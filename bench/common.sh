# What the bench scripts share; source it after `cd` to the project root and
# setting `secret`. Gives `dir` (a temporary folder, removed on exit), `pids`
# (processes stopped on exit: add each one started), `token` (an HS256 admin
# token for $secret, valid for an hour), `wait_for URL` and `start_surreal
# PORT` (the SurrealDB server at $surreal, on its data in $dir, once it
# answers).
dir="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

token="$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench", "role": "admin", "exp": int(time.time()) + 3600}).encode())
signature = hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(signature)}")
PY
)"

wait_for() {
    for _ in $(seq 200); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    echo "$1 never answered" >&2
    exit 1
}

start_surreal() {
    "$surreal" start --bind "127.0.0.1:$1" --user root --pass root --log warn --no-banner \
        "surrealkv://$dir/data" >"$dir/surreal.log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$1/health"
}
