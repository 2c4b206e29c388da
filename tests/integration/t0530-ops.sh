#!/bin/sh
# t0530-ops.sh — `make run` as an operator meets it (tools/run.sh, the
# script `make run` runs after building), on a free port, with issue 8's
# operator defects:
#   h  an empty setting ("OLLAMA_SERVER=", as docker-compose passes unset
#      variables) must not stop it; a wrong one is reported as a
#      configuration error, not as "cannot create/migrate ...parley.db";
#   e  /api/metrics shows the bridge's numbers (parley_ws_up 1) while the
#      bridge runs;
#   f  after the bridge dies (kill -9), WebSocket through the web server
#      works again without anyone restarting anything.
# Needs $BUILD/parley.fcgi and $BUILD/parley-ws (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - make run operations # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
# /api/metrics is an admin's (docs/admin.md): run.sh gets a JWT secret, the
# metrics checks an admin's token and the WebSocket client a user's.
OPS_SECRET="ops-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
OPS_ADMIN=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "ops", { role: "admin" }))' "$OPS_SECRET")
OPS_USER=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "user"))' "$OPS_SECRET")

# run.sh's own temporary directory (where its copy of the bridge runs),
# from the "logs:" line it prints.
run_tmp() {
    sed -n 's|^parley: logs: \(.*\)/[^/]*/logs/ .*$|\1|p' "$RUN_LOG" | head -n 1
}
# The pids of run.sh's bridge (the copy under its temporary directory).
bridge_pids() {
    _rt=$(run_tmp)
    [ -n "$_rt" ] || return 0
    for _d in /proc/[0-9]*; do
        [ "$(readlink "$_d/exe" 2>/dev/null)" = "$_rt/bridge/parley-ws" ] && echo "${_d#/proc/}"
    done
    return 0
}
# Waits (at most $1 tenths of a second) until command $2... succeeds.
until_ok() {
    _n=$1; shift
    _i=0
    while [ $_i -lt "$_n" ]; do
        "$@" >/dev/null 2>&1 && return 0
        it_alive "$RUN_PID" || return 1
        sleep 0.1; _i=$((_i + 1))
    done
    return 1
}
# A seed 002 brand chat through the web server's WebSocket proxy: open,
# get the welcome frame.
ws_welcome() {
    node --input-type=module -e '
        import WebSocket from "ws";
        const ws = new WebSocket(process.argv[1]);
        const t = setTimeout(() => { console.log("no welcome"); process.exit(1); }, 5000);
        ws.on("message", (d) => {
            const m = JSON.parse(d.toString());
            if (m.type === "welcome") { clearTimeout(t); ws.close(); process.exit(0); }
        });
        ws.on("unexpected-response", (q, r) => { console.log("HTTP", r.statusCode); process.exit(1); });
        ws.on("error", (e) => { console.log(String(e)); process.exit(1); });
    ' "ws://127.0.0.1:$PORT/ws/chat/techpro?token=$OPS_USER"
}
metrics_ws_up() {
    curl -fsS -m 5 -H "Authorization: Bearer $OPS_ADMIN" "http://127.0.0.1:$PORT/api/metrics" | grep -qx 'parley_ws_up 1'
}

# --- a wrong setting is called a configuration error -----------------------
unset SERVER
PORT=$(free_port)
RUN_LOG=$IT_TMP/run-bad.log
env PARLEY_DB="$IT_TMP/data/bad.db" PORT="$PORT" BUILD="$BUILD" FAKE_LLM_URL="$FAKE_LLM_URL" \
    WEBSOCKET_TIMEOUT=soon sh tools/run.sh >"$RUN_LOG" 2>&1 </dev/null && _rc=0 || _rc=$?
bad_config_said() {
    [ "$_rc" -ne 0 ] || { echo "run.sh exited 0"; return 1; }
    grep -q 'configuration: .*WEBSOCKET_TIMEOUT' "$RUN_LOG" || { cat "$RUN_LOG"; return 1; }
    if grep -qi 'cannot create/migrate\|database' "$RUN_LOG"; then cat "$RUN_LOG"; return 1; fi
}
ok "run.sh with WEBSOCKET_TIMEOUT=soon stops with a configuration error, not a database one" bad_config_said

