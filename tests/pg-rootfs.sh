#!/bin/sh
# Makes the base of the container tests' app images (tests/container_run.rs, container_k8s.rs):
# a Debian 12 root filesystem with PostgreSQL 15 and the sqlite3 shell, made with debootstrap
# from the Debian mirror this machine's apt uses (no container registry is reachable here),
# packed as a tarball for `podman import`.
# Usage: tests/pg-rootfs.sh OUT.tar. Does nothing when OUT.tar exists (the cache, reused between
# runs); builds into OUT.tar.tmp and renames, so an interrupted run leaves no half tarball.
# Needs root (debootstrap chroots); tests/install-podman.sh installs debootstrap.
set -eu

out=$1
[ -s "$out" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "pg-rootfs.sh: debootstrap needs root" >&2
    exit 1
fi
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
dir=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-pg-rootfs.XXXXXX")
trap 'rm -rf "$dir"' EXIT
# mktemp makes the directory 0700: it becomes the image's /, which every user must traverse.
chmod 755 "$dir"
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
    tail -n 20 "$dir.log" >&2
    rm -f "$dir.log"
    exit 1
}
rm -f "$dir.log"
# As the official postgres image: no cluster made by the package (the entrypoint initialises
# PGDATA on the volume), no services started inside the chroot.
mkdir -p "$dir/etc/postgresql-common"
echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod +x "$dir/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
chroot "$dir" sh -ec '
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
        postgresql-15 postgresql-client-15 sqlite3 ca-certificates >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
'
rm -f "$dir/usr/sbin/policy-rc.d" "$dir/etc/resolv.conf"
tar -C "$dir" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
