#!/usr/bin/env bash
# Checks the page of `maskdit serve` in a real browser: Debian's Chromium, driven through its
# DevTools protocol by playwright-core. It starts the server (the embedded model) on a free
# loopback port with a fresh gallery, picks digit 7, generates, waits for the images, checks the
# phone-sized layout and writes a screenshot (default docs/serve.png).
# Needs: chromium (apt-get install chromium), node and npm. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
screenshot=${1:-docs/serve.png}

command -v chromium >/dev/null || { echo "chromium is not installed: apt-get install chromium" >&2; exit 1; }
command -v npm >/dev/null || { echo "node and npm are needed" >&2; exit 1; }
(cd scripts/check-page && npm install --no-audit --no-fund --silent)

# The test profile shares the build of the tests.
cargo build --profile test -q -p maskdit-cli
gallery=$(mktemp -d)
log="$gallery/serve.log"
target/debug/maskdit serve --port 0 --out "$gallery/gallery" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$gallery"' EXIT
for _ in $(seq 100); do
  base=$(grep -o 'http://[^ /]*' "$log" || true)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { cat "$log" >&2; echo "the server did not start" >&2; exit 1; }
node scripts/check-page/check.mjs "$base" "$screenshot"
