#!/bin/sh
# autogen.sh - generate ./configure from configure.ac and Makefile.am.
die() { echo "autogen.sh: $*" >&2; exit 1; }
cd "$(dirname "$0")" || die "cannot cd to the source directory"
command -v autoreconf >/dev/null 2>&1 || die "autoreconf not found: run tools/install-deps.sh (Debian: autoconf automake libtool)"
mkdir -p build-aux m4 || die "cannot create build-aux/ and m4/"
autoreconf -fi || die "autoreconf failed"
