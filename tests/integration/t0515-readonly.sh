#!/bin/sh
# t0515-readonly.sh — a read-only spell of the database (chmod 0444 on
# parley.db during traffic, 0644 after) must not break Parley for good
# (issue 8, defect a). parley.fcgi (Apache + mod_proxy_fcgi) and the bridge
# run as the app account, not root, so the permission bits are real for
# them (root ignores them; lib.sh drops to www-data or nobody when run as
# root, and the database belongs to that account).
#
# A spell that begins while generations stream does not stop them: they
# end done (their connections were opened before it and still write).
# During the spell: new WebSocket generations get "The database is read-only"
# at once (not a generic database error, not "generation interrupted" after
# a lease), /api/health answers 503 with "database":"read-only", and a
# bridge started during the spell (every connection it opens is read-only
# in SQLite) comes up. After the spell: that bridge's generations all end
# done (its connections were reopened), health is 200 "ok", and no job is
# left running.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - read-only spell # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOC
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=0
EOC
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG
IT_DB=$IT_TMP/data/parley.db

start_bridge || it_die "parley-ws did not start"
BRIDGE_PID=$IT_LAST_PID
WS_PORT=$BRIDGE_PORT
start_proxy_fcgi "$BUILD/parley.fcgi"
it_log "bridge ws://127.0.0.1:$BRIDGE_PORT, web server $BASE, database $IT_DB"

# gens PREFIX COUNT EXPECT [OPTIONS] — COUNT generations at once on the bridge.
gens() {
    _p=$1 _n=$2 _e=$3; shift 3
    node tests/integration/readonly-ws.mjs "ws://127.0.0.1:$BRIDGE_PORT" "$_p" "$_n" --expect "$_e" "$@"
}

# health STATUS DATABASE — /api/health answers STATUS with "database":DATABASE.
health() {
    _b=$IT_TMP/health.json
    _code=$(curl -s -o "$_b" -w '%{http_code}' "$BASE/api/health") || true
    echo "HTTP $_code $(cat "$_b")"
    [ "$_code" = "$1" ] && grep -q "\"database\": *\"$2\"" "$_b"
}

# send_refused — seed 004 over SSE (parley.fcgi) on conversation $CONV:
# 503 with "The database is read-only", before any event.
send_refused() {
    _b=$IT_TMP/send.out
    _code=$(curl -s -o "$_b" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"conversationId\":\"$CONV\",\"content\":\"hello during the spell\"}" \
        "$BASE/api/chat/send") || true
    echo "HTTP $_code $(head -c 300 "$_b")"
    [ "$_code" = 503 ] && grep -q 'The database is read-only' "$_b"
}

# send_done — the same after the spell: the SSE stream ends with done.
send_done() {
    _b=$IT_TMP/send.out
    curl -s -N -m 60 -o "$_b" -H 'Content-Type: application/json' \
        -d "{\"conversationId\":\"$CONV\",\"content\":\"hello after the spell\"}" \
        "$BASE/api/chat/send" || true
    tail -c 300 "$_b"; echo
    grep -q '"done": *true' "$_b"
}

# nothing_running — /api/health counts no running job.
nothing_running() {
    curl -s "$BASE/api/health" >"$IT_TMP/health.json" || true
    cat "$IT_TMP/health.json"; echo
    grep -q '"jobs_running": *0[,}]' "$IT_TMP/health.json"
}

ok "before: generations end done" gens before 3 done
ok "before: health 200 database ok" health 200 ok
CONV=$(curl -s -H 'Content-Type: application/json' -d '{"title":"read-only spell"}' \
    "$BASE/api/chat/sessions" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
[ -n "$CONV" ] || it_die "could not create a conversation"

ok "a spell that begins while 4 generations stream: they all end done" \
    gens inflight 4 done --slow --chmod-0444-after-first-token "$IT_DB"
chmod 0444 "$IT_DB"          # (already, unless the step above failed early)
ok "spell: every generation gets 'the database is read-only' at once" gens spell 4 read-only
ok "spell: health 503 database read-only" health 503 read-only
ok "spell: seed 004 over SSE (parley.fcgi) answers 503 'The database is read-only'" send_refused

# A bridge started now opens every connection read-only.
it_stop "$BRIDGE_PID"
start_bridge || it_die "parley-ws did not start during the spell"
BRIDGE_PID=$IT_LAST_PID
ok "spell: the restarted bridge also says read-only" gens spell2 2 read-only

chmod 0644 "$IT_DB"
ok "after: health 200 database ok" health 200 ok
ok "after: the bridge started during the spell generates again (6 at once)" gens after 6 done
ok "after: again, on the same connections" gens after2 6 done
ok "after: seed 004 over SSE generates again" send_done
ok "after: no job left running" nothing_running
it_done
