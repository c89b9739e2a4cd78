#!/usr/bin/env bash
# Installs Akash's SDL validator (npm @akashnetwork/chain-sdk, pinned in package.json and
# package-lock.json) into tests/sdl-validator/node_modules, for validate.js, and the Kubernetes
# API's types (@kubernetes/client-node, kubernetes-models) for k8s.mjs.
#
# Idempotent: does nothing when node_modules already matches package.json + package-lock.json
# (a stamp file records their hash); otherwise runs `npm ci` (or `npm install` when there is no
# lockfile). Safe to run concurrently (serialised with flock when flock exists).
# Exit status: 0 ready; 1 with a one-line reason on stderr (node/npm missing or too old, install
# failed).
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"

fail() { echo "sdl-validator/install.sh: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || fail "node is not installed (needed for Akash's SDL validator); install Node.js >= 20"
command -v npm >/dev/null 2>&1 || fail "npm is not installed (needed for Akash's SDL validator); install npm"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" || fail "node does not run"
[ "$node_major" -ge 20 ] 2>/dev/null || fail "node $(node --version) is too old: validate.js needs Node.js >= 20 (global WebCrypto)"

stamp_file="node_modules/.lifeboat-install-stamp"

stamp() {
  # What the installed tree must match: the manifest, the lockfile, and node's major version.
  {
    cat package.json
    [ -f package-lock.json ] && cat package-lock.json
    echo "node-major=$node_major"
  } | sha256sum | cut -d' ' -f1
}

is_fresh() {
  [ -f "$stamp_file" ] \
    && [ -f node_modules/@akashnetwork/chain-sdk/package.json ] \
    && [ -f node_modules/js-yaml/package.json ] \
    && [ -f node_modules/@kubernetes/client-node/package.json ] \
    && [ -f node_modules/kubernetes-models/package.json ] \
    && [ "$(cat "$stamp_file")" = "$(stamp)" ]
}

install() {
  is_fresh && return 0
  rm -f "$stamp_file"
  # engine-strict off: the SDK declares node >=22.14 but works on node 20 (validate.js is
  # exercised there); a user-level engine-strict=true must not break the install.
  local npm_flags=(--no-audit --no-fund --engine-strict=false --loglevel=error)
  local log
  log="$(mktemp)"
  if [ -f package-lock.json ]; then
    npm ci "${npm_flags[@]}" >"$log" 2>&1 || { tail -n 20 "$log" >&2; rm -f "$log"; fail "npm ci failed (see above)"; }
  else
    npm install "${npm_flags[@]}" >"$log" 2>&1 || { tail -n 20 "$log" >&2; rm -f "$log"; fail "npm install failed (see above)"; }
  fi
  rm -f "$log"
  node -e 'require("@akashnetwork/chain-sdk").generateManifest; require("js-yaml").load' \
    || fail "installed, but @akashnetwork/chain-sdk or js-yaml does not load"
  node --input-type=module -e 'await import("kubernetes-models/apps/v1/StatefulSet"); await import("./node_modules/@kubernetes/client-node/dist/gen/models/V1StatefulSet.js")' \
    || fail "installed, but kubernetes-models or @kubernetes/client-node's models do not load"
  stamp >"$stamp_file"
}

if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.install.lock"
  flock 9
  install
else
  install
fi
