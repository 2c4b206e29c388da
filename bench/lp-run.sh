#!/bin/sh
# lp-run.sh — long-poll fan-out, Parley side by side with Nchan's long-poll,
# in one run with the same client (bench/lp-fanout.mjs). Prints Markdown for
# docs/PERFORMANCE.md (machine, date, commit, command, one row per run, the
# details).
#
#   bench/lp-run.sh                           (BUILD=build-x for another build dir)
#   SETUPS="nchan lighttpd proxy_fcgi fcgid fcgid_bridge"   which servers (default: all)
#   FANOUT="200 20 100"   scenario 1: viewers, events/s, events (ONE channel; 0 viewers: skip)
#   DESK="20 100 2 20"    scenario 2: viewers per channel, channels, events/s and
#                         events PER CHANNEL (default 2,000 viewers, 200 events/s
#                         in all: 20/s per channel would be 40,000 deliveries/s,
#                         beyond what 2 cores carry for any of them; "" skips)
#   SIZE=64               bytes of each event's text
#   POLL_DELAY=0          ms a viewer waits after an answer with events before its
#                         next GET (lp-fanout.mjs --poll-delay; batching by the client)
#   APACHE_WORKERS=N      Apache MaxRequestWorkers (default: the most viewers + 64;
#                         every waiting long-poll holds an Apache worker, under
#                         mod_proxy_fcgi and when mod_proxy_http passes it to the bridge)
#
# Setups (rows):
#   nchan         nginx + libnginx-mod-nchan on loopback, a temporary config:
#                 /pub/<ch> nchan_publisher, /sub/<ch> nchan_subscriber longpoll
#                 (buffer of every event of the run, first message "oldest",
#                 25 s wait); apt-get installs nginx-light and
#                 libnginx-mod-nchan when missing (root only, else skipped)
#   lighttpd      lighttpd + mod_fastcgi spawning parley.fcgi (shipped
#                 lighttpd-parley.conf, its --threads 16)
#   proxy_fcgi    Apache + mod_proxy_fcgi, parley.fcgi as parley-fcgi.service
#                 starts it (shipped, --threads 32)
#   fcgid         Apache + mod_fcgid (shipped parley-fcgid.conf: one request per
#                 process, 64 processes): every waiting viewer holds a process
#   fcgid_bridge  the same + parley-websocket.conf, the bridge running
#                 (parley-ws as parley-ws.service starts it): /api/poll/ goes
#                 to the bridge (docs/ws-bridge.md, "Long-poll")
#   floor_lighttpd, floor_proxy_fcgi   the FLOOR (not Parley): lighttpd /
#                 Apache + mod_proxy_fcgi with the shipped snippet exactly as
#                 above, but bench/lp-floor.c in parley.fcgi's place — a
#                 minimal libfcgi responder keeping messages in memory, one
#                 thread per waiting request, speaking Nchan's long-poll under
#                 /api/ (the client in nchan mode, --path-prefix /api): the
#                 same delivery with Parley's part removed
#   lighttpd_bridge  NOT a shipped setup (not in the default list): lighttpd
#                 with the shipped snippet but /api/poll/ added to the paths its
#                 mod_proxy sends to the bridge, the bridge running: what the
#                 bridge's long-poll would cost behind lighttpd
# Each Parley setup is started by the integration harness
# (tests/integration/lib.sh via bench/http-lib.sh) with the SHIPPED
# snippets on a free loopback port and its own fresh database; the only
# changes are Apache's MaxRequestWorkers (above) and lighttpd's
# server.max-fds / max-connections (16,384 / 8,000; a wrapper adds them to
# the generated config), so that descriptors — a client and a backend
# connection per waiting viewer — are not what limits 2,000 viewers.
#
# Server CPU of a row = every process of the setup and their children,
# from /proc/<pid>/stat over the delivery window (bench/lp-fanout.mjs
# explains how ended processes count): lighttpd + parley.fcgi; Apache (all
# its processes, mod_fcgid's manager and its parley.fcgi) + the parley.fcgi
# service; + parley-ws with the bridge; nginx master + workers for Nchan.
# Not counted: the client, and the publisher — ws-pub's appends for Parley
# (a separate process); for Nchan the Node publisher is not counted, but
# nginx's handling of its POSTs is (that is Nchan's publish path).
#
# Bounded: every run is under timeout(1) (events/rate + 90 s); about
# 6–8 minutes with the defaults on 2 cores. Stops only what it started.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
SETUPS=${SETUPS:-"nchan floor_lighttpd lighttpd floor_proxy_fcgi proxy_fcgi fcgid fcgid_bridge"}
FANOUT=${FANOUT-"200 20 100"}
DESK=${DESK-"20 100 2 20"}
SIZE=${SIZE:-64}
POLL_DELAY=${POLL_DELAY:-0}
PD=""
[ "$POLL_DELAY" != 0 ] && PD=" POLL_DELAY=$POLL_DELAY"

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" "$BUILD/parley" \
        "$BUILD/bench/ws-pub" "$BUILD/bench/lp-floor" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/lp-run.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
