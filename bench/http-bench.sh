#!/bin/sh
# http-bench.sh — the cached-answer REST benchmark: GET /api/tickets/{id}/ai
# for a ticket whose answer is cached, with wrk, side by side with the same
# web server serving a static file of the same bytes, with PHP-FPM
# answering the same query from the same SQLite file, and with the floor: a
# minimal libfcgi responder (bench/rest-floor.c) returning the same bytes,
# put behind the same web server the way parley.fcgi is. Prints Markdown
# for docs/PERFORMANCE.md.
#
#   bench/http-bench.sh                    (BUILD=build-x for another build dir)
#   SETUPS="lighttpd fcgid proxy_fcgi"     which web-server setups (default: all three)
#   TARGETS="parley floor"                 a subset of the targets below (default: all six)
#   DURATION=5 REPS=3 CONNS=32 WRK_THREADS=2 TOKENS=250   wrk -d/-c/-t, repetitions,
#                                          length of the cached answer (fake LLM tokens)
#   FCGID_MAX_REQUESTS=N                   FcgidMaxRequestsPerProcess instead of the
#                                          shipped snippet's 10000 (0: no limit)
#   PROXY_REUSE=on|off                     mod_proxy_fcgi with or without
#                                          enablereuse=on (default: as shipped)
#
# Each setup is started by the integration harness (tests/integration/lib.sh)
# with the SHIPPED apache-conf/ snippets on a free loopback port, plus one
# route for *.php to a php-fpm started here (bench/http-lib.sh):
#   lighttpd     lighttpd + mod_fastcgi spawning parley.fcgi --threads 16
#   fcgid        Apache (event MPM) + mod_fcgid, one request per process,
#                up to 64 processes (FcgidMaxProcessesPerClass)
#   proxy_fcgi   Apache + mod_proxy_fcgi to parley.fcgi --threads 32 on a unix
#                socket (started from parley-fcgi.service's ExecStart line)
# Targets, each a GET through the same server:
#   parley       /api/tickets/bench-1/ai
#   floor        /floor/tickets/bench-1/ai: bench/rest-floor.c, parley's exact
#                response bytes (headers and body, from parley's answer in the
#                same setup; checked byte for byte as the client sees them,
#                but for Date), behind the same web server exactly as
#                parley.fcgi is (BENCH_FLOOR in bench/http-lib.sh: lighttpd
#                spawns it from a copy of parley's fastcgi.server block;
#                mod_fcgid runs it under the same Fcgid* settings from a copy
#                of parley's <Directory> block; for mod_proxy_fcgi it is
#                started with parley-fcgi.service's ExecStart= line on a
#                socket of its own, behind a copy of parley's ProxyPassMatch
#                line): the least any FastCGI application could cost per
#                answer there. Target: parley ≥ 0.9 × floor.
#   static       /bench-static.json: the exact bytes parley answers, from disk
#   php          /ticket-ai.php?id=bench-1 (bench/php/ticket-ai.php): new PDO
#                connection per request, the same SELECTs as parley, the same JSON
#   php-persist  the same with PDO::ATTR_PERSISTENT (connection kept per worker)
#   fcgi-404     reference: /api/bench-no-such-route, parley.fcgi's 404 (a
#                ~80-byte JSON error, no database work): the cost of the
#                FastCGI round trip and the dispatcher alone
# php-fpm: pm = static with as many workers as parley has threads (16 for
# lighttpd, 32 for proxy_fcgi) or, for mod_fcgid, as wrk has connections.
# The database is seeded with one cached ticket answer through the runner
# (build/parley ask -t bench-1, the simulated LLM). Open mode (no JWT).
#
# Every repetition runs each target once, the order rotating between
# repetitions. Bounded: about 6–7 minutes with the defaults; every wrk run is
# under timeout(1). Needs wrk, php-fpm, php-sqlite3, apache2,
# libapache2-mod-fcgid, lighttpd (installed with apt-get when root).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
TOKENS=${TOKENS:-250}
SETUPS=${SETUPS:-"lighttpd fcgid proxy_fcgi"}
TARGETS=${TARGETS:-"parley floor static php php-persist fcgi-404"}
TICKET=bench-1
BENCH_FCGID_MAXREQ=${FCGID_MAX_REQUESTS:-}
BENCH_PROXY_REUSE=${PROXY_REUSE:-}

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley" \
    "$BUILD/bench/rest-floor" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/http-bench.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
