#!/usr/bin/env bash
# Render an r2r-synth report in headless Chromium, take a full-page screenshot per width and check the
# layout (no horizontal overflow, no text running out of its box, no overlapping boxes):
#   scripts/screenshot_report.sh REPORT.html OUT_PREFIX [WIDTH ...]     (default widths: 1400 420)
# writes OUT_PREFIX-<width>.png and prints a table; exits 1 when a check fails. Needs Debian's
# `chromium` package (apt-get install -y chromium); `make test` does not (the test that calls this
# skips without it). Nothing is fetched: the report is self-contained and Chromium's background
# requests are turned off. The work is done by screenshot_report.py (standard library only).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT_PREFIX [WIDTH ...]" >&2
  exit 2
fi
html=$1
prefix=$2
shift 2
widths=()
for w in "$@"; do
  widths+=(--width "$w")
done
here=$(dirname "$(realpath "$0")")
exec "${PYTHON:-python3}" "$here/screenshot_report.py" "$html" "$prefix" "${widths[@]}"
