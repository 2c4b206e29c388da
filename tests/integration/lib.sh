# lib.sh — shared setup of Parley's integration tests: real web servers on
# loopback, configured with the SHIPPED apache-conf/ snippets.
#
# Sourced (POSIX sh) from the repository root by tests/integration/t*.sh and
# by tools/run.sh:
#
#   cd "$(dirname "$0")/../.." && . tests/integration/lib.sh
#   it_init                          temp dir, cleanup trap, app user
#   it_fake_llm                      FAKE_LLM_URL (reused if set, else started)
#   it_jwt_config                    SECRET and IT_APP_CONFIG: a config file with a fresh JWT secret
#   start_fcgid APP                  Apache + mod_fcgid spawning APP
#   start_proxy_fcgi APP             APP as parley-fcgi.service starts it + mod_proxy_fcgi
#   start_lighttpd APP               lighttpd + mod_fastcgi spawning APP
#   start_htaccess APP               Apache + mod_fcgid, AllowOverride, .htaccess
#       APP is a FastCGI program (build/parley.fcgi or build/tests/fcgi-stream);
#       each sets BASE=http://127.0.0.1:PORT and SETUP_DIR, and returns when
#       the server answers.
#   start_bridge                     build/parley-ws on a free port (BRIDGE_PORT),
#                                    same database and upstream; set WS_PORT to it
#   stop_setup                       stops the servers of the last start_*
#   it_sample_catalog [DB]           imports share/sample-catalog.json (seed 002's
#                                    demo brands) into DB unless it has a brand;
#                                    every start_* does it for its database
#   it_postgres [DATADIR]            a private PostgreSQL 15 (PG_URL, PGHOST, PGPORT)
#   it_pg_sql SQL                    psql against it
#   ok NAME CMD...                   runs CMD, prints "ok N - NAME" / "not ok N - NAME"
#   it_node_tap PREFIX FILE.mjs      runs a node --test file; its results become ours
#   it_done                          stops every process still running, scans for
#                                    sanitizer reports, prints the plan; exit
#                                    status 0 only if all passed
#
# Sanitizer reports (a build with SANITIZE=address,undefined): stop_setup,
# it_done and it_cleanup scan what the processes the test started printed
# (it_san_scan) and add a "not ok" line per new report naming the process
# and its first lines. AddressSanitizer and LeakSanitizer write to
# $IT_TMP/san/asan.<program>.<pid> (it_init adds log_path to ASAN_OPTIONS;
# mod_fcgid gets it with FcgidInitialEnv), UBSan (gcc's runtime ignores
# log_path next to ASan) to the program's stderr: the web servers' logs
# (lighttpd.out under lighttpd, error.log under mod_fcgid), app.log
# (mod_proxy_fcgi) and the bridge's parley-ws.log, all scanned too. The
# leak check runs at a clean exit only: parley.fcgi and parley-ws exit on
# SIGTERM (their web server sends it to a spawned parley.fcgi); one that
# it_stop had to SIGKILL is named in a "#" line (a test's own SIGKILL is
# its business).
#
# Each setup gets its own directory under one mktemp -d: generated main
# config (ServerRoot, PidFile, ErrorLog, modules from Debian's
# /usr/lib/apache2/modules), the shipped snippets after placeholder
# substitution (it_subst), a copy of the program, logs, sockets, database.
# Servers run as the current user on free ports >= 1024. As root, Apache and
# lighttpd need an unprivileged account: they drop to APP_USER (www-data, or
# nobody), and the temp dir, the database and the programs belong to it.
#
# Variables read: BUILD (default build), FAKE_LLM_URL (reuse the simulated
# LLM that tests/run.sh started; else it_fake_llm starts one), IT_KEEP=1
# keeps the temp dir. tools/run.sh (make run) also sets IT_HTTP_PORT (the
# port), IT_WWW (document root), IT_DB (database), IT_UPSTREAM (LLM URL),
# WS_PORT, and IT_APP_CONFIG (a PARLEY_CONFIG file for every other setting:
# FcgidInitialEnv, the external server's environment, lighttpd's).
set -eu

BUILD=${BUILD:-build}
IT_ROOT=$(pwd)
APACHE_BIN=${APACHE_BIN:-/usr/sbin/apache2}
APACHE_MODULES=${APACHE_MODULES:-/usr/lib/apache2/modules}
LIGHTTPD_BIN=${LIGHTTPD_BIN:-/usr/sbin/lighttpd}
IT_TMP=""
IT_PIDS=""            # everything started here, killed by it_cleanup
SETUP_PIDS=""         # the servers of the current setup
SETUP_DIR=""
BASE=""
WS_PORT=""
TAP_N=0
TAP_FAILED=0

it_log() { echo "# $*"; }
it_die() { echo "not ok - $*"; exit 1; }

# --- processes --------------------------------------------------------------

# it_bg LOGFILE CMD... — starts CMD in the background, records its pid in
# IT_LAST_PID, IT_PIDS and SETUP_PIDS.
it_bg() {
    _log=$1; shift
    "$@" >"$_log" 2>&1 </dev/null &
    IT_LAST_PID=$!
    IT_PIDS="$IT_PIDS $IT_LAST_PID"
    SETUP_PIDS="$SETUP_PIDS $IT_LAST_PID"
}

# True while process $1 exists and is not a zombie.
it_alive() {
    [ -r "/proc/$1/stat" ] || return 1
    _st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$_st" ] && [ "$_st" != Z ]
}