. bench/http-lib.sh
BENCH_FLOOR=$BUILD/bench/rest-floor
bench_deps wrk php-fpm php-sqlite3 apache2 libapache2-mod-fcgid lighttpd || exit 1
it_init
it_fake_llm
IT_NO_WS=1
ulimit -n 4096 2>/dev/null || true

# --- the cached answer ---------------------------------------------------------
IT_DB=$IT_TMP/data/bench.db
if ! PARLEY_DB=$IT_DB OLLAMA_SERVER=$FAKE_LLM_URL RATE_LIMIT_MESSAGES_PER_MINUTE=1000 \
    timeout 30 "$BUILD/parley" ask -t "$TICKET" \
    "[[fake tokens=$TOKENS token_ms=0]] The printer on floor 3 says PC LOAD LETTER and prints nothing since this morning." \
    >"$IT_TMP/seed.log" 2>&1; then
    cat "$IT_TMP/seed.log" >&2
    it_die "seeding the cached answer failed"
fi
it_own "$IT_TMP/data"
# the floor's bytes: what parley.fcgi writes for the request
bench_floor_fetch "/api/tickets/$TICKET/ai"
grep -q '"status":"cached"' "$BENCH_FLOOR_RESPONSE" || it_die "parley.fcgi does not answer from the cache"
cp bench/php/ticket-ai.php "$IT_TMP/www/ticket-ai.php"
it_own "$IT_TMP/www"

# setup target rep rps p50_us p99_us socket_errors non2xx requests web_ms app_ms php_ms floor_ms
RES=$IT_TMP/results
: >"$RES"
NOTES=$IT_TMP/notes
: >"$NOTES"

url_of() {
    case $1 in
    parley) echo "$BASE/api/tickets/$TICKET/ai" ;;
    floor) echo "$BASE/floor/tickets/$TICKET/ai" ;;
    static) echo "$BASE/bench-static.json" ;;
    php) echo "$BASE/ticket-ai.php?id=$TICKET" ;;
    php-persist) echo "$BASE/ticket-ai.php?id=$TICKET&persist=1" ;;
    fcgi-404) echo "$BASE/api/bench-no-such-route" ;;
    esac
}

