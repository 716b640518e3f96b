#!/bin/sh
# The test command: set-up, build, `make check` (ends with "N passed, N failed").
set -eu
cd "$(dirname "$0")/.."
sh scripts/build.sh
make --no-print-directory check