# it_stop PID... — SIGTERM, up to 5 s of grace (IT_STOP_GRACE, in 1/20 s),
# then SIGKILL; reaps.
it_stop() {
    for _p in "$@"; do kill -TERM "$_p" 2>/dev/null || true; done
    for _p in "$@"; do
        _i=0
        while it_alive "$_p" && [ $_i -lt "${IT_STOP_GRACE:-100}" ]; do sleep 0.05; _i=$((_i + 1)); done
        if it_alive "$_p"; then
            _exe=$(readlink "/proc/$_p/exe" 2>/dev/null) || _exe=""
            case ${_exe##*/} in parley*) IT_SAN_KILLED="$IT_SAN_KILLED ${_exe##*/}[$_p]" ;; esac
            kill -KILL "$_p" 2>/dev/null || true
        fi
        wait "$_p" 2>/dev/null || true
    done
}
IT_SAN_KILLED=""      # parley programs it_stop had to SIGKILL (no leak check)

# Processes whose program is a copy under our temp dir (FastCGI apps spawned
# by a web server that died before it could stop them): we started them.
it_orphans() {
    [ -n "$IT_TMP" ] || return 0
    for _d in /proc/[0-9]*; do
        _exe=$(readlink "$_d/exe" 2>/dev/null) || continue
        case $_exe in "$IT_TMP"/*) echo "${_d#/proc/}" ;; esac
    done
}

# it_stop_orphans PID... — FastCGI apps left when their web server is gone:
# most got its SIGTERM and are finishing their requests (a second SIGTERM
# would make them exit at once, without the leak check), so they get up to
# IT_ORPHAN_WAIT (40) twentieths of a second to exit by themselves first.
it_stop_orphans() {
    _i=0
    while [ $_i -lt "${IT_ORPHAN_WAIT:-40}" ]; do
        _any=0
        for _p in "$@"; do it_alive "$_p" && _any=1; done
        [ $_any = 0 ] && return 0
        sleep 0.05; _i=$((_i + 1))
    done
    it_stop "$@"
}

it_cleanup() {
    _rc=$?
    trap - EXIT INT TERM
    # shellcheck disable=SC2086
    [ -n "$IT_PIDS" ] && it_stop $IT_PIDS
    _o=$(it_orphans)
    # shellcheck disable=SC2086
    [ -n "$_o" ] && it_stop_orphans $_o
    it_pg_stop
    if [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ]; then
        _n=$TAP_FAILED
        it_san_scan
        [ "$TAP_FAILED" -gt "$_n" ] && [ "$_rc" = 0 ] && _rc=1
    fi
    if [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ]; then
        if [ "${IT_KEEP:-0}" = 1 ]; then echo "# kept $IT_TMP"; else rm -rf "$IT_TMP"; fi
    fi
    [ -n "${IT_EXIT_MSG:-}" ] && echo "$IT_EXIT_MSG"
    exit "$_rc"
}

# --- setup ------------------------------------------------------------------

# Prints a free TCP port on 127.0.0.1 (the kernel's choice, >= 1024).
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# $AS_APP CMD... — runs CMD as the account the servers' children use (a
# command prefix, so that it_bg records the program's own pid).
AS_APP=""

# Gives the app account the path $1 (recursively) when running as root.
it_own() {
    [ -n "$APP_USER" ] && chown -R "$APP_USER:$APP_GROUP" "$@"
    return 0
}

# it_jwt_config — a fresh SECRET and the app's PARLEY_CONFIG file holding it
# (and 5 ms coalescing, so streams have many events), readable by the app
# user only; exports IT_APP_CONFIG for the start_* functions.
it_jwt_config() {
    SECRET="it-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    IT_APP_CONFIG=$IT_TMP/parley.conf
    {
        echo "PARLEY_JWT_SECRET=$SECRET"
        echo "PARLEY_COALESCE_MS=5"
    } >"$IT_APP_CONFIG"
    chmod 640 "$IT_APP_CONFIG"
    it_own "$IT_APP_CONFIG"
    export IT_APP_CONFIG
}

it_init() {
    for _c in node curl; do
        command -v $_c >/dev/null 2>&1 || it_die "$_c is not installed (make deps)"
    done
    IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/parley-it.XXXXXX")
    chmod 755 "$IT_TMP"
    trap it_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    APP_USER="" APP_GROUP=""
    if [ "$(id -u)" = 0 ]; then
        if id www-data >/dev/null 2>&1; then APP_USER=www-data; else APP_USER=nobody; fi
        APP_GROUP=$(id -gn "$APP_USER")
        AS_APP="setpriv --reuid=$APP_USER --regid=$APP_GROUP --init-groups --"
    fi
    mkdir -p "$IT_TMP/data" "$IT_TMP/www" "$IT_TMP/san"
    echo '<!doctype html><title>parley test</title><p>parley integration test' >"$IT_TMP/www/index.html"
    it_own "$IT_TMP"
    # Every sanitized program started from here (servers, the CLI, tools)
    # writes its ASan/LSan report to $IT_TMP/san/asan.<program>.<pid>, which
    # it_san_scan reads, whoever captured or dropped its stderr.
    case ${ASAN_OPTIONS:-} in
    *log_path=*) ;;
    *) ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$IT_TMP/san/asan:log_exe_name=1"
       export ASAN_OPTIONS ;;
    esac
}

# Sets FAKE_LLM_URL: the simulated LLM tests/run.sh started, or a new one.
it_fake_llm() {
    [ -n "${FAKE_LLM_URL:-}" ] && return 0
    _pf=$IT_TMP/fake-llm.port
    it_bg "$IT_TMP/fake-llm.log" node tests/fake-llm/server.mjs --port 0 --port-file "$_pf"
    SETUP_PIDS=""
    _i=0
    while [ ! -s "$_pf" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
    [ -s "$_pf" ] || it_die "the simulated LLM did not start: $(cat "$IT_TMP/fake-llm.log")"
    FAKE_LLM_URL="http://127.0.0.1:$(cat "$_pf")"
}

# Values for the placeholders of apache-conf/*; a start_* function sets the
# per-setup ones (PARLEY_BIN, PARLEY_SOCKET, WS_PORT) before it_subst.
# @PARLEY_NODE_PREFIX@ is PARLEY_NODE_PREFIX (the node's prefix, as
# tools/run.sh sets it per node), by default PARLEY_DB as in the programs.
# it_subst SRC DEST — the shipped snippet with its placeholders replaced
# (the values taken literally: a connection string's "&" or "|" too).
it_sed_value() { printf '%s\n' "$1" | sed -e 's/[\\|&]/\\&/g'; }
# (the benches redefine it_subst to adjust the result; they call this one
# for the substitution itself)
it_subst_shipped() {
    sed -e "s|@PARLEY_BIN@|$(it_sed_value "$PARLEY_BIN")|g" \
        -e "s|@PARLEY_WWW@|$(it_sed_value "$PARLEY_WWW")|g" \
        -e "s|@PARLEY_DB@|$(it_sed_value "$PARLEY_DB")|g" \
        -e "s|@PARLEY_NODE_PREFIX@|$(it_sed_value "${PARLEY_NODE_PREFIX:-$PARLEY_DB}")|g" \
        -e "s|@PARLEY_SOCKET@|$(it_sed_value "$PARLEY_SOCKET")|g" \
        -e "s|@OLLAMA_SERVER@|$(it_sed_value "$OLLAMA_SERVER")|g" \
        -e "s|@WS_PORT@|$(it_sed_value "$WS_PORT")|g" \
        "$1" >"$2"
    if grep -n '@[A-Z_]*@' "$2" >&2; then
        it_die "$1: placeholder left after substitution (see above)"
    fi
}
it_subst() { it_subst_shipped "$@"; }

# Creates SETUP_DIR=$IT_TMP/$1 with bin/parley.fcgi (a copy of APP $2), the
# database, and the placeholder values. With IT_NODE set (two nodes in one
# run, t0790), the directory is $IT_TMP/$1-$IT_NODE.
it_setup_dir() {
    SETUP_DIR=$IT_TMP/$1${IT_NODE:+-$IT_NODE}
    [ -x "$2" ] || it_die "$2 is not built (make)"
    mkdir -p "$SETUP_DIR/bin" "$SETUP_DIR/conf" "$SETUP_DIR/logs" "$SETUP_DIR/run"
    cp "$2" "$SETUP_DIR/bin/parley.fcgi"
    PARLEY_BIN=$SETUP_DIR/bin
    PARLEY_WWW=${IT_WWW:-$IT_TMP/www}
    PARLEY_DB=${IT_DB:-$IT_TMP/data/parley.db}
    PARLEY_SOCKET=$SETUP_DIR/run/parley.sock
    OLLAMA_SERVER=${IT_UPSTREAM:-$FAKE_LLM_URL}
    [ -n "$WS_PORT" ] || WS_PORT=$(free_port)
    HTTP_PORT=${IT_HTTP_PORT:-$(free_port)}
    BASE=http://127.0.0.1:$HTTP_PORT
    SETUP_PIDS=""
    [ "${IT_NO_SAMPLE_CATALOG:-0}" = 1 ] || it_sample_catalog "$PARLEY_DB"
}

# it_sample_catalog [DB] — the demo brands of seed 002 (techpro, homestyle,
# retired and their products: share/sample-catalog.json, which the
# migrations no longer insert) imported into DB (default the setups'
# database) with `parley brands import`, as the app account, unless DB
# already has a brand (a test's own catalogue, or a second setup on the
# same database, is left alone). The CLI creates and migrates DB when it
# does not exist yet. IT_NO_SAMPLE_CATALOG=1 skips it in it_setup_dir
# (tools/run.sh imports on its own, saying so).
it_sample_catalog() {
    _scdb=${1:-${IT_DB:-$IT_TMP/data/parley.db}}
    [ -x "$BUILD/parley" ] || it_die "$BUILD/parley is not built (make)"
    case $BUILD in
    /*) _scbin=$BUILD/parley ;;             # some scripts make BUILD absolute
    *) _scbin=$IT_ROOT/$BUILD/parley ;;
    esac
    mkdir -p "$IT_TMP/cli-node"
    it_own "$IT_TMP/cli-node"
    # shellcheck disable=SC2086
    _scn=$($AS_APP env PARLEY_CONFIG= PARLEY_DB="$_scdb" PARLEY_NODE_PREFIX="$IT_TMP/cli-node/parley" \
        "$_scbin" brands list 2>&1) || it_die "parley brands list ($_scdb): $_scn"
    [ "$(printf '%s\n' "$_scn" | wc -l)" -gt 1 ] && return 0
    # shellcheck disable=SC2086
    _scn=$($AS_APP env PARLEY_CONFIG= PARLEY_DB="$_scdb" PARLEY_NODE_PREFIX="$IT_TMP/cli-node/parley" \
        "$_scbin" brands import "$IT_ROOT/share/sample-catalog.json" 2>&1) ||
        it_die "parley brands import share/sample-catalog.json ($_scdb): $_scn"
}

# Waits until $1 answers HTTP at all (any status), at most $2 tenths of a second.
it_wait_http() {
    _i=0
    while [ $_i -lt "${2:-50}" ]; do
        _code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null) || true
        [ -n "$_code" ] && [ "$_code" != 000 ] && return 0
        for _p in $SETUP_PIDS; do it_alive "$_p" || return 1; done
        sleep 0.1; _i=$((_i + 1))
    done
    return 1
}

it_wait_socket() {
    _i=0
    while [ ! -S "$1" ] && [ $_i -lt 50 ]; do sleep 0.05; _i=$((_i + 1)); done
    [ -S "$1" ]
}

# The server failed to come up: show why, fail the test file.
it_setup_failed() {
    echo "not ok - $1 did not start"
    for _f in "$SETUP_DIR"/logs/*; do
        [ -f "$_f" ] && sed "s|^|# $(basename "$_f"): |" "$_f" | tail -n 30
    done
    exit 1
}

# --- Apache -----------------------------------------------------------------

# apache_conf EXTRA_MODULES... — writes $SETUP_DIR/httpd.conf: a minimal main
# configuration around the included snippets listed in $APACHE_INCLUDES,
# with everything a non-root apache2 -f needs inside $SETUP_DIR.
apache_conf() {
    [ -x "$APACHE_BIN" ] || it_die "apache2 is not installed (tools/deps.sh installs apache2)"
    _c=$SETUP_DIR/httpd.conf
    {
        echo "# generated by tests/integration/lib.sh"
        echo "ServerRoot \"$SETUP_DIR\""
        echo "ServerName 127.0.0.1"
        echo "Listen 127.0.0.1:$HTTP_PORT"
        echo "PidFile \"$SETUP_DIR/run/httpd.pid\""
        echo "DefaultRuntimeDir \"$SETUP_DIR/run\""
        echo "ErrorLog \"$SETUP_DIR/logs/error.log\""
        echo "LogLevel warn"
        echo "Timeout 60"
        for _m in mpm_event authz_core authz_host mime alias dir env setenvif headers "$@"; do
            echo "LoadModule ${_m}_module \"$APACHE_MODULES/mod_$_m.so\""
        done
        echo "TypesConfig /etc/mime.types"
        echo "DirectoryIndex index.html"
        # Every waiting long-poll request and open stream holds a worker
        # thread. All 128 in ONE child: the event MPM closes the kept
        # connections of a child whose threads are all busy, so with children
        # of 32, t0500's 60 long-poll viewers on mod_proxy_fcgi saw ~55 of
        # their requests fail (UND_ERR_SOCKET) and repeated after a back-off.
        echo "StartServers 1"
        echo "ServerLimit 1"
        echo "ThreadLimit 128"
        echo "ThreadsPerChild 128"
        echo "MaxRequestWorkers 128"
        echo "MinSpareThreads 16"
        echo "MaxSpareThreads 128"
        if [ -n "$APP_USER" ]; then
            echo "User $APP_USER"
            echo "Group $APP_GROUP"
        fi
        case " $* " in *" fcgid "*)
            echo "FcgidIPCDir \"$SETUP_DIR/run/fcgid\""
            echo "FcgidProcessTableFile \"$SETUP_DIR/run/fcgid_shm\""
            # mod_fcgid gives its programs no environment of its own: the
            # sanitizers' settings (it_init's log_path) must be passed on.
            for _v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
                eval "_val=\${$_v:-}"
                [ -n "$_val" ] && echo "FcgidInitialEnv $_v \"$_val\""
            done ;;
        esac
        # Like Debian's apache2.conf: nothing is reachable unless granted.
        echo "<Directory />"
        echo "    Options FollowSymLinks"
        echo "    AllowOverride None"
        echo "    Require all denied"
        echo "</Directory>"
        echo "<VirtualHost 127.0.0.1:$HTTP_PORT>"
        for _f in $APACHE_INCLUDES; do
            case $_f in
            "#"*) echo "    # not included: ${_f#\#}" ;;
            *) echo "    Include \"$SETUP_DIR/conf/$_f\"" ;;
            esac
        done
        echo "    ${APACHE_VHOST_EXTRA:-}"
        echo "</VirtualHost>"
    } >"$_c"
}

apache_run() {
    it_own "$SETUP_DIR"
    if ! "$APACHE_BIN" -d "$SETUP_DIR" -f "$SETUP_DIR/httpd.conf" -t >"$SETUP_DIR/logs/configtest.log" 2>&1; then
        it_setup_failed "apache2 ($1): configtest"
    fi
    it_bg "$SETUP_DIR/logs/apache2.out" "$APACHE_BIN" -d "$SETUP_DIR" -f "$SETUP_DIR/httpd.conf" -DFOREGROUND
    it_wait_http "$BASE/" || it_setup_failed "apache2 ($1)"
}

# Apache + mod_fcgid: apache-conf/parley-fcgid.conf + parley-websocket.conf.
start_fcgid() {
    it_setup_dir fcgid "$1"
    [ -f "$APACHE_MODULES/mod_fcgid.so" ] || it_die "mod_fcgid is not installed (libapache2-mod-fcgid)"
    it_subst apache-conf/parley-fcgid.conf "$SETUP_DIR/conf/parley-fcgid.conf"
    it_subst apache-conf/parley-websocket.conf "$SETUP_DIR/conf/parley-websocket.conf"
    APACHE_INCLUDES="parley-fcgid.conf ${IT_NO_WS:+#}parley-websocket.conf"
    APACHE_VHOST_EXTRA=${IT_APP_CONFIG:+"FcgidInitialEnv PARLEY_CONFIG \"$IT_APP_CONFIG\""}
    apache_conf fcgid proxy proxy_http rewrite
    APACHE_VHOST_EXTRA=""
    apache_run mod_fcgid
}

# The FastCGI program as an external threaded server on a unix socket,
# started with the Environment= and ExecStart= lines of the shipped
# apache-conf/parley-fcgi.service, + Apache mod_proxy_fcgi.
start_proxy_fcgi() {
    it_setup_dir proxy-fcgi "$1"
    it_subst apache-conf/parley-proxy-fcgi.conf "$SETUP_DIR/conf/parley-proxy-fcgi.conf"
    it_subst apache-conf/parley-websocket.conf "$SETUP_DIR/conf/parley-websocket.conf"
    it_subst apache-conf/parley-fcgi.service "$SETUP_DIR/conf/parley-fcgi.service"
    _env=$(sed -n 's/^Environment=//p' "$SETUP_DIR/conf/parley-fcgi.service")
    _exec=$(sed -n 's/^ExecStart=//p' "$SETUP_DIR/conf/parley-fcgi.service")
    [ -n "$_exec" ] || it_die "parley-fcgi.service has no ExecStart= line"
    it_own "$SETUP_DIR"
    # shellcheck disable=SC2086
    it_bg "$SETUP_DIR/logs/app.log" $AS_APP env $_env ${IT_APP_CONFIG:+PARLEY_CONFIG="$IT_APP_CONFIG"} $_exec
    it_wait_socket "$PARLEY_SOCKET" || it_setup_failed "parley.fcgi --socket (ExecStart of parley-fcgi.service)"
    APACHE_INCLUDES="parley-proxy-fcgi.conf ${IT_NO_WS:+#}parley-websocket.conf"
    apache_conf proxy proxy_fcgi proxy_http
    apache_run mod_proxy_fcgi
}

# Shared hosting: the program and the .htaccess in the document root, the
# host's defaults otherwise (FcgidOutputBufferSize left alone).
start_htaccess() {
    it_setup_dir htaccess "$1"
    [ -f "$APACHE_MODULES/mod_fcgid.so" ] || it_die "mod_fcgid is not installed (libapache2-mod-fcgid)"
    _docroot=$SETUP_DIR/public_html
    mkdir -p "$_docroot"
    cp "$1" "$_docroot/parley.fcgi"
    cp "$IT_TMP/www/index.html" "$_docroot/"
    PARLEY_BIN=$_docroot
    it_subst apache-conf/htaccess-shared-hosting "$_docroot/.htaccess"
    APACHE_INCLUDES=""
    # What a typical shared host grants in its own configuration.
    APACHE_VHOST_EXTRA="DocumentRoot \"$_docroot\"
    <Directory \"$_docroot\">
        AllowOverride All
        Options SymLinksIfOwnerMatch
        Require all granted
    </Directory>"
    apache_conf fcgid rewrite
    APACHE_VHOST_EXTRA=""
    apache_run htaccess
}

# --- the WebSocket bridge ----------------------------------------------------

# Waits until something listens on 127.0.0.1:$1 (curl's "connection
# refused" is exit status 7), at most IT_WAIT_PORT (100) twentieths of a
# second (a bridge under valgrind needs more); fails early if process $2 died.
it_wait_port() {
    _i=0
    while [ $_i -lt "${IT_WAIT_PORT:-100}" ]; do
        _rc=0
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$1/" 2>/dev/null || _rc=$?
        [ "$_rc" -ne 7 ] && return 0
        it_alive "$2" || return 1
        sleep 0.05; _i=$((_i + 1))
    done
    return 1
}

# Starts $BUILD/parley-ws as the shipped parley-ws.service would (its
# Environment= and ExecStart= lines) on 127.0.0.1:BRIDGE_PORT (a free port), as the app
# account, with the database and upstream of the setups. It outlives
# stop_setup; it_cleanup stops it. Returns 1 (with its log on stdout as TAP
# diagnostics) if it does not come up. Sets BRIDGE_DIR ($IT_TMP/bridge, or
# $IT_TMP/bridge-$IT_NODE with IT_NODE set), BRIDGE_PORT and BRIDGE_PID.
start_bridge() {
    [ -x "$BUILD/parley-ws" ] || it_die "$BUILD/parley-ws is not built (make)"
    BRIDGE_DIR=$IT_TMP/bridge${IT_NODE:+-$IT_NODE}
    mkdir -p "$BRIDGE_DIR"
    cp "$BUILD/parley-ws" "$BRIDGE_DIR/parley-ws"
    it_own "$BRIDGE_DIR"
    BRIDGE_PORT=$(free_port)
    # The Environment= and ExecStart= lines of the shipped unit
    # (apache-conf/parley-ws.service), its placeholders filled for this run.
    _sv="${PARLEY_BIN-}|${PARLEY_DB-}|${OLLAMA_SERVER-}|${WS_PORT-}"
    PARLEY_BIN=$BRIDGE_DIR PARLEY_DB=${IT_DB:-$IT_TMP/data/parley.db}
    OLLAMA_SERVER=${IT_UPSTREAM:-$FAKE_LLM_URL} WS_PORT=$BRIDGE_PORT
    PARLEY_WWW=${PARLEY_WWW-} PARLEY_SOCKET=${PARLEY_SOCKET-}
    it_subst apache-conf/parley-ws.service "$BRIDGE_DIR/parley-ws.service"
    IFS='|' read -r PARLEY_BIN PARLEY_DB OLLAMA_SERVER WS_PORT <<EOF_SV
$_sv
EOF_SV
    _env=$(sed -n 's/^Environment=//p' "$BRIDGE_DIR/parley-ws.service")
    _exec=$(sed -n 's/^ExecStart=//p' "$BRIDGE_DIR/parley-ws.service")
    [ -n "$_exec" ] || it_die "parley-ws.service has no ExecStart= line"
    _keep=$SETUP_PIDS
    # shellcheck disable=SC2086
    it_bg "$BRIDGE_DIR/parley-ws.log" $AS_APP env $_env \
        ${IT_APP_CONFIG:+PARLEY_CONFIG="$IT_APP_CONFIG"} $_exec
    SETUP_PIDS=$_keep
    BRIDGE_PID=$IT_LAST_PID
    if ! it_wait_port "$BRIDGE_PORT" "$IT_LAST_PID"; then
        sed 's/^/# parley-ws: /' "$BRIDGE_DIR/parley-ws.log" | tail -n 20
        return 1
    fi
}

# --- lighttpd ---------------------------------------------------------------

start_lighttpd() {
    it_setup_dir lighttpd "$1"
    [ -x "$LIGHTTPD_BIN" ] || it_die "lighttpd is not installed (tools/deps.sh installs lighttpd)"
    it_subst apache-conf/lighttpd-parley.conf "$SETUP_DIR/conf/lighttpd-parley.conf"
    _c=$SETUP_DIR/lighttpd.conf
    {
        echo "# generated by tests/integration/lib.sh"
        echo "server.document-root = \"$PARLEY_WWW\""
        echo "server.bind = \"127.0.0.1\""
        echo "server.port = $HTTP_PORT"
        echo "server.pid-file = \"$SETUP_DIR/run/lighttpd.pid\""
        echo "server.errorlog = \"$SETUP_DIR/logs/error.log\""
        echo "server.modules = ( \"mod_access\" )"
        echo "index-file.names = ( \"index.html\" )"
        echo "mimetype.assign = ( \".html\" => \"text/html; charset=utf-8\", \".js\" => \"text/javascript\","
        echo "                    \".css\" => \"text/css\", \".json\" => \"application/json\", \".svg\" => \"image/svg+xml\","
        echo "                    \".png\" => \"image/png\", \".ico\" => \"image/x-icon\" )"
        if [ -n "$APP_USER" ]; then
            echo "server.username = \"$APP_USER\""
            echo "server.groupname = \"$APP_GROUP\""
        fi
        echo "include \"$SETUP_DIR/conf/lighttpd-parley.conf\""
    } >"$_c"
    it_own "$SETUP_DIR"
    if ! "$LIGHTTPD_BIN" -tt -f "$_c" >"$SETUP_DIR/logs/configtest.log" 2>&1; then
        it_setup_failed "lighttpd: configtest"
    fi
    # The program lighttpd spawns inherits its environment (and adds
    # bin-environment): that is how IT_APP_CONFIG reaches it.
    it_bg "$SETUP_DIR/logs/lighttpd.out" env ${IT_APP_CONFIG:+PARLEY_CONFIG="$IT_APP_CONFIG"} \
        "$LIGHTTPD_BIN" -D -f "$_c"
    it_wait_http "$BASE/" || it_setup_failed lighttpd
}

stop_setup() {
    # shellcheck disable=SC2086
    [ -n "$SETUP_PIDS" ] && it_stop $SETUP_PIDS
    _o=$(it_orphans | while read -r _p; do
        case $(readlink "/proc/$_p/exe" 2>/dev/null) in "$SETUP_DIR"/*) echo "$_p" ;; esac
    done)
    # shellcheck disable=SC2086
    [ -n "$_o" ] && it_stop_orphans $_o
    SETUP_PIDS=""
    it_san_scan
}

# --- PostgreSQL ----------------------------------------------------------------

# Debian's postgresql-15 binaries (initdb and postgres are not on PATH).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PID=""             # the postmaster it_postgres started (our child)
PG_DATA="" PG_PORT="" PG_URL="" PG_SOCKDIR="" PG_LOG=""
PG_INITDB_MS="" PG_START_MS=""

# it_pg_ms — milliseconds of a monotonic-enough clock (GNU date).
it_pg_ms() { echo $(($(date +%s%N) / 1000000)); }

# it_postgres [DATADIR] — starts a private PostgreSQL 15 for this run and
# waits (at most IT_PG_WAIT tenths of a second, 150) until it accepts
# connections. Call it from the script's own shell, not in $(...) or a
# pipeline: the postmaster must be this shell's child so that it_pg_stop
# (run by it_cleanup) can stop and reap it.
#
#   DATADIR (default $IT_TMP/pg) is initdb'ed (superuser "parley", UTF8, C
#   locale, --no-sync) unless it already holds a PostgreSQL 15 cluster, which
#   is then reused (make run's $BUILD/pg). As root, the cluster belongs to
#   and the server runs as APP_USER ($AS_APP): postgres refuses root.
#   The server listens on 127.0.0.1:PG_PORT only (a free port, or
#   IT_PG_PORT) and on a unix socket in PG_SOCKDIR=$IT_TMP/pgsock (mode
#   0700); pg_hba.conf trusts the local socket and 127.0.0.1/32, nothing
#   else (any local account can connect over loopback while it runs: test
#   data only). fsync, synchronous_commit and full_page_writes are off and
#   shared_buffers small (16MB): fast, and a crash may lose the cluster.
#   max_connections is IT_PG_MAX_CONN (100). Settings are command-line
#   options, so a reused cluster gets them too.
#   A database "parley" is created if missing.
#
# Sets and exports PG_URL=postgresql://parley@127.0.0.1:PG_PORT/parley and
# PGHOST/PGPORT/PGUSER/PGDATABASE (psql needs no options); sets PG_PID,
# PG_DATA, PG_LOG (the server's log, $IT_TMP/pg.log), PG_INITDB_MS (0 when
# reused) and PG_START_MS. A port taken between free_port and the bind is
# retried (3 tries). Fails the test file (it_die, with the log) otherwise.
it_postgres() {
    [ -n "$IT_TMP" ] || it_die "it_postgres before it_init"
    [ -z "$PG_PID" ] || it_die "it_postgres: one PostgreSQL per run (pid $PG_PID runs)"
    for _b in initdb postgres pg_isready psql; do
        [ -x "$PG_BIN/$_b" ] || it_die "PostgreSQL 15 is not installed: no $PG_BIN/$_b (tools/deps.sh installs postgresql)"
    done
    PG_DATA=${1:-$IT_TMP/pg}
    PG_SOCKDIR=$IT_TMP/pgsock
    PG_LOG=$IT_TMP/pg.log
    mkdir -p "$PG_SOCKDIR"
    chmod 700 "$PG_SOCKDIR"
    it_own "$PG_SOCKDIR"
    _t0=$(it_pg_ms)
    if [ -f "$PG_DATA/PG_VERSION" ]; then
        [ "$(cat "$PG_DATA/PG_VERSION")" = 15 ] ||
            it_die "$PG_DATA holds a PostgreSQL $(cat "$PG_DATA/PG_VERSION") cluster, not 15"
        PG_INITDB_MS=0
    else
        mkdir -p "$PG_DATA"
        chmod 700 "$PG_DATA"
        it_own "$PG_DATA"
        if ! $AS_APP "$PG_BIN/initdb" -D "$PG_DATA" -U parley -A trust -E UTF8 --locale=C \
                --no-sync --no-instructions >"$IT_TMP/pg-initdb.log" 2>&1; then
            sed 's/^/# initdb: /' "$IT_TMP/pg-initdb.log" | tail -n 20
            it_die "initdb $PG_DATA failed (as ${APP_USER:-$(id -un)})"
        fi
        {
            echo "# generated by tests/integration/lib.sh it_postgres: local socket and loopback only"
            echo "local all all trust"
            echo "host  all all 127.0.0.1/32 trust"
        } >"$PG_DATA/pg_hba.conf"
        it_own "$PG_DATA/pg_hba.conf"
        PG_INITDB_MS=$(($(it_pg_ms) - _t0))
    fi
    _t0=$(it_pg_ms)
    _try=1
    while :; do
        PG_PORT=${IT_PG_PORT:-$(free_port)}
        : >"$PG_LOG"
        $AS_APP "$PG_BIN/postgres" -D "$PG_DATA" \
            -c listen_addresses=127.0.0.1 -c port="$PG_PORT" \
            -c unix_socket_directories="$PG_SOCKDIR" -c unix_socket_permissions=0700 \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c shared_buffers=16MB -c max_connections="${IT_PG_MAX_CONN:-100}" \
            -c logging_collector=off -c log_destination=stderr \
            >>"$PG_LOG" 2>&1 </dev/null &
        PG_PID=$!
        _i=0
        while [ $_i -lt "${IT_PG_WAIT:-150}" ] && it_alive "$PG_PID"; do
            "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U parley -d postgres -t 1 && break
            sleep 0.1; _i=$((_i + 1))
        done
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U parley -d postgres -t 1 && it_alive "$PG_PID" && break
        it_pg_stop
        if [ $_try -lt 3 ] && [ -z "${IT_PG_PORT:-}" ] && grep -q 'could not bind\|Address already in use' "$PG_LOG"; then
            _try=$((_try + 1))
            continue
        fi
        sed 's/^/# postgres: /' "$PG_LOG" | tail -n 20
        it_die "PostgreSQL ($PG_DATA, port $PG_PORT) did not start (log above)"
    done
    PG_START_MS=$(($(it_pg_ms) - _t0))
    PG_URL=postgresql://parley@127.0.0.1:$PG_PORT/parley
    PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=parley PGDATABASE=parley
    export PG_URL PGHOST PGPORT PGUSER PGDATABASE
    _have=$(it_pg_sql "SELECT count(*) FROM pg_database WHERE datname = 'parley'" -d postgres) ||
        it_die "PostgreSQL started but psql cannot query it: $_have"
    if [ "$_have" = 0 ]; then
        _out=$(it_pg_sql "CREATE DATABASE parley" -d postgres 2>&1) || it_die "CREATE DATABASE parley: $_out"
    fi
}

# it_pg_sql SQL [PSQL_OPTION...] — runs SQL (one or more statements) with
# psql against it_postgres's server, database parley (-d other overrides),
# unaligned, tuples only, stopping at the first error (exit status 3 then,
# the error on stderr). Bounded: 5 s to connect, IT_PG_SQL_TIMEOUT (60) s in
# all.
it_pg_sql() {
    [ -n "$PG_PORT" ] || it_die "it_pg_sql before it_postgres"
    _sql=$1; shift
    PGCONNECT_TIMEOUT=5 timeout "${IT_PG_SQL_TIMEOUT:-60}" "$PG_BIN/psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U parley -d parley "$@" -c "$_sql"
}

# it_pg_stop — stops the server it_postgres started, if it still runs: a
# fast shutdown (SIGINT to the postmaster: what pg_ctl stop -m fast sends;
# sessions are ended, nothing waits for clients), at most 10 s, then an
# immediate one (SIGQUIT) for 5 s, then SIGKILL; reaps it. Only our own
# child, by pid. it_cleanup calls it after stopping the other processes.
it_pg_stop() {
    [ -n "$PG_PID" ] || return 0
    kill -INT "$PG_PID" 2>/dev/null || true
    _i=0
    while it_alive "$PG_PID" && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
    if it_alive "$PG_PID"; then
        echo "# PostgreSQL (pid $PG_PID) ignored a fast shutdown for 10 s: immediate shutdown"
        kill -QUIT "$PG_PID" 2>/dev/null || true
        _i=0
        while it_alive "$PG_PID" && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
        it_alive "$PG_PID" && kill -KILL "$PG_PID" 2>/dev/null
    fi
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=""
}

# it_pg_restart — stops it_postgres's server (a fast shutdown: sessions are
# cut) and starts it again on the same data directory and the same port,
# so PG_URL stays valid (tests of what clients see when PostgreSQL
# restarts).
it_pg_restart() {
    [ -n "$PG_PID" ] || it_die "it_pg_restart before it_postgres"
    _port=$PG_PORT
    it_pg_stop
    IT_PG_PORT=$_port it_postgres "$PG_DATA"
}

# --- TAP --------------------------------------------------------------------

# ok NAME CMD... — runs CMD (its output becomes "# " diagnostics).
ok() {
    _name=$1; shift
    TAP_N=$((TAP_N + 1))
    if _out=$("$@" 2>&1); then
        echo "ok $TAP_N - $_name"
        [ -n "$_out" ] && printf '%s\n' "$_out" | sed 's/^/# /'
    else
        echo "not ok $TAP_N - $_name"
        TAP_FAILED=$((TAP_FAILED + 1))
        [ -n "$_out" ] && printf '%s\n' "$_out" | sed 's/^/#   /'
        for _f in "$SETUP_DIR"/logs/*; do
            [ -s "$_f" ] && tail -n 10 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    return 0
}

# it_node_tap PREFIX FILE.mjs — runs FILE with node --test (environment as
# set by the caller); each of its top-level results becomes one of ours,
# "PREFIX" before the name (skips stay skips). When it fails or runs no
# test, its error lines and the tail of the setup's logs follow as
# diagnostics.
it_node_tap() {
    _pre=$1 _file=$2
    _out=$IT_TMP/$(basename "$_file" .mjs).$TAP_N.tap
    # bounded: a client that retries for ever (phoenix.js does) must not
    # hang the suite; IT_NODE_TIMEOUT seconds (600) for the whole file
    timeout "${IT_NODE_TIMEOUT:-600}" node --test --test-reporter=tap "$_file" >"$_out" 2>&1 &&
        _rc=0 || _rc=$?
    _n=0 _bad=0
    while IFS= read -r _line; do
        case $_line in
        "ok "*|"not ok "*)
            _n=$((_n + 1)); TAP_N=$((TAP_N + 1))
            _t=$(printf '%s' "$_line" | sed -E 's/^(not )?ok [0-9]+ - //')
            case $_line in
            "not ok "*) _bad=$((_bad + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $_pre$_t" ;;
            *) echo "ok $TAP_N - $_pre$_t" ;;
            esac ;;
        esac
    done <"$_out"
    if [ "$_rc" -ne 0 ] || [ "$_n" -eq 0 ]; then
        grep -E '^ *(error:|expected:|actual:|  [^ #-][^:]*$)' "$_out" | grep -v '^ *\(at \|stack\)' |
            head -n 40 | sed 's/^/#   /'
        if [ "$_rc" -eq 124 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_pre$(basename "$_file") did not finish within ${IT_NODE_TIMEOUT:-600} s"
        elif [ "$_n" -eq 0 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_pre$(basename "$_file") ran no test (exit $_rc)"
            tail -n 10 "$_out" | sed 's/^/#   /'
        elif [ "$_bad" -eq 0 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_pre$(basename "$_file") exited $_rc after its tests passed"
            tail -n 10 "$_out" | sed 's/^/#   /'
        fi
        for _f in "$SETUP_DIR"/logs/error.log "$SETUP_DIR"/logs/app.log "${BRIDGE_DIR:-$IT_TMP/bridge}"/parley-ws.log; do
            [ -s "$_f" ] && tail -n 5 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    return 0
}

# --- sanitizer reports ---------------------------------------------------------

IT_SAN_RE='ERROR: (AddressSanitizer|LeakSanitizer)|SUMMARY: UndefinedBehaviorSanitizer|:[0-9]+:[0-9]+: runtime error: |Sanitizer has encountered a fatal error|Sanitizer:DEADLYSIGNAL'

# it_san_scan — one "not ok" line for each sanitizer report that appeared
# since the last scan in a file where the programs started here write them:
# $IT_TMP/san/* (ASan and LSan, it_init's log_path), the setups' logs
# ($IT_TMP/*/logs/*: lighttpd.out and error.log hold a spawned
# parley.fcgi's stderr, app.log the external one's), the bridges' logs
# ($IT_TMP/bridge*/*.log) and any file listed in IT_SAN_LOGS. The line names
# the process (the report file's program and pid, or the log's) and its
# first 24 lines follow as diagnostics. Then a "#" line for each parley
# program that it_stop had to SIGKILL (its leak check did not run).
# Reported counts are kept in $IT_TMP/san.seen.
it_san_scan() {
    [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ] || return 0
    _seen=$IT_TMP/san.seen
    [ -f "$_seen" ] || : >"$_seen"
    # shellcheck disable=SC2086
    for _f in "$IT_TMP"/san/* "$IT_TMP"/*/logs/* "$IT_TMP"/bridge*/*.log ${IT_SAN_LOGS:-}; do
        { [ -f "$_f" ] && [ -s "$_f" ]; } || continue
        _c=$(grep -cE "$IT_SAN_RE" "$_f" 2>/dev/null) || _c=0
        [ "$_c" -gt 0 ] || continue
        _was=$(awk -F '\t' -v f="$_f" '$1 == f { n = $2 } END { print n + 0 }' "$_seen")
        [ "$_c" -gt "$_was" ] || continue
        printf '%s\t%s\n' "$_f" "$_c" >>"$_seen"
        _rel=${_f#"$IT_TMP"/}
        case $_rel in
        san/*) _who=$(echo "${_rel#san/}" | sed -E 's/^[a-z]+\.(.*)\.([0-9]+)$/\1 (pid \2)/') ;;
        bridge*) _who="parley-ws ($_rel)" ;;
        */logs/lighttpd.out) _who="parley.fcgi spawned by lighttpd ($_rel)" ;;
        */logs/error.log) _who="parley.fcgi spawned by the web server ($_rel)" ;;
        */logs/app.log) _who="parley.fcgi --socket ($_rel)" ;;
        *) _who=$_rel ;;
        esac
        # the lines after the last report already seen in this file
        _from=$(grep -nE "$IT_SAN_RE" "$_f" | sed -n "$((_was + 1))p" | cut -d: -f1)
        _what=$(sed -n "${_from}p" "$_f" | sed -E 's/^==[^ ]*==//; s/^[^ ]*:[0-9]+:[0-9]+: //' | cut -c1-120)
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - sanitizer report from $_who: $_what"
        sed -n "$((_from > 2 ? _from - 2 : 1)),$((_from + 24))p" "$_f" | sed 's/^/#   /'
    done
    for _k in $IT_SAN_KILLED; do
        echo "# $_k did not exit within $((${IT_STOP_GRACE:-100} / 20)) s of SIGTERM: SIGKILLed, its leak check did not run"
    done
    IT_SAN_KILLED=""
}

it_done() {
    # Stop what still runs (the bridge, the simulated LLM, ...) so that the
    # leak checks run at their exit and are scanned before the plan.
    # shellcheck disable=SC2086
    [ -n "$IT_PIDS" ] && it_stop $IT_PIDS
    _o=$(it_orphans)
    # shellcheck disable=SC2086
    [ -n "$_o" ] && it_stop_orphans $_o
    IT_PIDS=""
    it_san_scan
    echo "1..$TAP_N"
    [ "$TAP_FAILED" -eq 0 ]
}
