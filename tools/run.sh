#!/bin/sh
# run.sh — `make run`: serve Parley on http://127.0.0.1:$PORT behind a real
# web server configured with the shipped apache-conf/ snippets, the way an
# admin would deploy it. The Makefile has built everything before this runs.
#
#   make run                          Apache + mod_fcgid (parley-fcgid.conf)
#   SERVER=apache-proxy make run      Apache + mod_proxy_fcgi, parley.fcgi as an
#                                     external threaded server on a unix socket
#   SERVER=lighttpd make run          lighttpd + mod_fastcgi (lighttpd-parley.conf)
#   PORT=8081 make run                another port (default 8080)
#   DB=postgres make run              serve on a private PostgreSQL 15 instead of
#                                     SQLite (started here: data in $BUILD/pg, or
#                                     PG_DIR; a free port on 127.0.0.1 only;
#                                     stopped on Ctrl-C)
#   PARLEY_DB=postgresql://… make run serve on that PostgreSQL server (no private
#                                     one; a libpq key=value string works too)
#   NODES=2 DB=postgres make run      two complete nodes on one PostgreSQL: node 2
#                                     (the same SERVER kind, its own parley.fcgi,
#                                     bridge and node prefix) on PORT+1, sharing
#                                     the database and the LLM upstream. PostgreSQL
#                                     only: on SQLite one machine's processes
#                                     already share everything (raise the process
#                                     or thread counts instead), so it is refused.
#
# On PostgreSQL each node needs its own PARLEY_NODE_PREFIX (the path prefix
# of the node's own files, <prefix>-ws.up and <prefix>-ws.prom): node N's is
# $PARLEY_NODE_PREFIX (node 2: $PARLEY_NODE_PREFIX-2) when it is set, else
# <temporary directory>/node-N/parley, owned by the web server's account.
# A connection string is never printed as given: the database is named the
# way the programs name it (parley migrate's db_path(), password hidden).
#
# Steps: create/migrate the database (PARLEY_DB, default ./parley.db; as root
# $BUILD/data/parley.db, owned by the account the web server runs as) and
# import the sample catalogue (share/sample-catalog.json, seed 002's demo
# brands) when it has no brand yet, pick
# the LLM upstream (OLLAMA_SERVER / OpenAI if one answers, else the simulated
# LLM in tests/fake-llm, said loudly), start the web server serving www/ and
# the API, and the WebSocket bridge when build/parley-ws exists (restarted
# if it dies, as systemd restarts apache-conf/parley-ws.service; its numbers
# in <node prefix>-ws.prom, which /api/metrics reads). Empty settings
# (OLLAMA_SERVER= as docker-compose passes them) count as unset. Every other
# Parley setting in the environment (PARLEY_*, OPENAI_*, limits) reaches the
# servers through a generated PARLEY_CONFIG file. Ctrl-C stops everything
# this script started. Until build/parley.fcgi exists, the streaming test app
# (build/tests/fcgi-stream) stands in for it.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PORT=${PORT:-8080}
SERVER=${SERVER:-apache}
. tests/integration/lib.sh

say() { echo "parley: $*"; }
loud() {
    echo "################################################################"
    for _l in "$@"; do echo "# parley: $_l"; done
    echo "################################################################"
}

case $SERVER in
apache | fcgid | apache-fcgid) setup=fcgid; what="Apache + mod_fcgid (apache-conf/parley-fcgid.conf)" ;;
apache-proxy | proxy-fcgi | proxy_fcgi) setup=proxy_fcgi; what="Apache + mod_proxy_fcgi (apache-conf/parley-proxy-fcgi.conf)" ;;
lighttpd) setup=lighttpd; what="lighttpd + mod_fastcgi (apache-conf/lighttpd-parley.conf)" ;;
*) echo "parley: SERVER must be apache, apache-proxy or lighttpd, not '$SERVER'" >&2; exit 2 ;;
esac
case $PORT in *[!0-9]* | "") echo "parley: PORT must be a number" >&2; exit 2 ;; esac
case ${DB:-sqlite} in
sqlite) DB=sqlite ;;
postgres | postgresql | pg) DB=postgres ;;
*) echo "parley: DB must be sqlite (the default) or postgres, not '$DB'" >&2; exit 2 ;;
esac
NODES=${NODES:-1}
case $NODES in 1 | 2) ;; *) echo "parley: NODES must be 1 (the default) or 2, not '$NODES'" >&2; exit 2 ;; esac
[ $((PORT + NODES - 1)) -le 65535 ] || { echo "parley: PORT must leave room for $NODES node(s) below 65536" >&2; exit 2; }