. bench/http-lib.sh
bench_deps apache2 lighttpd libapache2-mod-fcgid || exit 1
NCHAN=1
if [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! command -v nginx >/dev/null 2>&1; then
    bench_deps nginx-light libnginx-mod-nchan || NCHAN=0
fi

# The runs: "label viewers channels rate count" (rate and count per channel).
RUNS=""
set -- $FANOUT
[ $# = 3 ] && [ "$1" -gt 0 ] && RUNS="$1 1 $2 $3"
set -- $DESK
[ $# = 4 ] && RUNS="$RUNS${RUNS:+,}$1 $2 $3 $4"
MOST=1
oifs=$IFS; IFS=,
for r in $RUNS; do
    IFS=$oifs
    set -- $r
    [ $(($1 * $2)) -gt $MOST ] && MOST=$(($1 * $2))
done
IFS=$oifs

it_init
IT_UPSTREAM=http://127.0.0.1:9      # nothing generates: the events come from the publisher
IT_NO_WS=1
IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "WEBSOCKET_MAX_CONNECTIONS=$((MOST + 100))"
} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG
BENCH_APACHE_WORKERS=${APACHE_WORKERS:-$((MOST + 64))}
BENCH_APACHE_ONE_CHILD=1        # else children of 64 fill up and close kept connections
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

# lighttpd through a wrapper that raises its descriptor and connection
# limits in the generated config (the harness writes it and starts lighttpd
# at once); exec keeps the pid the harness records.
LIGHTTPD_REAL=$LIGHTTPD_BIN
LIGHTTPD_BIN=$IT_TMP/lighttpd-wrap
cat >"$LIGHTTPD_BIN" <<EOF
#!/bin/sh
for a in "\$@"; do
    case \$prev in -f) grep -q '^server.max-fds' "\$a" ||
        printf 'server.max-fds = 16384\nserver.max-connections = 8000\n' >>"\$a"
        # lighttpd_bridge: long-poll to the bridge too (the snippet's
        # WebSocket block, its regex widened)
        [ "\${LP_POLL_TO_BRIDGE:-0}" = 1 ] && ! grep -q 'api/poll/|' "\${a%/*}/conf/lighttpd-parley.conf" &&
            sed -i 's#\^/(api/websocket/|#^/(api/websocket/|api/poll/|#' \
            "\${a%/*}/conf/lighttpd-parley.conf" ;; esac
    prev=\$a
done
exec "$LIGHTTPD_REAL" "\$@"
EOF
chmod 755 "$LIGHTTPD_BIN"

bench_machine "Long-poll fan-out, Parley and Nchan (\`bench/lp-run.sh\`)" \
    "node $(node --version), nginx $(nginx -v 2>&1 | sed 's/.*\///'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo none)" \
    "BUILD=${BUILD#"$(pwd)/"} SETUPS=\"$SETUPS\" FANOUT=\"$FANOUT\" DESK=\"$DESK\" SIZE=$SIZE$PD bench/lp-run.sh"
echo "Viewers × channels long-poll clients (\`bench/lp-fanout.mjs\`, one keep-alive socket each); rate and"
echo "events per channel, round-robin over the channels; each event stamped with its send time (Parley:"
echo "\`ws-pub\`'s evlog_append; Nchan: POST /pub/<ch>). Latency = the viewer has the answer − that time,"
echo "over the first delivery of every event to every viewer, ms. Lost = expected − distinct events"
echo "received; duplicated = the same event again. Server CPU = user + system seconds of every server"
echo "process and its children over the delivery window (/proc/<pid>/stat; the publisher is not in it)."
echo "Shipped snippets and thread counts; Apache MaxRequestWorkers $BENCH_APACHE_WORKERS (one child)."
[ -n "$PD" ] && echo "Each viewer waits $POLL_DELAY ms after an answer with events before its next GET."
echo
echo "| setup | viewers × channels | rate × events | events expected / delivered | lost | duplicated | p50 | p99 | max | server CPU s | CPU µs per delivered event |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"

DETAILS=$IT_TMP/details
: >"$DETAILS"
rc=0
NGINX_PID="" NGINX_DIR=""

start_nchan() {
    NGINX_DIR=$IT_TMP/nchan
    mkdir -p "$NGINX_DIR/body" "$NGINX_DIR/proxy" "$NGINX_DIR/fastcgi" "$NGINX_DIR/uwsgi" "$NGINX_DIR/scgi"
    _port=$(free_port)
    _buf=$(($2 + 16))
    {
        echo "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"
        [ "$(id -u)" = 0 ] && echo "user root;"
        echo "worker_processes auto;"
        echo "worker_rlimit_nofile 65536;"
        echo "pid $NGINX_DIR/nginx.pid;"
        echo "error_log $NGINX_DIR/error.log warn;"
        echo "events { worker_connections 16384; }"
        echo "http {"
        echo "  access_log off;"
        echo "  keepalive_requests 1000000; keepalive_timeout 120s;"
        echo "  client_body_temp_path $NGINX_DIR/body; proxy_temp_path $NGINX_DIR/proxy;"
        echo "  fastcgi_temp_path $NGINX_DIR/fastcgi; uwsgi_temp_path $NGINX_DIR/uwsgi; scgi_temp_path $NGINX_DIR/scgi;"
        echo "  server {"
        echo "    listen 127.0.0.1:$_port;"
        echo "    location ~ ^/pub/(\\w+)\$ { nchan_publisher; nchan_channel_id \$1;"
        echo "      nchan_message_buffer_length $_buf; nchan_message_timeout 10m; }"
        echo "    location ~ ^/sub/(\\w+)\$ { nchan_subscriber longpoll; nchan_channel_id \$1;"
        echo "      nchan_subscriber_first_message oldest; nchan_subscriber_timeout 25s; }"
        echo "  }"
        echo "}"
    } >"$NGINX_DIR/nginx.conf"
    _keep=$SETUP_PIDS
    it_bg "$NGINX_DIR/nginx.out" nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -g 'daemon off;'
    SETUP_PIDS=$_keep
    NGINX_PID=$IT_LAST_PID
    BASE=http://127.0.0.1:$_port
    it_wait_port "$_port" "$NGINX_PID"
}

oifs=$IFS
for setup in $SETUPS; do
    IFS=,
    for r in $RUNS; do
        IFS=$oifs
        set -- $r
        v=$1 ch=$2 rt=$3 cnt=$4
        roots="" mode=parley label=$setup bpid="" pprefix=""
        IT_DB=$IT_TMP/data/$setup-$v-$ch.db
        case $setup in
        nchan)
            if [ "$NCHAN" = 0 ]; then
                echo "| nchan | (not installed) | | | | | | | | | |"
                continue
            fi
            mode=nchan
            if ! start_nchan "$v" "$cnt"; then
                echo "| nchan | (did not start) | | | | | | | | | |"; rc=1
                [ -n "$NGINX_PID" ] && it_stop "$NGINX_PID"
                continue
            fi
            roots=$NGINX_PID ;;
        lighttpd|proxy_fcgi|fcgid)
            "start_$setup" "$BUILD/parley.fcgi"
            label="parley $setup" ;;
        floor_lighttpd|floor_proxy_fcgi)
            "start_${setup#floor_}" "$BUILD/bench/lp-floor"
            mode=nchan pprefix=/api
            roots=$SETUP_PIDS
            label="floor: ${setup#floor_} + lp-floor.c" ;;
        lighttpd_bridge)
            if ! start_bridge; then
                echo "| parley lighttpd + bridge | (bridge did not start) | | | | | | | | | |"; rc=1
                continue
            fi
            bpid=$BRIDGE_PID
            export LP_POLL_TO_BRIDGE=1
            WS_PORT=$BRIDGE_PORT start_lighttpd "$BUILD/parley.fcgi"
            unset LP_POLL_TO_BRIDGE
            roots=$bpid
            label="parley lighttpd + bridge (not shipped)" ;;
        fcgid_bridge)
            if ! start_bridge; then
                echo "| parley fcgid + bridge | (bridge did not start) | | | | | | | | | |"; rc=1
                continue
            fi
            bpid=$BRIDGE_PID
            WS_PORT=$BRIDGE_PORT IT_NO_WS= start_fcgid "$BUILD/parley.fcgi"
            roots=$bpid
            label="parley fcgid + bridge" ;;
        *) echo "bench/lp-run.sh: unknown setup $setup" >&2; rc=1; continue ;;
        esac
        if [ "$mode" = parley ]; then
            # lighttpd starts parley.fcgi itself, mod_fcgid at the first request
            curl -s -o /dev/null -m 5 "$BASE/api/health" || true
            roots="$roots $SETUP_PIDS"
        fi
        echo "# $label, $v viewers × $ch channel(s), $rt/s × $cnt per channel:" >>"$DETAILS"
        to=$((cnt / rt + 90))
        timeout "$to" node bench/lp-fanout.mjs --mode "$mode" --base "$BASE" --db "$IT_DB" \
            --pub "$BUILD/bench/ws-pub" --viewers "$v" --channels "$ch" --rate "$rt" --count "$cnt" \
            --size "$SIZE" --poll-delay "$POLL_DELAY" --server-pids "$roots" --label "$label" --timeout $((to - 5)) \
            ${pprefix:+--path-prefix "$pprefix"} \
            2>>"$DETAILS" </dev/null || {
            rc=1
            # what the web server said (a 500's cause is in its error log)
            [ "$mode" = parley ] && tail -n 5 "$SETUP_DIR/logs/error.log" 2>/dev/null |
                sed 's/^/# error.log: /' >>"$DETAILS"
        }
        case $setup in
        nchan) it_stop "$NGINX_PID"; NGINX_PID="" ;;
        *) stop_setup || true
           bench_reap 2>/dev/null
           [ -n "$bpid" ] && { it_stop "$bpid" || true; } ;;
        esac
    done
done
IFS=$oifs
echo
echo "Details (from bench/lp-fanout.mjs):"
echo
sed -e 's/^# \(.*\):$/\n**\1**\n/' -e 's/^# /- /' "$DETAILS"
exit $rc
