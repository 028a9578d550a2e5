#!/bin/sh
# Make sure the programs the test suite starts are installed: redis-server and
# redis-cli (Debian package redis-server) and a headless browser (package chromium).
# As root with apt-get, install what is missing; otherwise stop with one line per
# package that names it and the command to run.
set -eu

missing=""
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || case " $missing " in
        *" $2 "*) ;;
        *) missing="$missing $2" ;;
    esac
}

need redis-server redis-server
need redis-cli redis-server
need chromium chromium

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -qq $missing >/dev/null
    exit 0
fi

for package in $missing; do
    echo "the tests need the package $package: sudo apt-get install -y $package" >&2
done
exit 1
