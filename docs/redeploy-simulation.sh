#!/usr/bin/env bash
# Simulates moving an app to a new Akash provider, on one machine: two `lifeboat run` wrappers
# with separate, initially empty volumes ("lease A" and "lease B") and one repository.
#
#   1. Lease A starts on an empty volume; its app creates data and keeps appending to it.
#   2. Before the move, the owner takes a backup over HTTP (POST /backup?wait=1 with the token).
#   3. The app writes more; lease A is closed (SIGTERM): the app stops, lifeboat takes the final
#      backup and releases the volume lease.
#   4. Lease B starts on a new, empty volume: the gate restores the latest snapshot before the
#      app starts, and the app finds every record lease A wrote, including the last ones.
#
# Usage: docs/redeploy-simulation.sh [lifeboat binary]   (default: lifeboat on PATH)
# Set LIFEBOAT_REPOSITORY to run it against S3 instead of a local directory. Exit 0 = no loss.
set -euo pipefail

LIFEBOAT=${1:-${LIFEBOAT:-lifeboat}}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

export LIFEBOAT_REPOSITORY=${LIFEBOAT_REPOSITORY:-$work/repo}
export LIFEBOAT_PASSWORD=simulation-password
export LIFEBOAT_NAME=sim-app
export LIFEBOAT_SCHEDULE=off
export LIFEBOAT_LEASE_TTL=3s
export LIFEBOAT_CONTROL_TOKEN=owner-token
export LIFEBOAT_CACHE_DIR=$work/cache

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LIFEBOAT_LISTEN=127.0.0.1:$port

# The app: reports what it found, then appends one record every 20 ms until stopped.
cat > "$work/app.sh" <<'APP'
#!/bin/sh
db="$LIFEBOAT_PATH/records"
if [ -f "$db" ]; then echo "FOUND $(wc -l < "$db")"; else echo "EMPTY"; fi
trap 'echo "$(date +%s%N) stop" >> "$db"; exit 0' TERM
while true; do echo "$(date +%s%N) record" >> "$db"; sleep 0.02; done
APP
chmod +x "$work/app.sh"

started=
start_lease() { # name → starts a wrapper on $work/<name>/data, logs to $work/<name>.log
    mkdir -p "$work/$1/data"
    LIFEBOAT_PATH="$work/$1/data" "$LIFEBOAT" run -- "$work/app.sh" > "$work/$1.log" 2>&1 &
    started=$!
    pids+=("$started")
}

http() { # method path → body; fails on a non-2xx status
    python3 - "$@" <<'PY'
import sys, urllib.request, os
req = urllib.request.Request(f"http://{os.environ['LIFEBOAT_LISTEN']}{sys.argv[2]}", method=sys.argv[1],
                             headers={"Authorization": "Bearer " + os.environ["LIFEBOAT_CONTROL_TOKEN"]})
print(urllib.request.urlopen(req, timeout=60).read().decode())
PY
}

wait_ready() {
    for _ in $(seq 1 300); do
        if python3 -c "import urllib.request,os; urllib.request.urlopen('http://'+os.environ['LIFEBOAT_LISTEN']+'/readyz', timeout=1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "lease did not become ready" >&2; return 1
}

if [[ $LIFEBOAT_REPOSITORY != s3:* && ! -e $LIFEBOAT_REPOSITORY/config ]]; then
    "$LIFEBOAT" init --kdf-memory-kib 1024 --kdf-time 1 > /dev/null
fi

echo "== lease A: first deployment on an empty volume"
start_lease lease-a; a=$started
wait_ready
sleep 1
echo "== owner: backup before the move"
http POST "/backup?wait=1" > "$work/backup.json"
grep -q '"snapshot"' "$work/backup.json"
sleep 0.5
echo "== closing lease A (SIGTERM: the app stops, then the final backup)"
kill -TERM "$a"
status=0; wait "$a" || status=$?
echo "lease A's wrapper exited with $status (the app's own code)"
written=$(wc -l < "$work/lease-a/data/records")
tail -1 "$work/lease-a/data/records" | grep -q stop

echo "== lease B: new provider, empty volume"
start_lease lease-b; b=$started
wait_ready
for _ in $(seq 1 100); do
    found=$(grep -m1 -E '^(FOUND|EMPTY)' "$work/lease-b.log" || true)
    [[ -n $found ]] && break
    sleep 0.1
done
kill -TERM "$b"; wait "$b" || true

echo "lease A wrote $written records; the app on lease B said: $found"
if [[ $found != "FOUND $written" ]]; then
    echo "FAIL: records were lost in the move" >&2
    sed 's/^/  lease-b: /' "$work/lease-b.log" >&2
    exit 1
fi
echo "OK: nothing lost"
