#!/bin/sh
# install-deps.sh - install every Debian package that building, testing and
# benchmarking pyshelf needs.  Idempotent: packages already there are left
# alone.  As root it runs apt-get; otherwise it prints the command to run.
set -e
PKGS="build-essential autoconf automake libtool pkg-config
liblmdb-dev lmdb-utils libxxhash-dev libssl-dev check
python3 python3-dev python3-cloudpickle python3-tblib python3-pytest python3-numpy
python3-lmdb python3-gdbm python3-execnet python3-jupyter-client python3-ipykernel
libpython3.11-testsuite
valgrind clang util-linux procps"
missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing:$missing"
	echo "run as root:  apt-get update && apt-get install -y$missing"
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
