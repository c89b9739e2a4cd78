#!/bin/sh
# Stages the root filesystem of lifeboat's image: the one definition of what the image holds,
# used by container/Dockerfile (published, built where a registry is reachable) and by
# container/Containerfile (FROM scratch, built by the test suite with podman; no registry).
# Both copy this directory to / and nothing else, so the two images cannot differ.
# Usage: container/stage-rootfs.sh BINARY OUTDIR
#   BINARY: the static lifeboat (container/build-static.sh makes it)
#   OUTDIR: created (emptied first); receives usr/local/bin/lifeboat, the CA bundle, /etc/passwd
#           and /etc/group with the non-root user 65532 ("nonroot", as distroless), /tmp (1777),
#           and /home/nonroot owned by 65532 (lifeboat's cache for S3 repositories lives there).
set -eu
bin=$1
out=$2
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "stage-rootfs.sh: no CA bundle at $ca (install ca-certificates)" >&2; exit 1; }
if ldd "$bin" 2>/dev/null | grep -q '=>'; then
    echo "stage-rootfs.sh: $bin is dynamically linked; build it with container/build-static.sh" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/home/nonroot"
install -m 0755 "$bin" "$out/usr/local/bin/lifeboat"
install -m 0644 "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$out/etc/group"
chmod 1777 "$out/tmp"
chown 65532:65532 "$out/home/nonroot"
chmod 0755 "$out/home/nonroot"