# is_conninfo S — S selects PostgreSQL as core/config.c reads PARLEY_DB: a
# postgresql:// or postgres:// URI, or a libpq "keyword=value" string (a
# leading word and "="; a file path does not start that way).
is_conninfo() {
    case $1 in postgresql://* | postgres://*) return 0 ;; esac
    printf '%s\n' "$1" | head -n 1 | grep -Eq '^[[:space:]]*[A-Za-z0-9_]+[[:space:]]*='
}
# The backend: sqlite; postgres (a private server, DB=postgres); or
# postgres-uri (PARLEY_DB names a server).
BACKEND=sqlite
if [ -n "${PARLEY_DB:-}" ] && is_conninfo "$PARLEY_DB"; then
    if [ "$DB" = postgres ]; then
        echo "parley: DB=postgres starts a private PostgreSQL, PARLEY_DB names another server: use one of them" >&2
        exit 2
    fi
    BACKEND=postgres-uri
    case $PARLEY_DB in
    *[[:space:]]*)
        # parley-fcgi.service's Environment= line (lib.sh runs it as
        # "env $lines") splits at blanks
        if [ "$setup" = proxy_fcgi ]; then
            echo "parley: SERVER=apache-proxy: give PARLEY_DB as a postgresql:// URI, not a key=value string with blanks" >&2
            exit 2
        fi ;;
    esac
elif [ "$DB" = postgres ]; then
    BACKEND=postgres
fi
if [ "$NODES" = 2 ] && [ "$BACKEND" = sqlite ]; then
    echo "parley: NODES=2 needs PostgreSQL (DB=postgres, or PARLEY_DB=postgresql://...)." >&2
    echo "parley:   Nodes are for more than one machine; on one machine with SQLite every Parley" >&2
    echo "parley:   process already shares the database: use more processes or threads instead" >&2
    echo "parley:   (FcgidMaxProcessesPerClass, parley.fcgi --threads; docs/operations.md)." >&2
    exit 2
fi
# PARLEY_NODE_PREFIX is given to each node in its own PARLEY_CONFIG file,
# never through this script's environment (the environment would win over
# node 2's file): keep the user's value, unexported.
USER_NODE_PREFIX=${PARLEY_NODE_PREFIX:-}
unset PARLEY_NODE_PREFIX
PARLEY_NODE_PREFIX=""
_n=1
while [ "$_n" -le "$NODES" ]; do
    _p=$((PORT + _n - 1))
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$_p/" 2>/dev/null; then
        echo "parley: something already answers on port $_p; stop it or use PORT=<other> make run" >&2
        exit 1
    fi
    _n=$((_n + 1))
done

it_init
trap 'echo; exit 130' INT
IT_KEEP=0
IT_EXIT_MSG="parley: stopped"