# run_wrk SECONDS URL — prints "rps p50_us p99_us socket_errors non2xx3xx requests",
# or "0 0 0 fail fail 0".
run_wrk() {
    _out=$(timeout $(($1 + 20)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"$1"s --timeout 10s \
        -s bench/http-wrk.lua "$2" 2>&1 | sed -n 's/^WRK //p')
    [ -n "$_out" ] || { echo "0 0 0 fail fail 0"; return; }
    echo "$_out" | awk '{ printf "%.0f %d %d %d %d %d\n", $1 / ($2 / 1e6), $4, $5, $7 + $8 + $9 + $11, $10, $1 }'
}

rotate() { # rotate N WORDS... — the words, starting at the (N mod count)-th
    _n=$1; shift
    _k=$(( _n % $# ))
    _a="" _b=""
    _i=0
    for _w in "$@"; do
        if [ $_i -lt $_k ]; then _b="$_b $_w"; else _a="$_a $_w"; fi
        _i=$((_i + 1))
    done
    echo $_a $_b
}

bench_machine "Cached-answer REST (\`bench/http-bench.sh\`)" \
    "PHP $(php -r 'echo PHP_VERSION;' 2>/dev/null) (php-fpm, OPcache on), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)" \
    "BUILD=$BUILD DURATION=$DURATION REPS=$REPS CONNS=$CONNS ${FCGID_MAX_REQUESTS:+FCGID_MAX_REQUESTS=$FCGID_MAX_REQUESTS }${PROXY_REUSE:+PROXY_REUSE=$PROXY_REUSE }${SETUPS:+SETUPS=\"$SETUPS\" }bench/http-bench.sh"

for setup in $SETUPS; do
    case $setup in
    lighttpd) workers=$(sed -n 's/.*parley.fcgi --threads \([0-9]*\).*/\1/p' apache-conf/lighttpd-parley.conf) ;;
    proxy_fcgi) workers=$(sed -n 's/^ExecStart=.*--threads \([0-9]*\).*/\1/p' apache-conf/parley-fcgi.service) ;;
    fcgid) workers=$CONNS ;;
    *) it_die "unknown setup $setup (lighttpd, fcgid, proxy_fcgi)" ;;
    esac
    start_php_fpm "${workers:-16}"
    BENCH_PHP=1
    "start_$setup" "$BUILD/parley.fcgi"
    curl -s -o "$IT_TMP/parley.json" "$(url_of parley)"
    cp "$IT_TMP/parley.json" "$IT_TMP/www/bench-static.json"
    it_own "$IT_TMP/www"
    # the floor answers with parley.fcgi's bytes (bench_floor_fetch): as
    # the client sees them through this setup, the same but for Date
    curl -s -i -o "$IT_TMP/parley.http" "$(url_of parley)"
    curl -s -i -o "$IT_TMP/floor.http" "$(url_of floor)"
    grep -av '^Date: ' "$IT_TMP/parley.http" >"$IT_TMP/parley.nodate"
    grep -av '^Date: ' "$IT_TMP/floor.http" >"$IT_TMP/floor.nodate"
    cmp -s "$IT_TMP/parley.nodate" "$IT_TMP/floor.nodate" ||
        it_die "$setup floor: its answer differs from parley's: $(diff "$IT_TMP/parley.nodate" "$IT_TMP/floor.nodate" | head -c 600)"
    for t in parley floor static php php-persist; do
        code=$(curl -s -o "$IT_TMP/$t.json" -w '%{http_code}' "$(url_of "$t")")
        [ "$code" = 200 ] || it_die "$setup $t: HTTP $code: $(head -c 300 "$IT_TMP/$t.json")"
        cmp -s "$IT_TMP/parley.json" "$IT_TMP/$t.json" ||
            it_die "$setup $t: the body differs from parley's: $(head -c 300 "$IT_TMP/$t.json")"
    done
    grep -q '"status":"cached"' "$IT_TMP/parley.json" || it_die "parley does not answer from the cache"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$(url_of fcgi-404)")
    [ "$code" = 404 ] || it_die "$setup fcgi-404: HTTP $code"
    size=$(wc -c <"$IT_TMP/parley.json")
    # Warm-up: mod_fcgid starts processes as load comes; OPcache, page cache.
    for t in $TARGETS; do run_wrk 2 "$(url_of "$t")" >/dev/null; done
    rep=1
    while [ $rep -le "$REPS" ]; do
        for t in $(rotate $((rep - 1)) $TARGETS); do
            cpu_snapshot "$IT_TMP/cpu0"
            w=$(run_wrk "$DURATION" "$(url_of "$t")")
            cpu_snapshot "$IT_TMP/cpu1"
            echo "$setup $t $rep $w $(cpu_delta "$IT_TMP/cpu0" "$IT_TMP/cpu1")" >>"$RES"
        done
        rep=$((rep + 1))
    done
    napp=$(app_pids | wc -l)
    starts=$(cat "$SETUP_DIR"/logs/*.log "$SETUP_DIR"/logs/*.out 2>/dev/null | grep -c 'parley.fcgi\[[0-9]*\]: serving' || true)
    echo "$setup $size $workers $napp $starts" >>"$NOTES"
    stop_setup || true
    bench_reap
    stop_php_fpm || true
done

# --- report ----------------------------------------------------------------------
echo "Response: ${size:-?} bytes of JSON (the same bytes from parley, floor, static, php and php-persist;"
echo "checked; the floor's headers too, byte for byte but for Date)."
echo "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $REPS repetitions per target, the order of the six"
echo "targets rotating between repetitions; a 2 s warm-up of each target first."
echo
while read -r setup size workers napp starts; do
    echo "- $setup: php-fpm pm=static with $workers workers; parley.fcgi processes started" \
         "during the setup's runs: $starts, running at the end: $napp"
done <"$NOTES"
echo
echo "Each run (requests/s, p50 / p99 latency in ms):"
echo
awk 'function note(t, a, b, req,   e) {
         if (a == "fail") return " **wrk failed**"
         if (req == 0) return " **no response completed in the run**"
         e = a + (t == "fcgi-404" ? 0 : b)
         return e == 0 ? "" : " **" e " errors**" }
     { key = $1 " rep " $3; if (!(key in line)) { order[++n] = key; line[key] = "" }
       line[key] = line[key] (line[key] == "" ? "" : ", ") sprintf("%s %s (%.2f / %.2f)%s", $2, $4, $5 / 1000, $6 / 1000, note($2, $7, $8, $9)) }
     END { for (i = 1; i <= n; i++) print "- " order[i] ": " line[order[i]] }' "$RES"
echo
echo "Median of the repetitions (range in brackets; a run in which no request completed is left"
echo "out and counted under \"stalled\"). CPU per request: utime + stime of the"
echo "processes over the run (/proc/PID/stat) divided by the requests wrk completed; backend ="
echo "the parley.fcgi processes, rest-floor's for the floor, or php-fpm's master and workers for the"
echo "php targets:"
echo
echo "| server | target | requests/s | p50 ms | p99 ms | web server CPU µs/req | backend CPU µs/req | errors | stalled |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
med() { sort -n | awk 'function f(x) { return x == int(x) || x >= 100 ? sprintf("%.0f", x) : sprintf("%.2f", x) }
    { v[NR] = $1 } END { if (NR == 0) print "–"; else if (NR % 2) print f(v[(NR + 1) / 2]); else print f((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
rng() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }
for setup in $SETUPS; do
    for t in $TARGETS; do
        rps=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 > 0 { print $4 }' "$RES")
        p50=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 > 0 { printf "%.2f\n", $5 / 1000 }' "$RES")
        p99=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 > 0 { printf "%.2f\n", $6 / 1000 }' "$RES")
        stalled=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 == 0 { n++ } END { print n + 0 }' "$RES")
        err=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t { e += ($7 == "fail" ? 1e9 : $7 + (t == "fcgi-404" ? 0 : $8)) } END { print e + 0 }' "$RES")
        webc=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 > 0 { printf "%.0f\n", $10 * 1000 / $9 }' "$RES")
        appc=$(awk -v s="$setup" -v t="$t" '$1 == s && $2 == t && $9 > 0 {
                   v = t ~ /^php/ ? $12 : t == "floor" ? $13 : t == "static" ? -1 : $11
                   if (v >= 0) printf "%.0f\n", v * 1000 / $9 }' "$RES")
        [ -n "$appc" ] && appc="$(echo "$appc" | med) ($(echo "$appc" | rng))" || appc="–"
        printf '| %s | %s | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s | %s | %s |\n' "$setup" "$t" \
            "$(echo "$rps" | med)" "$(echo "$rps" | rng)" "$(echo "$p50" | med)" "$(echo "$p50" | rng)" \
            "$(echo "$p99" | med)" "$(echo "$p99" | rng)" "$(echo "$webc" | med)" "$(echo "$webc" | rng)" \
            "$appc" "$err" "$stalled"
    done
done
echo
echo "Ratios of requests/s, median of the per-repetition ratios (range in brackets);"
echo "targets: parley ≥ 0.9 × floor, parley ≥ 3× php-fpm; the static file's ratio reported, not targeted:"
echo
echo "| server | parley / floor | parley / php | parley / php-persist | parley / static | floor / static | reference: fcgi-404 / static |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for setup in $SETUPS; do
    row="| $setup |"
    for pair in parley:floor parley:php parley:php-persist parley:static floor:static fcgi-404:static; do
        num=${pair%%:*} other=${pair#*:}
        r=$(awk -v s="$setup" -v n="$num" -v o="$other" '$1 == s && $2 == n && $9 > 0 { p[$3] = $4 } $1 == s && $2 == o { q[$3] = $4 }
                END { for (k in p) if (q[k] > 0) print p[k] / q[k] }' "$RES")
        if [ "$other" = static ]; then
            m=$(echo "$r" | med | awk '{ printf "%.0f %%", $1 * 100 }')
            g=$(echo "$r" | rng | awk -F'–' '{ printf "%.0f–%.0f %%", $1 * 100, $2 * 100 }')
        else
            m=$(echo "$r" | med | awk '{ printf "%.2f×", $1 }')
            g=$(echo "$r" | rng | awk -F'–' '{ printf "%.2f–%.2f", $1, $2 }')
        fi
        row="$row $m ($g) |"
    done
    echo "$row"
done