# --- each server setup of make run ----------------------------------------
# (SERVER= as make run takes it), with empty settings as docker-compose
# passes them.
for SERVER in apache apache-proxy lighttpd; do
export SERVER
PORT=$(free_port)
RUN_LOG=$IT_TMP/run-$SERVER.log
RUN_DB=$IT_TMP/data/run-$SERVER.db
it_bg "$RUN_LOG" env PARLEY_DB="$RUN_DB" PORT="$PORT" BUILD="$BUILD" \
    FAKE_LLM_URL="$FAKE_LLM_URL" OLLAMA_SERVER= PARLEY_MODEL= OPENAI_API_KEY= PARLEY_ALLOWED_ORIGINS= \
    PARLEY_JWT_SECRET="$OPS_SECRET" sh tools/run.sh
RUN_PID=$IT_LAST_PID
served() { grep -q '^parley: Ctrl-C stops everything' "$RUN_LOG"; }
started() {
    until_ok 1200 served || { echo "run.sh did not get to serving:"; tail -n 30 "$RUN_LOG"; return 1; }
    _h=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/health")
    [ "$_h" = 200 ] || { echo "GET /api/health: $_h"; return 1; }
}
ok "$SERVER: run.sh with OLLAMA_SERVER= (and other empty settings) starts and serves /api/health" started
if ! served; then
    it_stop "$RUN_PID"
    continue
fi

ws_up() {
    until_ok 600 metrics_ws_up && return 0
    curl -sS -m 5 -H "Authorization: Bearer $OPS_ADMIN" "http://127.0.0.1:$PORT/api/metrics" | grep '^parley_ws' | head -n 5
    return 1
}
ok "$SERVER: /api/metrics under run.sh: parley_ws_up 1 while the bridge runs" ws_up
ws_numbers() {
    _m=$(curl -fsS -m 5 -H "Authorization: Bearer $OPS_ADMIN" "http://127.0.0.1:$PORT/api/metrics") && printf "%s\n" "$_m" | grep -q "^parley_ws_connections_max "
}
ok "$SERVER: /api/metrics under run.sh carries the bridge's numbers" ws_numbers
ok "$SERVER: WebSocket through the web server works" until_ok 100 ws_welcome

restarted() {
    _old=$(bridge_pids)
    [ -n "$_old" ] || { echo "no bridge process found under $(run_tmp)"; return 1; }
    # shellcheck disable=SC2086
    kill -KILL $_old
    rm -f "$RUN_DB-ws.prom"          # the old bridge's numbers: gone
    _i=0
    while [ $_i -lt 100 ]; do
        _new=$(bridge_pids)
        [ -n "$_new" ] && [ "$_new" != "$_old" ] && break
        sleep 0.1; _i=$((_i + 1))
    done
    [ -n "$_new" ] && [ "$_new" != "$_old" ] || { echo "the bridge was not started again"; tail -n 5 "$RUN_LOG"; return 1; }
    until_ok 600 ws_welcome || { echo "WebSocket still fails: $(ws_welcome)"; tail -n 5 "$RUN_LOG"; return 1; }
    echo "bridge pid $_old killed, now $_new"
}
ok "$SERVER: after kill -9 of the bridge, WebSocket through the web server works again" restarted
ok "$SERVER: and the new bridge's numbers reach /api/metrics (parley_ws_up 1)" until_ok 600 metrics_ws_up

stopped() {
    _rt=$(run_tmp)
    it_stop "$RUN_PID"
    [ -z "$(bridge_pids)" ] || { echo "a bridge outlived run.sh"; return 1; }
    [ ! -d "$_rt" ] || { echo "$_rt left behind"; return 1; }
}
ok "$SERVER: run.sh stopped: no bridge left, its temporary directory removed" stopped
done
it_done