# --- DB=postgres: a private PostgreSQL ---------------------------------------
# The same server as the tests' it_postgres (tests/integration/lib.sh), its
# cluster kept in the build tree between runs like parley.db; stopped with
# everything else (lib.sh's cleanup). As root it runs as $APP_USER, which
# must own the directory; when that account cannot use it (a checkout under
# /root, a cluster a non-root run created), a throw-away cluster in the
# temporary directory is used instead.
if [ "$DB" = postgres ]; then
    PG_HOME=${PG_DIR:-$PWD/$BUILD/pg}
    case $PG_HOME in /*) ;; *) PG_HOME=$PWD/$PG_HOME ;; esac
    if [ -f "$PG_HOME/postmaster.pid" ]; then
        # (a stale file, its pid gone or now another program's, is fine:
        # postgres replaces it)
        _pp=$(head -n 1 "$PG_HOME/postmaster.pid")
        case $_pp in *[!0-9]* | "") _pp="" ;; esac
        if [ -n "$_pp" ] && kill -0 "$_pp" 2>/dev/null &&
           case $(readlink "/proc/$_pp/exe" 2>/dev/null || echo unreadable) in
           */postgres | unreadable) true ;; *) false ;; esac; then
            echo "parley: a PostgreSQL (pid $_pp) already runs on $PG_HOME — another make run," >&2
            echo "parley:   or one left by a killed one: stop it (kill -INT $_pp) or use PG_DIR=<other>" >&2
            exit 1
        fi
    fi
    if mkdir -p "$PG_HOME" 2>/dev/null && it_own "$PG_HOME" 2>/dev/null &&
       $AS_APP sh -c 'test -w "$1" && test -x "$1"' sh "$PG_HOME" 2>/dev/null; then
        [ -f "$PG_HOME/PG_VERSION" ] && say "PostgreSQL: reusing the cluster in $PG_HOME"
    else
        say "PostgreSQL: ${APP_USER:-$(id -un)} cannot use $PG_HOME: a throw-away cluster in $IT_TMP/pg instead"
        PG_HOME=$IT_TMP/pg
    fi
    it_postgres "$PG_HOME"
    say "PostgreSQL 15 started at $PG_URL (pid $PG_PID; data $PG_DATA; log $PG_LOG;"
    say "  initdb ${PG_INITDB_MS} ms, start ${PG_START_MS} ms; stopped on Ctrl-C)"
fi

# --- the database ----------------------------------------------------------
if [ "$BACKEND" = postgres ]; then
    if [ -n "${PARLEY_DB:-}" ]; then
        loud "DB=postgres: serving on the private PostgreSQL;" \
             "PARLEY_DB (the SQLite file $PARLEY_DB) is not used"
    fi
    PARLEY_DB=$PG_URL
elif [ -z "${PARLEY_DB:-}" ]; then
    if [ -n "$APP_USER" ]; then
        # Root: the web server runs as $APP_USER, which must be able to create
        # files next to the database (SQLite's -wal and -shm).
        mkdir -p "$BUILD/data"
        PARLEY_DB=$PWD/$BUILD/data/parley.db
    else
        PARLEY_DB=$PWD/parley.db
    fi
