#!/bin/sh
# deps.sh — install the Debian packages Parley needs, only those missing.
# Runs apt-get directly as root, through sudo otherwise.
#
#   tools/deps.sh         what make run needs (build, web servers, PostgreSQL, node)
#   tools/deps.sh test    and what make test adds: Debian's chromium for the
#                         browser tests, valgrind for the leak checks,
#                         python3-yaml for t0870-openapi, adduser for
#                         t0880-deb
#   tools/deps.sh fuzz    and what make fuzz adds: Debian's clang 14 and its
#                         runtime with libFuzzer (docs/RELIABILITY.md)
set -eu
PKGS="gcc make pkg-config libfcgi-dev libcurl4-openssl-dev libjansson-dev
libsqlite3-dev libwebsockets-dev libjwt-dev libssl-dev sqlite3 curl"
# The web servers that make run and the integration tests (tests/integration/)
# start with the apache-conf/ snippets. Installing them may also enable their
# system services on port 80; the tests and make run never use those.
PKGS="$PKGS apache2 libapache2-mod-fcgid lighttpd"
# PostgreSQL 15 (issue 10): libpq for the programs and test tools that talk to
# it; the server for the private instances the integration tests and
# `DB=postgres make run` start (initdb into a temporary or build directory, a
# free port on 127.0.0.1; tests/integration/lib.sh it_postgres). Installing
# postgresql may also create and start Debian's own cluster (5432); nothing
# here uses it.
PKGS="$PKGS libpq-dev postgresql"
if [ "${1:-}" = test ]; then
    PKGS="$PKGS chromium valgrind"
    # t0870-openapi checks docs/openapi.json against docs/openapi.yaml with
    # tools/openapi-json.py (the build itself needs no Python: docs/openapi.md)
    PKGS="$PKGS python3-yaml"
    # t0880-deb installs the package for real on CI (dpkg -i): its postinst
    # needs adduser (on every standard Debian 12, but not in every image)
    PKGS="$PKGS adduser"
fi
if [ "${1:-}" = fuzz ]; then
    PKGS="$PKGS clang-14 libclang-rt-14-dev"
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
