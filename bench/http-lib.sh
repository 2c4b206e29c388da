# http-lib.sh — shared setup of bench/http-bench.sh and bench/longpoll-bench.sh.
#
# Sourced (POSIX sh) from the repository root after BUILD is set. It sources
# the integration harness (tests/integration/lib.sh: the real web servers on
# free loopback ports, configured with the SHIPPED apache-conf/ snippets) and
# adds, for benchmarks only:
#
#   bench_deps PKG...      apt-get install the Debian packages that are
#                          missing (root only; else says what to install)
#   bench_machine TITLE CMD    the Markdown header: machine, date, versions, command
#   start_php_fpm N        php-fpm (pm = static, N workers) on a unix socket in
#                          the temp dir, temp config, no system service;
#                          sets PHP_SOCK. stop_php_fpm stops it.
#   BENCH_PHP=1            the web server of the next start_* also routes
#                          *.php to $PHP_SOCK (Apache: SetHandler to
#                          mod_proxy_fcgi; lighttpd: mod_fastcgi), appended
#                          to the copy of the shipped snippet
#   BENCH_APP_THREADS=N    parley.fcgi gets --threads N instead of the
#                          snippet's value (lighttpd bin-path, the service's
#                          ExecStart for mod_proxy_fcgi)
#   BENCH_APACHE_WORKERS=N Apache's MaxRequestWorkers (ThreadsPerChild 64),
#                          instead of the harness's 128
#   BENCH_APACHE_ONE_CHILD=1   with BENCH_APACHE_WORKERS: all of them in ONE
#                          child process (ThreadLimit = ThreadsPerChild = N).
#                          The event MPM closes the keep-alive connections of
#                          a child whose threads are all busy; with many
#                          waiting long-polls, children of 64 fill up one by
#                          one and the client sees its kept connections
#                          closed (docs/PERFORMANCE.md, Generations at once)
#   BENCH_FCGID_MAXREQ=N   FcgidMaxRequestsPerProcess instead of the snippet's
#                          10000 (0: no limit)
#   BENCH_PROXY_REUSE=on|off   mod_proxy_fcgi's ProxyPass lines with or without
#                          enablereuse=on, whatever the shipped snippet says
#                          (unset: as shipped)
#   BENCH_FLOOR=PROGRAM    the next start_* also puts PROGRAM (bench/rest-floor,
#                          built) behind the web server at /floor/, exactly
#                          the way the shipped snippet puts parley.fcgi at
#                          /api/ (bench_floor_* below): lighttpd, a second
#                          fastcgi.server block made from parley's (same
#                          bin-path arguments, max-procs, backlog, options,
#                          environment); mod_fcgid, parley's <Directory>
#                          block for the program, under the same Fcgid*
#                          settings, with an Alias; mod_proxy_fcgi, started
#                          with the ExecStart= line of parley-fcgi.service on
#                          a socket of its own, and parley's ProxyPassMatch
#                          line for /floor/. The program is copied to
#                          $PARLEY_BIN/rest-floor; it answers with the bytes
#                          of $PARLEY_BIN/rest-floor.response, a copy of
#                          $BENCH_FLOOR_RESPONSE (bench_floor_fetch)
#   app_pids               pids of the running parley.fcgi copies of the setup
#   floor_pids             pids of the running rest-floor copies of the setup
#   cpu_ticks PID...       utime + stime of the processes (clock ticks), summed
#
# The overrides of it_subst and apache_run below are the harness's own
# functions plus the appended lines; everything else is the harness's.

. tests/integration/lib.sh

bench_deps() {
    _missing=""
    for _p in "$@"; do
        dpkg-query -W -f '${Status}' "$_p" 2>/dev/null | grep -q 'install ok installed' ||
            _missing="$_missing $_p"
    done
    [ -z "$_missing" ] && return 0
    if [ "$(id -u)" = 0 ]; then
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $_missing \
            >/dev/null 2>&1 && return 0
    fi
    echo "bench: missing Debian packages:$_missing (apt-get install$_missing)" >&2
    return 1
}