fi
[ "$BACKEND" = sqlite ] && case $PARLEY_DB in /*) ;; *) PARLEY_DB=$PWD/$PARLEY_DB ;; esac
export PARLEY_DB

# Each node's prefix (NODE_PREFIX_1, NODE_PREFIX_2). SQLite: the user's
# PARLEY_NODE_PREFIX if set, else none (the programs default to PARLEY_DB).
# PostgreSQL: required; the user's (node 2: with "-2"), else one in the
# temporary directory.
_n=1
while [ "$_n" -le "$NODES" ]; do
    if [ -n "$USER_NODE_PREFIX" ]; then
        _np=$USER_NODE_PREFIX
        [ "$_n" -gt 1 ] && _np=$USER_NODE_PREFIX-$_n
        case $_np in /*) ;; *) _np=$PWD/$_np ;; esac
        if [ "$BACKEND" != sqlite ] &&
           ! $AS_APP sh -c 'test -d "$(dirname "$1")" && test -w "$(dirname "$1")"' sh "$_np"; then
            echo "parley: PARLEY_NODE_PREFIX: ${APP_USER:-$(id -un)} cannot write in $(dirname "$_np")" >&2
            exit 1
        fi
    elif [ "$BACKEND" != sqlite ]; then
        _np=$IT_TMP/node-$_n/parley
        mkdir -p "$IT_TMP/node-$_n"
        it_own "$IT_TMP/node-$_n"
    else
        _np=""
    fi
    eval "NODE_PREFIX_$_n=\$_np"
    _n=$((_n + 1))
done

_rc=0
_mig=$(env ${NODE_PREFIX_1:+PARLEY_NODE_PREFIX="$NODE_PREFIX_1"} "$BUILD/parley" migrate) || _rc=$?
case $_rc in
0) ;;
78) # EX_CONFIG: parley said which setting is wrong, on the line above
    echo "parley: configuration: fix the setting named above (docs/configuration.md); nothing was started" >&2
    exit 1 ;;
*) if [ "$BACKEND" = sqlite ]; then
       echo "parley: cannot create/migrate $PARLEY_DB (the reason is above)" >&2
   else
       echo "parley: cannot create/migrate the PostgreSQL database (the reason is above)" >&2
   fi
   exit 1 ;;
esac
# The demo brands of seed 002 (techpro, homestyle, retired and their
# products) are the sample catalogue share/sample-catalog.json, imported
# into a database that has no brand yet (an existing database keeps its
# brands, demo or not; `parley brands list` shows them). Before the
# ownership below: the import may create SQLite's -wal and -shm files.
IT_NO_SAMPLE_CATALOG=1
_brands=$(env ${NODE_PREFIX_1:+PARLEY_NODE_PREFIX="$NODE_PREFIX_1"} "$BUILD/parley" brands list) || {
    echo "parley: cannot list the brands of the database (the reason is above)" >&2; exit 1; }
if [ "$(printf '%s\n' "$_brands" | wc -l)" -le 1 ]; then
    env ${NODE_PREFIX_1:+PARLEY_NODE_PREFIX="$NODE_PREFIX_1"} "$BUILD/parley" brands import share/sample-catalog.json >/dev/null || {
        echo "parley: cannot import share/sample-catalog.json (the reason is above)" >&2; exit 1; }
    say "sample catalogue share/sample-catalog.json imported (seed 002's demo brands: techpro, homestyle)"
fi
# How the programs name the database: db_path(), a password hidden.
DB_SHOWN=${_mig%: schema version*}
if [ "$BACKEND" = sqlite ] && [ -n "$APP_USER" ]; then
    for _f in "$PARLEY_DB" "$PARLEY_DB-wal" "$PARLEY_DB-shm" "$PARLEY_DB-bell"; do
        [ -e "$_f" ] && chown "$APP_USER:$APP_GROUP" "$_f"
    done
    [ "$(dirname "$PARLEY_DB")" = "$PWD/$BUILD/data" ] && chown "$APP_USER:$APP_GROUP" "$BUILD/data"
    if ! $AS_APP sh -c 'test -w "$1" && test -w "$(dirname "$1")"' sh "$PARLEY_DB"; then
        echo "parley: $APP_USER (the web server's account) cannot write $PARLEY_DB or its directory" >&2
        exit 1
    fi
fi
if [ "$BACKEND" = sqlite ]; then
    say "database $PARLEY_DB"
else
    say "database $DB_SHOWN (PostgreSQL; ${_mig##*: })"
fi

# --- the upstream ----------------------------------------------------------
upstream_ok() {
    case "${PARLEY_PROVIDER:-ollama}" in
    openai | OpenAI | OPENAI)
        url="${OPENAI_BASE_URL:-}"; [ -n "$url" ] && curl -fsS -m 3 -o /dev/null \
            ${OPENAI_API_KEY:+-H "Authorization: Bearer $OPENAI_API_KEY"} "${url%/chat/completions}/models" ;;
    *)  url="${OLLAMA_SERVER:-http://127.0.0.1:11434}"; url=${url%/api/generate}; url=${url%/api/chat}
        curl -fsS -m 3 -o /dev/null "${url%/}/api/tags" ;;
    esac
}
if upstream_ok 2>/dev/null; then
    say "using the configured upstream (${PARLEY_PROVIDER:-ollama})"
    IT_UPSTREAM=${OLLAMA_SERVER:-http://127.0.0.1:11434}
else
    FAKE_LLM_URL=""
    it_fake_llm
    loud "no LLM upstream answers (OLLAMA_SERVER / OPENAI_BASE_URL)" \
         "using the SIMULATED LLM (tests/fake-llm) at $FAKE_LLM_URL" \
         "answers are generated nonsense, for trying Parley out"
    PARLEY_PROVIDER=ollama
    IT_UPSTREAM=$FAKE_LLM_URL
fi

# --- every other setting: one PARLEY_CONFIG file ----------------------------
# Its lines come after those of the user's own PARLEY_CONFIG, so the
# environment wins as usual. PARLEY_DB and OLLAMA_SERVER come from the
# snippets' placeholders instead.
IT_APP_CONFIG=$IT_TMP/parley.env
{
    echo "# generated by tools/run.sh"
    [ -n "${PARLEY_CONFIG:-}" ] && cat "$PARLEY_CONFIG" && echo
    env | grep -E '^(PARLEY_|OPENAI_|WEBSOCKET_|RATE_LIMIT_|MAX_MESSAGE_LENGTH=)' \
        | grep -vE '^(PARLEY_CONFIG|PARLEY_DB|PARLEY_PROVIDER)=' | grep -v "'" \
        | sed "s/=\(.*\)$/='\1'/" || true
    echo "PARLEY_PROVIDER=${PARLEY_PROVIDER:-ollama}"
} >"$IT_APP_CONFIG"
chmod 600 "$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
# Each node's own file: the shared one plus its PARLEY_NODE_PREFIX line
# (NODE_CONFIG_1, NODE_CONFIG_2; without a prefix, the shared file itself).
_n=1
while [ "$_n" -le "$NODES" ]; do
    eval "_np=\${NODE_PREFIX_$_n}"
    _cf=$IT_APP_CONFIG
    if [ -n "$_np" ]; then
        case $_np in *"'"* | *"
"*) echo "parley: PARLEY_NODE_PREFIX must not hold a quote or a line break" >&2; exit 2 ;; esac
        _cf=$IT_TMP/parley-node-$_n.env
        { cat "$IT_APP_CONFIG"; echo "PARLEY_NODE_PREFIX='$_np'"; } >"$_cf"
        chmod 600 "$_cf"
        it_own "$_cf"
    fi
    eval "NODE_CONFIG_$_n=\$_cf"
    _n=$((_n + 1))
done
[ -z "${PARLEY_JWT_SECRET:-}" ] && ! grep -q '^ *\(export \)\{0,1\}PARLEY_JWT_SECRET *= *[^ ]' "$IT_APP_CONFIG" \
    && say "no PARLEY_JWT_SECRET: open development mode (no login needed, everyone is one anonymous user)"

# --- the web pages ---------------------------------------------------------
IT_WWW=$PWD/www
if [ ! -e www/index.html ]; then
    if ! { mkdir -p www && [ -w www ]; } 2>/dev/null; then
        # A read-only checkout: the placeholder goes to the temp dir.
        mkdir -p "$IT_TMP/www-copy"
        [ -d www ] && cp -R www/. "$IT_TMP/www-copy/"
        IT_WWW=$IT_TMP/www-copy
    fi
    cat >"$IT_WWW/index.html" <<'EOF'
<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Parley</title>
<h1>Parley</h1>
<p>Parley is running. The demo pages are not written yet; the API answers
under <a href="/api/health">/api/health</a>, <a href="/brands/active">/brands/active</a>
and the other paths in <code>docs/</code>.</p>
</html>
EOF
    say "created a placeholder $IT_WWW/index.html"
fi
# The official Phoenix client for the seed 003 pages (neuralbridge.html,
# seed003.html load /vendor/phoenix.js): the browser build of the npm
# package pinned in package.json (installed by `make node-deps` before this
# runs), copied at each start, never committed (www/vendor/ is ignored).
PHX_JS=node_modules/phoenix/priv/static/phoenix.js
if [ -f "$PHX_JS" ]; then
    if ! { mkdir -p "$IT_WWW/vendor" && cp "$PHX_JS" "$IT_WWW/vendor/phoenix.js.tmp" &&
           mv -f "$IT_WWW/vendor/phoenix.js.tmp" "$IT_WWW/vendor/phoenix.js"; } 2>/dev/null; then
        # A read-only checkout: serve a copy with it.
        mkdir -p "$IT_TMP/www-copy"
        [ "$IT_WWW" != "$IT_TMP/www-copy" ] && cp -R "$IT_WWW/." "$IT_TMP/www-copy/"
        IT_WWW=$IT_TMP/www-copy
        mkdir -p "$IT_WWW/vendor" && cp "$PHX_JS" "$IT_WWW/vendor/phoenix.js"
    fi
    say "phoenix.js $(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' node_modules/phoenix/package.json) (npm) served as /vendor/phoenix.js"
else
    say "$PHX_JS is missing (npm ci): the seed 003 pages cannot load phoenix.js"
fi
if [ -n "$APP_USER" ] && [ "$IT_WWW" = "$PWD/www" ] && ! $AS_APP test -r www/index.html; then
    # The checkout is not readable by the web server's account (e.g. under
    # /root): serve a copy.
    cp -R www "$IT_TMP/www-copy"
    it_own "$IT_TMP/www-copy"
    IT_WWW=$IT_TMP/www-copy
    say "$APP_USER cannot read $PWD/www: serving a copy (edits need a restart)"
fi

# --- the FastCGI program and the bridge -------------------------------------

# bridge_loop — runs the bridge (a copy in $BRIDGE_DIR) on 127.0.0.1:
# $WS_PORT as the app account, and starts it again when it dies, the way
# systemd runs apache-conf/parley-ws.service (Restart=on-failure): a clean
# exit (status 0, after SIGTERM) ends the loop; a crash or a kill is
# followed by a restart after 1 s, then 2, 4 ... up to 30 s while it keeps
# dying within a minute of its start. No --stats-file: the bridge writes
# its default, <node prefix>-ws.prom, which the node's parley.fcgi's
# /api/metrics reads. PARLEY_DB comes from the environment (exported), so
# that no command line shows a connection string; the node's settings
# (PARLEY_NODE_PREFIX among them) from its PARLEY_CONFIG file.
# SIGTERM/SIGINT stop the bridge (SIGTERM, its clean shutdown) and the loop.
bridge_loop() {
    _child=""
    trap 'if [ -n "$_child" ]; then kill -TERM "$_child" 2>/dev/null; wait "$_child" 2>/dev/null; fi; exit 0' TERM INT
    _delay=1
    while :; do
        _t0=$(date +%s)
        # shellcheck disable=SC2086
        $AS_APP env OLLAMA_SERVER="$IT_UPSTREAM" \
            ${IT_APP_CONFIG:+PARLEY_CONFIG="$IT_APP_CONFIG"} \
            "$BRIDGE_DIR/parley-ws" --listen "127.0.0.1:$WS_PORT" >>"$BRIDGE_LOG" 2>&1 </dev/null &
        _child=$!
        _rc=0
        wait "$_child" || _rc=$?
        _child=""
        if [ "$_rc" -eq 0 ]; then
            echo "parley: parley-ws exited cleanly; not restarting it"
            return 0
        fi
        [ $(($(date +%s) - _t0)) -ge 60 ] && _delay=1
        _why="exit status $_rc"
        [ "$_rc" -gt 128 ] && _why="killed by signal $((_rc - 128))"
        echo "parley: parley-ws died ($_why); restarting it in $_delay s (log: $BRIDGE_LOG)"
        sleep "$_delay"
        _delay=$((_delay * 2)); [ "$_delay" -gt 30 ] && _delay=30
    done
}

# Starts bridge_loop in the background (its pid in BRIDGE_LOOP_PID, stopped
# by lib.sh's cleanup with everything else) and waits until the bridge
# listens. 1 (loop stopped, log shown) if it does not come up. Its
# directory is BRIDGE_DIR=$IT_TMP/bridge, node 2's $IT_TMP/bridge-2 (IT_NODE,
# as lib.sh's start_bridge names them).
start_bridge_supervised() {
    BRIDGE_DIR=$IT_TMP/bridge${IT_NODE:+-$IT_NODE}
    mkdir -p "$BRIDGE_DIR"
    cp "$BUILD/parley-ws" "$BRIDGE_DIR/parley-ws"
    BRIDGE_LOG=$BRIDGE_DIR/parley-ws.log
    : >"$BRIDGE_LOG"
    it_own "$BRIDGE_DIR"
    bridge_loop </dev/null &
    BRIDGE_LOOP_PID=$!
    IT_PIDS="$IT_PIDS $BRIDGE_LOOP_PID"
    if ! it_wait_port "$WS_PORT" "$BRIDGE_LOOP_PID"; then
        it_stop "$BRIDGE_LOOP_PID"
        sed 's/^/# parley-ws: /' "$BRIDGE_LOG" | tail -n 20
        return 1
    fi
}
APP=$BUILD/parley.fcgi
if [ ! -x "$APP" ]; then
    APP=$BUILD/tests/fcgi-stream
    loud "$BUILD/parley.fcgi is not built yet" \
         "serving the streaming test app (tests/tools/fcgi-stream) in its place:" \
         "  curl -N http://127.0.0.1:$PORT/api/stream   (5 SSE events, 200 ms apart)"
fi
IT_DB=$PARLEY_DB
IT_UPSTREAM=${IT_UPSTREAM:-}
export PARLEY_PROVIDER
ALL_SETUP_PIDS=""

# start_node N — node N: its bridge (supervised), then its web server on
# PORT+N-1 with its own setup directory (lib.sh's IT_NODE: node 1 has the
# plain names, node 2 "-2"), node prefix and PARLEY_CONFIG file.
start_node() {
    IT_NODE=""
    [ "$1" -gt 1 ] && IT_NODE=$1
    _tag=""
    [ "$NODES" -gt 1 ] && _tag="node $1: "
    eval "IT_APP_CONFIG=\$NODE_CONFIG_$1; PARLEY_NODE_PREFIX=\$NODE_PREFIX_$1"
    IT_HTTP_PORT=$((PORT + $1 - 1))
    WS_PORT=$(free_port)
    IT_NO_WS=1
    if [ -x "$BUILD/parley-ws" ]; then
        if start_bridge_supervised; then
            IT_NO_WS=""
            say "${_tag}WebSocket bridge parley-ws on 127.0.0.1:$WS_PORT (proxied under /api/websocket/, /ws/, /socket/websocket;"
            say "  restarted if it dies; log $BRIDGE_LOG)"
        else
            say "${_tag}parley-ws did not start (its log is above): WebSocket clients will fall back to long-polling"
        fi
    else
        say "no $BUILD/parley-ws yet: WebSocket clients fall back to long-polling"
    fi
    say "${_tag}starting $what"
    start_$setup "$APP"
    ALL_SETUP_PIDS="$ALL_SETUP_PIDS $SETUP_PIDS"
    if [ "$BACKEND" != sqlite ]; then
        # its configuration holds the connection string: for its account only
        chmod 700 "$SETUP_DIR"
        say "${_tag}node prefix $PARLEY_NODE_PREFIX (<prefix>-ws.up, <prefix>-ws.prom)"
    fi
    say "${_tag}serving http://127.0.0.1:$IT_HTTP_PORT/  (www/: $IT_WWW)"
    say "${_tag}logs: $SETUP_DIR/logs/ (removed when it stops)"
    if [ -x "$BUILD/parley.fcgi" ]; then
        _h=$(curl -sS -m 10 "http://127.0.0.1:$IT_HTTP_PORT/api/health" 2>&1) || true
        say "${_tag}GET /api/health → $_h"
    fi
}
_n=1
while [ "$_n" -le "$NODES" ]; do
    start_node "$_n"
    _n=$((_n + 1))
done
[ -x "$BUILD/parley.fcgi" ] && say "try: curl http://127.0.0.1:$PORT/brands/active"
case $BACKEND in
postgres) say "PostgreSQL at $PG_URL (the database of every node; psql $PG_URL)" ;;
postgres-uri) say "PostgreSQL: $DB_SHOWN (not started here: it keeps running)" ;;
esac
if [ "$NODES" -gt 1 ]; then
    say "two nodes, one database and one upstream: http://127.0.0.1:$PORT/ and http://127.0.0.1:$((PORT + 1))/"
    say "  (a ticket opened on one is live and cached on the other)"
fi
say "Ctrl-C stops everything"
# Wait for the web server; Ctrl-C (or its death) ends the wait, and the
# EXIT trap of lib.sh stops everything that was started.
set +e
# shellcheck disable=SC2086
wait $ALL_SETUP_PIDS
say "the web server exited; its log:"
tail -n 20 "$SETUP_DIR"/logs/error.log 2>/dev/null | sed 's/^/    | /'
exit 1
