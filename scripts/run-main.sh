#!/bin/sh
# The main job on its built-in default.  Today that is the front end: check
# every model and describe the EDM2-S network; training and sampling join as
# they land.
set -eu
cd "$(dirname "$0")/.."
sh scripts/build.sh
for m in models/*.edm models/variants/*.edm; do ./edmc check "$m"; done
./edmc info models/edm2-img512-s.edm
