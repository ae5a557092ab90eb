#!/usr/bin/env bash
# Take a headless-Chromium screenshot of an r2r-synth report, to check that the page renders.
#   scripts/screenshot_report.sh REPORT.html OUT.png [WIDTHxHEIGHT]
# Needs Debian's `chromium` package (apt-get install -y chromium); `make test` does not (the test
# that calls this script skips without it). Nothing is fetched: the report is self-contained, and the
# flags below turn off every background request Chromium would make.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1280x2000}
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
  echo "chromium not found: install it with 'apt-get install -y chromium'" >&2
  exit 3
fi
if [ ! -f "$html" ]; then
  echo "$html: no such file (run 'r2r-synth report RUN_DIR' first)" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$out" --window-size="${size/x/,}" "file://$html" >/dev/null 2>&1
[ -s "$out" ] || { echo "chromium wrote no screenshot to $out" >&2; exit 1; }
echo "$out"
