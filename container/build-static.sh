#!/bin/sh
# The one static build of lifeboat, used by container/Dockerfile and documented in
# container/README.md. glibc links statically (crt-static); since glibc 2.34 its DNS and files
# NSS modules live inside libc, so name resolution works in an image with no libc at all.
# Output: target/x86_64-unknown-linux-gnu/release/lifeboat
set -eu
export RUSTFLAGS="-C target-feature=+crt-static"
# The image needs no debug info and no symbols (the release profile keeps symbols): 172 MB -> 28 MB.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
exec cargo build --release --locked --target x86_64-unknown-linux-gnu --bin lifeboat
