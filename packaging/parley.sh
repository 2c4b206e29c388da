#!/bin/sh
# /usr/bin/parley — the Parley command-line tool with the packaged settings
# (installed by the parley package; the program is /usr/lib/parley/parley).
#
# It reads what the services read: /etc/parley/parley.env (as its
# PARLEY_CONFIG file, unless PARLEY_CONFIG is set; the environment still
# wins over it, as for any Parley program) and the generated JWT secret in
# /etc/parley/secret.env (unless PARLEY_JWT_SECRET is set in the
# environment or in parley.env). Run as root, it runs the program as the
# parley account, so the database's files keep their owner; files it reads
# or writes (kb import, backups) must then be reachable by that account.
set -eu
PROG=/usr/lib/parley/parley
CONF=/etc/parley/parley.env
SECRET=/etc/parley/secret.env

if [ -z "${PARLEY_CONFIG+set}" ] && [ -e "$CONF" ]; then
    if [ ! -r "$CONF" ]; then
        echo "parley: cannot read $CONF: run this as root or as a member of the parley group" >&2
        exit 78
    fi
    PARLEY_CONFIG=$CONF
    export PARLEY_CONFIG
fi
if [ -z "${PARLEY_JWT_SECRET+set}" ] && [ -r "$SECRET" ] &&
   ! grep -Eq '^[[:space:]]*(export[[:space:]]+)?PARLEY_JWT_SECRET[[:space:]]*=' "${PARLEY_CONFIG:-/dev/null}" 2>/dev/null; then
    PARLEY_JWT_SECRET=$(sed -n 's/^PARLEY_JWT_SECRET=//p' "$SECRET" | tail -n 1)
    export PARLEY_JWT_SECRET
fi
if [ "$(id -u)" = 0 ] && id parley >/dev/null 2>&1; then
    exec setpriv --reuid=parley --regid=parley --init-groups -- "$PROG" "$@"
fi
exec "$PROG" "$@"
