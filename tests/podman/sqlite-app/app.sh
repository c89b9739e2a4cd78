#!/bin/sh
# An SQLite app: one long-lived connection to /data/db.sqlite3 (WAL mode, as Vaultwarden's) that
# commits a numbered row every 20 ms, each its own transaction. At start it continues from the
# highest number the database holds and records that number in `starts`, so a test can tell
# exactly which rows a restore brought back. SIGTERM ends it cleanly (the connection closes).
set -eu
trap 'echo "app: stopped before it began"; exit 0' TERM INT
db=/data/db.sqlite3
# As an app would, wait for a lock (lifeboat's checkpoints take the write lock for a moment)
# instead of failing at once.
sql() { sqlite3 -cmd ".timeout 10000" "$@"; }
sql "$db" "PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, at TEXT);
    CREATE TABLE IF NOT EXISTS starts(restored INTEGER, at TEXT);" >/dev/null
first=$(sql "$db" "SELECT coalesce(max(id), 0) FROM t")
sql "$db" "INSERT INTO starts VALUES ($first, strftime('%Y-%m-%dT%H:%M:%f', 'now'))"
echo "app: database holds rows 1..$first; writing from $((first + 1))"
rows() {
    i=$1
    while :; do
        i=$((i + 1))
        echo "INSERT INTO t VALUES ($i, strftime('%Y-%m-%dT%H:%M:%f', 'now'));"
        sleep 0.02
    done
}
# The numbers reach the one sqlite3 process through a FIFO, so that a stop can end the numbers
# alone: sqlite3 then reads the end of its input and closes the database itself.
fifo=$(mktemp -u)
mkfifo "$fifo"
sqlite3 -bail -cmd ".timeout 10000" "$db" <"$fifo" &
writer=$!
rows "$first" >"$fifo" &
gen=$!
trap 'kill "$gen" 2>/dev/null || true; wait "$writer" || true; echo "app: stopped"; exit 0' TERM INT
wait "$writer"
