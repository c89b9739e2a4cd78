#!/bin/sh
# apt-install.sh CALLER PACKAGE...: installs Debian packages for the test suite's install scripts
# (install-servers.sh, install-podman.sh), without starting their services (policy-rc.d), with
# one `apt-get update`. Fails, naming the caller and the packages, when not run as root.
set -eu
caller=$1
shift
[ $# -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "$caller: missing: $* (run as root to install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own services from starting (nothing here should run as a system daemon).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
