#!/bin/sh
# Installs what the container tests (tests/container_run.rs) need: Debian's podman with runc
# (crun fails on this kind of machine's cgroup layout), debootstrap (the app image's Debian root
# filesystem; no registry is reachable, so no base image is pulled) and podman-compose from PyPI.
# Writes /etc/containers/containers.conf.d/lifeboat-tests.conf with the settings these machines
# need (runc, cgroupfs, no default ulimits: setting rlimits inside a container is refused here).
# Installs only what is missing and runs `apt-get update` at most once; safe to run again.
# CI runs it as root on a fresh Debian machine; the tests call it themselves.
set -eu

missing=""
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
# podman's network backend for podman-compose's per-project network.
[ -x /usr/lib/podman/netavark ] || [ -x /usr/libexec/podman/netavark ] || missing="$missing netavark aardvark-dns"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
# The pause process of pods (`podman kube play`), built into a local image: no registry needed.
command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing="$missing catatonit"

# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" install-podman.sh $missing

conf=/etc/containers/containers.conf.d/lifeboat-tests.conf
want='# Written by lifeboat'"'"'s tests/install-podman.sh: the settings podman needs on the project'"'"'s
# machines (crun fails on their cgroup layout; rlimits cannot be set inside a container there).
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-podman.sh: $conf missing or different (run as root to write it)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" >"$conf"
fi

if ! command -v podman-compose >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check podman-compose
fi