bench_machine() {
    _cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
    _mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    echo "## $1"
    echo
    echo "- Date: $(date '+%Y-%m-%d %H:%M %Z')"
    echo "- CPU: ${_cpu:-unknown}, $(nproc) cores online; RAM: $_mem; kernel $(uname -sr)"
    echo "- Apache $("$APACHE_BIN" -v 2>/dev/null | sed -n 's/^Server version: Apache\/\([^ ]*\).*/\1/p')," \
         "mod_fcgid $(dpkg-query -W -f '${Version}' libapache2-mod-fcgid 2>/dev/null)," \
         "lighttpd $("$LIGHTTPD_BIN" -v 2>/dev/null | sed -n 's/^lighttpd\/\([^ ]*\).*/\1/p')," \
         "SQLite $(pkg-config --modversion sqlite3 2>/dev/null)${2:+, $2}"
    echo "- Command: \`$3\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "- Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)." \
         "The load generator and every server share these $(nproc) cores."
    echo
}

# --- hooks into the harness ---------------------------------------------------

BENCH_PHP=${BENCH_PHP:-0}
BENCH_APP_THREADS=${BENCH_APP_THREADS:-}
BENCH_APACHE_WORKERS=${BENCH_APACHE_WORKERS:-}
BENCH_FCGID_MAXREQ=${BENCH_FCGID_MAXREQ:-}
BENCH_PROXY_REUSE=${BENCH_PROXY_REUSE:-}
PHP_SOCK=""

it_subst() {
    it_subst_shipped "$1" "$2"
    case $1 in
    */parley-fcgid.conf)
        if [ -n "$BENCH_FCGID_MAXREQ" ]; then
            sed -i "s/^FcgidMaxRequestsPerProcess .*/FcgidMaxRequestsPerProcess $BENCH_FCGID_MAXREQ/" "$2"
        fi ;;
    */parley-proxy-fcgi.conf)
        # on: every ProxyPass line gets enablereuse=on; off: none has it
        case $BENCH_PROXY_REUSE in
        on) sed -i -e '/^ProxyPass/{/enablereuse=/!s/$/ enablereuse=on/}' "$2" ;;
        off) sed -i -e '/^ProxyPass/s/ enablereuse=[a-zA-Z]*//' "$2" ;;
        esac ;;
    */parley-fcgi.service | */lighttpd-parley.conf)
        if [ -n "$BENCH_APP_THREADS" ]; then
            sed -i "s/--threads [0-9]*/--threads $BENCH_APP_THREADS/" "$2"
        fi ;;
    esac
    [ -n "${BENCH_FLOOR:-}" ] && bench_floor_subst "$1" "$2"
    if [ "$BENCH_PHP" = 1 ]; then
        case $1 in
        */lighttpd-parley.conf)
            {
                echo ""
                echo "# bench/http-lib.sh: *.php to the benchmark's php-fpm"
                echo "\$HTTP[\"url\"] =~ \"\\.php\$\" {"
                echo "    fastcgi.server = ( \".php\" => ( ( \"socket\" => \"$PHP_SOCK\", \"check-local\" => \"enable\" ) ) )"
                echo "}"
            } >>"$2" ;;
        */parley-fcgid.conf | */parley-proxy-fcgi.conf)
            {
                echo ""
                echo "# bench/http-lib.sh: *.php to the benchmark's php-fpm"
                echo "<FilesMatch \"\\.php\$\">"
                echo "    SetHandler \"proxy:unix:$PHP_SOCK|fcgi://localhost\""
                echo "</FilesMatch>"
            } >>"$2" ;;
        esac
    fi
}

