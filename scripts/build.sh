#!/bin/sh
# Installs what is missing, configures (once) and builds edmc at the top of the tree.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure ${EDMC_CONFIGURE_FLAGS:-}
make -j"$(nproc 2>/dev/null || echo 2)"
