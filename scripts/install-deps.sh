#!/bin/sh
# Installs the Debian packages edmc needs to build and test, when missing.
# Runs as root (CI, developer machines) or through sudo when available.
set -eu
need=""
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { pkg-config --exists "$1" 2>/dev/null; }
have_cmd flex       || need="$need flex"
have_cmd bison      || need="$need bison"
have_cmd autoreconf || need="$need autoconf"
have_cmd automake   || need="$need automake"
have_cmd libtoolize || need="$need libtool"
have_cmd pkg-config || need="$need pkg-config"
have_cmd make       || need="$need make"
have_cmd gcc        || need="$need gcc"
have_cmd g++        || need="$need g++"  # tests/emu: the emulated CUDA kernels are compiled as C++
have_cmd mpirun     || need="$need openmpi-bin"  # data-parallel training and its test (tests/cli/train_mpi.sh)
have_cmd strace     || need="$need strace"  # tests/cli/package*.sh: a run from a package opens no .edm file
# tests/cli/torch_interop.sh: what edmc writes loads into torch's modules (the reference's framework)
/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1 || need="$need python3-torch python3-numpy"
if have_cmd pkg-config; then
    have_pkg libxml-2.0 || need="$need libxml2-dev"
    have_pkg cmocka     || need="$need libcmocka-dev"
    have_pkg json-c     || need="$need libjson-c-dev"
    have_pkg openblas   || need="$need libopenblas-dev"
    have_pkg libpng     || need="$need libpng-dev"
    have_pkg libzip     || need="$need libzip-dev"
    have_pkg nettle     || need="$need nettle-dev"
    have_pkg libjpeg    || need="$need libjpeg-dev"
    have_pkg zlib       || need="$need zlib1g-dev"
    have_pkg ompi-c     || need="$need libopenmpi-dev"
else
    need="$need libxml2-dev libcmocka-dev libjson-c-dev libopenblas-dev libpng-dev libzip-dev libjpeg-dev zlib1g-dev nettle-dev libopenmpi-dev"
fi
[ -n "$need" ] || exit 0
echo "install-deps: installing$need"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need
