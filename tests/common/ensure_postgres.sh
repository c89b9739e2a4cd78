#!/bin/sh
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed, for
# tests/live_db.rs on a fresh CI machine: installs Debian's `postgresql` package with apt-get
# when no initdb is found. Needs root and apt-get; exits non-zero (and the test says so loudly)
# when it cannot install.
set -e
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_postgres: initdb is missing and this is not root on a Debian-like system: install PostgreSQL server binaries" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends postgresql >&2
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