apache_run() {
    _c=$SETUP_DIR/httpd.conf
    if [ "$BENCH_PHP" = 1 ] && ! grep -q '^LoadModule proxy_fcgi_module' "$_c"; then
        if ! grep -q '^LoadModule proxy_module' "$_c"; then
            sed -i "0,/^LoadModule /s||LoadModule proxy_module \"$APACHE_MODULES/mod_proxy.so\"\n&|" "$_c"
        fi
        sed -i "/^LoadModule proxy_module/a LoadModule proxy_fcgi_module \"$APACHE_MODULES/mod_proxy_fcgi.so\"" "$_c"
    fi
    if [ -n "$BENCH_APACHE_WORKERS" ]; then
        _sl=$(( (BENCH_APACHE_WORKERS + 63) / 64 ))
        sed -i -e "s/^StartServers .*/StartServers $_sl/" -e "s/^ServerLimit .*/ServerLimit $_sl/" \
            -e "s/^ThreadsPerChild .*/ThreadsPerChild 64/" \
            -e "s/^MaxRequestWorkers .*/MaxRequestWorkers $((_sl * 64))/" \
            -e "s/^MinSpareThreads .*/MinSpareThreads $((_sl * 64))/" \
            -e "s/^MaxSpareThreads .*/MaxSpareThreads $((_sl * 64))/" "$_c"
        if [ "${BENCH_APACHE_ONE_CHILD:-}" = 1 ]; then
            _w=$BENCH_APACHE_WORKERS
            sed -i -e "/^ThreadLimit /d" -e "s/^StartServers .*/StartServers 1/" \
                -e "s/^ServerLimit .*/ServerLimit 1\nThreadLimit $_w/" \
                -e "s/^ThreadsPerChild .*/ThreadsPerChild $_w/" \
                -e "s/^MaxRequestWorkers .*/MaxRequestWorkers $_w/" \
                -e "s/^MinSpareThreads .*/MinSpareThreads $_w/" \
                -e "s/^MaxSpareThreads .*/MaxSpareThreads $_w/" "$_c"
        fi
    fi
    # the harness's apache_run:
    it_own "$SETUP_DIR"
    if ! "$APACHE_BIN" -d "$SETUP_DIR" -f "$SETUP_DIR/httpd.conf" -t >"$SETUP_DIR/logs/configtest.log" 2>&1; then
        it_setup_failed "apache2 ($1): configtest"
    fi
    # (not the harness's: the floor's own service, started the way
    # start_proxy_fcgi starts parley.fcgi, before Apache)
    if [ -n "${BENCH_FLOOR:-}" ] && [ "$1" = mod_proxy_fcgi ]; then
        bench_floor_service
    fi
    it_bg "$SETUP_DIR/logs/apache2.out" "$APACHE_BIN" -d "$SETUP_DIR" -f "$SETUP_DIR/httpd.conf" -DFOREGROUND
    it_wait_http "$BASE/" || it_setup_failed "apache2 ($1)"
}

# --- php-fpm ------------------------------------------------------------------

PHP_FPM_BIN=${PHP_FPM_BIN:-$(command -v php-fpm8.2 || ls /usr/sbin/php-fpm* 2>/dev/null | head -n 1)}
PHP_FPM_PID=""

start_php_fpm() {
    _d=$IT_TMP/php-fpm
    mkdir -p "$_d"
    PHP_SOCK=$_d/php.sock
    {
        echo "[global]"
        echo "pid = $_d/php-fpm.pid"
        echo "error_log = $_d/php-fpm.log"
        echo "daemonize = no"
        echo "[bench]"
        if [ -n "$APP_USER" ]; then
            echo "user = $APP_USER"
            echo "group = $APP_GROUP"
            echo "listen.owner = $APP_USER"
            echo "listen.group = $APP_GROUP"
        fi
        echo "listen = $PHP_SOCK"
        echo "listen.mode = 0660"
        echo "listen.backlog = 511"
        echo "pm = static"
        echo "pm.max_children = $1"
        echo "pm.max_requests = 0"
        echo "env[PARLEY_DB] = ${IT_DB:-$IT_TMP/data/parley.db}"
        echo "catch_workers_output = yes"
    } >"$_d/php-fpm.conf"
    it_own "$_d"
    "$PHP_FPM_BIN" -t -y "$_d/php-fpm.conf" >"$_d/configtest.log" 2>&1 ||
        it_die "php-fpm configtest: $(cat "$_d/configtest.log")"
    _keep=$SETUP_PIDS
    it_bg "$_d/php-fpm.out" "$PHP_FPM_BIN" -F -y "$_d/php-fpm.conf"
    PHP_FPM_PID=$IT_LAST_PID
    SETUP_PIDS=$_keep
    it_wait_socket "$PHP_SOCK" || it_die "php-fpm did not start: $(cat "$_d/php-fpm.log" 2>/dev/null)"
}

stop_php_fpm() {
    [ -n "$PHP_FPM_PID" ] && it_stop "$PHP_FPM_PID"
    PHP_FPM_PID=""
}

# --- processes ----------------------------------------------------------------

# The parley.fcgi processes of the current setup (copies under SETUP_DIR).
app_pids() {
    for _d in /proc/[0-9]*; do
        _exe=$(readlink "$_d/exe" 2>/dev/null) || continue
        case $_exe in "$SETUP_DIR"/*/rest-floor) ;; "$SETUP_DIR"/*) echo "${_d#/proc/}" ;; esac
    done
}

# The rest-floor copies of the current setup (bench_floor_subst).
floor_pids() {
    for _d in /proc/[0-9]*; do
        _exe=$(readlink "$_d/exe" 2>/dev/null) || continue
        case $_exe in "$SETUP_DIR"/*/rest-floor) echo "${_d#/proc/}" ;; esac
    done
}

