#!/bin/sh
# Installs the database servers the snippet end-to-end tests (tests/snippets_e2e.rs) run:
# MariaDB (for sdl-snippets/mysql.yaml) and Redis (sdl-snippets/redis.yaml) from Debian's
# packages. PostgreSQL 15 is expected at /usr/lib/postgresql/15/bin (Debian's postgresql-15).
# Installs only what is missing and runs `apt-get update` at most once; safe to run again.
# CI runs it as root on a fresh Debian machine; the tests call it themselves.
set -eu

missing=""
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing="$missing mariadb-server mariadb-client"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server redis-tools"
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing="$missing postgresql-15 postgresql-client-15"

# shellcheck disable=SC2086
exec sh "$(dirname "$0")/apt-install.sh" install-servers.sh $missing
