#!/usr/bin/env bash
# Installs this package into fresh projects elsewhere, as a user would, and loads it with
# require() and import (test/consumer/check.cjs, check.mjs):
#   1. `npm pack` here (the tarball carries the passport_gate.node built before), then
#      `npm install <tarball>`;
#   2. `npm install <this directory>` with no passport_gate.node here: the package's
#      install script must build it with cargo (PASSPORT_GATE_PROFILE as for `npm run build`).
# Run after `npm run build`. Leaves passport_gate.node here (rebuilt by step 2).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
test -f "$here/passport_gate.node" || { echo "run npm run build first" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tarball="$work/$(cd "$here" && npm pack --silent --pack-destination "$work")"
rm "$here/passport_gate.node"
for source in "$tarball" "$here"; do
  consumer="$(mktemp -d "$work/consumer.XXXXXX")"
  cp "$here/test/consumer/check.cjs" "$here/test/consumer/check.mjs" "$consumer/"
  (
    cd "$consumer"
    npm init -y >/dev/null
    echo "== npm install $source (from $consumer)"
    npm install --no-audit --no-fund --loglevel=error --foreground-scripts "$source"
    node check.cjs
    node check.mjs
  )
done
test -f "$here/passport_gate.node" || { echo "npm install $here did not build passport_gate.node" >&2; exit 1; }