# Sum of utime + stime (fields 14, 15 of /proc/PID/stat) in clock ticks.
cpu_ticks() {
    _t=0
    for _p in "$@"; do
        _s=$(sed 's/^.*) //' "/proc/$_p/stat" 2>/dev/null) || continue
        # after "pid (comm) ": field 3 is state, so utime/stime are 12/13 here
        _u=$(echo "$_s" | cut -d' ' -f12)
        _k=$(echo "$_s" | cut -d' ' -f13)
        _t=$((_t + ${_u:-0} + ${_k:-0}))
    done
    echo "$_t"
}

# cpu_snapshot FILE — writes "group pid ticks" (utime + stime) for the
# setup's processes: web (the harness's server pids and their children),
# app (the parley.fcgi copies), php (php-fpm master and workers), floor
# (the rest-floor copies, with BENCH_FLOOR).
cpu_snapshot() {
    _app=" $(app_pids | tr '\n' ' ') "
    _flr=" $(floor_pids | tr '\n' ' ') "
    {
        for _p in $SETUP_PIDS; do echo "$_p"; pgrep -P "$_p" || true; done | sort -u |
            while read -r _q; do
                case "$_app$_flr" in *" $_q "*) ;; *) echo "web $_q" ;; esac
            done
        for _q in $_app; do echo "app $_q"; done
        for _q in $_flr; do echo "floor $_q"; done
        if [ -n "$PHP_FPM_PID" ]; then
            echo "php $PHP_FPM_PID"
            pgrep -P "$PHP_FPM_PID" | sed 's/^/php /' || true
        fi
    } | while read -r _g _q; do
        _s=$(sed 's/^.*) //' "/proc/$_q/stat" 2>/dev/null) || continue
        echo "$_g $_q $(echo "$_s" | awk '{ print $12 + $13 }')"
    done >"$1"
}

# cpu_delta BEFORE AFTER — "web_ms app_ms php_ms floor_ms" between two snapshots.
# A process that ended in between is not counted (mod_fcgid replaces its
# processes; see the report); one that started counts whole.
cpu_delta() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { b[$2] = $3; next }
        { s[$1] += ($2 in b) ? $3 - b[$2] : $3 }
        END { printf "%d %d %d %d\n", s["web"] * 1000 / hz, s["app"] * 1000 / hz, s["php"] * 1000 / hz,
              s["floor"] * 1000 / hz }' "$1" "$2"
}

# bench_reap — stops what is left of the current setup after stop_setup:
# processes whose command line names SETUP_DIR (an Apache child whose
# parent was killed after its grace period outlives it otherwise).
bench_reap() {
    [ -n "$SETUP_DIR" ] || return 0
    _left=""
    for _d in /proc/[0-9]*; do
        { tr '\0' ' ' <"$_d/cmdline"; } 2>/dev/null | grep -qF "$SETUP_DIR/" && _left="$_left ${_d#/proc/}"
    done
    # shellcheck disable=SC2086
    [ -z "$_left" ] || it_stop $_left
    return 0
}

# --- the floor: bench/rest-floor behind the web server like parley.fcgi -----------

