#!/bin/sh
# Stands in for the official postgres image's docker-entrypoint.sh (that image is on a registry
# this machine cannot reach), doing what it does for `postgres`: as root, give PGDATA and the
# socket directory to the postgres user and run again as that user (the official one uses gosu;
# setpriv leaves no process in between); on an empty PGDATA, initdb with POSTGRES_PASSWORD,
# local connections trusted and scram-sha-256 over the network (its defaults); then exec the
# server with every argument given (lifeboat's archive settings among them).
set -eu
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ]; then
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$PGDATA" /var/run/postgresql
        chown -R postgres:postgres "$PGDATA" /var/run/postgresql
        chmod 700 "$PGDATA"
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
    fi
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        pw=$(mktemp)
        printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}" >"$pw"
        initdb --username=postgres --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 \
            -D "$PGDATA" >/dev/null
        rm -f "$pw"
        echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
        echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
        echo "docker-entrypoint.sh: initialised an empty $PGDATA" >&2
    fi
fi
exec "$@"