# bench_floor_subst SHIPPED COPY — (it_subst, with BENCH_FLOOR set) adds to
# the copy of the shipped snippet the floor's route, made from parley's
# own lines with parley.fcgi → rest-floor and parley.sock → rest-floor.sock,
# and copies the program next to parley.fcgi.
bench_floor_subst() {
    case $1 in
    */lighttpd-parley.conf | */parley-fcgid.conf | */parley-proxy-fcgi.conf) ;;
    *) return 0 ;;
    esac
    [ -x "$BENCH_FLOOR" ] || it_die "$BENCH_FLOOR is not built"
    cp "$BENCH_FLOOR" "$PARLEY_BIN/rest-floor"
    [ -n "${BENCH_FLOOR_RESPONSE:-}" ] && cp "$BENCH_FLOOR_RESPONSE" "$PARLEY_BIN/rest-floor.response"
    _fl='s/parley\.fcgi/rest-floor/g; s/parley\.sock/rest-floor.sock/g'
    case $1 in
    */lighttpd-parley.conf)
        # parley's fastcgi.server block: from its $HTTP["url"] line to the
        # closing brace at the start of a line
        _blk=$(sed -n '/^else \$HTTP\["url"\] =~ "^\/(api|/,/^}/p' "$2")
        [ -n "$_blk" ] || it_die "$1: parley's fastcgi.server block not found"
        {
            echo ""
            echo "# bench/http-lib.sh: the floor (bench/rest-floor.c), parley's block for /floor/"
            printf '%s\n' "$_blk" | sed -e "$_fl" \
                -e '1s/^else \$HTTP\["url"\] =~ "[^"]*"/$HTTP["url"] =~ "^\/floor\/"/'
        } >>"$2" ;;
    */parley-fcgid.conf)
        _blk=$(sed -n "/^<Directory \"$(printf '%s' "$PARLEY_BIN" | sed 's/[]\/$*.^[]/\\&/g')\">/,/^<\/Directory>/p" "$2")
        [ -n "$_blk" ] || it_die "$1: parley's <Directory> block not found"
        {
            echo ""
            echo "# bench/http-lib.sh: the floor (bench/rest-floor.c), as parley.fcgi is run"
            grep '^Alias "/api/"' "$2" | sed -e "$_fl" -e 's|/api/|/floor/|g'
            printf '%s\n' "$_blk" | sed -e "$_fl"
        } >>"$2" ;;
    */parley-proxy-fcgi.conf)
        # (libfcgi keeps a thread on every kept connection: enablereuse,
        # when PROXY_REUSE=on asks for it, is left off for the floor)
        _ln=$(grep '^ProxyPassMatch "^/api/' "$2")
        [ -n "$_ln" ] || it_die "$1: parley's ProxyPassMatch line for /api/ not found"
        {
            echo ""
            echo "# bench/http-lib.sh: the floor (bench/rest-floor.c), parley's /api/ line for /floor/"
            printf '%s\n' "$_ln" | sed -e "$_fl" -e 's|/api/|/floor/|g' -e 's/ enablereuse=[a-zA-Z]*//'
            echo "<LocationMatch \"^/floor/\">"
            echo "    CGIPassAuth On"
            echo "</LocationMatch>"
        } >>"$2" ;;
    esac
}

# bench_floor_service — (apache_run for mod_proxy_fcgi) starts the floor
# with the Environment= and ExecStart= lines of the setup's copy of
# parley-fcgi.service (--threads and --socket-mode included), its own
# socket, as start_proxy_fcgi starts parley.fcgi.
bench_floor_service() {
    _svc=$SETUP_DIR/conf/parley-fcgi.service
    _fl='s/parley\.fcgi/rest-floor/g; s/parley\.sock/rest-floor.sock/g'
    _env=$(sed -n 's/^Environment=//p' "$_svc")
    _exec=$(sed -n 's/^ExecStart=//p' "$_svc" | sed -e "$_fl")
    [ -n "$_exec" ] || it_die "parley-fcgi.service has no ExecStart= line"
    # shellcheck disable=SC2086
    it_bg "$SETUP_DIR/logs/floor.log" $AS_APP env $_env $_exec
    it_wait_socket "$SETUP_DIR/run/rest-floor.sock" || it_setup_failed "rest-floor --socket (ExecStart of parley-fcgi.service)"
}

# bench_floor_fetch URI — sets BENCH_FLOOR_RESPONSE to a file holding what
# parley.fcgi writes for GET URI (status, headers, body: its FastCGI stdout,
# byte for byte), asked by `rest-floor --fetch` from a parley.fcgi of its
# own (a copy of $BUILD/parley.fcgi --socket, as the app account, on the
# database IT_DB), stopped after. Call it before the start_* whose floor
# should answer with those bytes.
bench_floor_fetch() {
    _fd=$IT_TMP/floor-fetch
    mkdir -p "$_fd"
    cp "$BUILD/parley.fcgi" "$_fd/parley.fcgi"
    it_own "$_fd"
    _keep=$SETUP_PIDS
    # shellcheck disable=SC2086
    it_bg "$_fd/parley.log" $AS_APP env PARLEY_DB="${IT_DB:-$IT_TMP/data/parley.db}" \
        OLLAMA_SERVER="${IT_UPSTREAM:-$FAKE_LLM_URL}" "$_fd/parley.fcgi" --socket "$_fd/parley.sock" --threads 1
    _fp=$IT_LAST_PID
    SETUP_PIDS=$_keep
    it_wait_socket "$_fd/parley.sock" || it_die "parley.fcgi --socket for the floor's bytes: $(cat "$_fd/parley.log")"
    "$BENCH_FLOOR" --fetch "$_fd/parley.sock" "$1" >"$_fd/response" ||
        it_die "rest-floor --fetch $1 failed: $(cat "$_fd/parley.log")"
    it_stop "$_fp"
    BENCH_FLOOR_RESPONSE=$_fd/response
}
