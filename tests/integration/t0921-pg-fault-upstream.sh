#!/bin/sh
# t0921-pg-fault-upstream.sh — t0920-fault-upstream.sh's upstream fault
# matrix on PostgreSQL: a private PostgreSQL 15 (it_postgres), lighttpd with
# the shipped apache-conf/lighttpd-parley.conf in front of parley.fcgi and
# the WebSocket bridge, JWT required, the same private simulated LLM behind
# tests/integration/faults-upstream-proxy.mjs and the same settings.
# tests/integration/faults-upstream.mjs runs the faults (hang, drop,
# garbage, error object, also before the first token; 500 on both attempts;
# 429 with Retry-After once and beyond the total timeout; an OpenAI-compatible
# upstream; an unreachable upstream) over every transport (FUP_TRANSPORTS, a comma list, to run
# fewer), every case at once, and checks what the client sees, no partial
# answer cached or kept (the same question again: a new upstream request,
# the full answer; the answers table, the stored messages and the history
# sent upstream), each case's jobs and no job running (psql), and the
# database's consistency: amcheck's bt_index_check (heapallindexed) on every
# index of Parley's tables and verify_heapam on every table, no orphan
# rows; then a normal answer on each transport.
# Needs $BUILD/parley-ws, $BUILD/parley.fcgi, $BUILD/parley (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - upstream faults on PostgreSQL # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init

_pf=$IT_TMP/fup-proxy.port
it_bg "$IT_TMP/fup-proxy.log" node tests/integration/faults-upstream-proxy.mjs --port-file "$_pf"
SETUP_PIDS=""
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
_i=0
while [ ! -s "$_pf" ] && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
[ -s "$_pf" ] || it_die "the fault proxy did not start: $(cat "$IT_TMP/fup-proxy.log")"
read -r PROXY_PORT FAKE_PORT <"$_pf"
PROXY_URL=http://127.0.0.1:$PROXY_PORT
FAKE_LLM_URL=http://127.0.0.1:$FAKE_PORT
IT_UPSTREAM=$PROXY_URL
CLOSED_PORT=$(free_port)                        # nobody listens there: the upstream "dead"
IT_DB=$PG_URL
export FAKE_LLM_URL

mkdir -p "$IT_TMP/node"
it_own "$IT_TMP/node"
PARLEY_NODE_PREFIX=$IT_TMP/node/parley
it_jwt_config
cat >>"$IT_APP_CONFIG" <<EOF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_IDLE_TIMEOUT_MS=1500
PARLEY_FIRST_TOKEN_TIMEOUT_MS=5000
PARLEY_UPSTREAM_ATTEMPTS=2
PARLEY_UPSTREAM_BACKOFF_MS=50
PARLEY_LEASE_MS=3000
PARLEY_UPSTREAMS="name=main provider=ollama url=$PROXY_URL models=llama3.2; name=busy provider=ollama url=$PROXY_URL models=busy; name=oai provider=openai url=$PROXY_URL/v1 models=gpt-fup; name=dead provider=ollama url=http://127.0.0.1:$CLOSED_PORT models=deadend"
PARLEY_PHOENIX_MODELS=llama3.2,busy,gpt-fup,deadend
PARLEY_NODE_PREFIX=$PARLEY_NODE_PREFIX
EOF

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"

SQL=$(node -e 'console.log(JSON.stringify(process.argv.slice(1)))' \
    "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U parley -d parley -c)
BASE="$BASE" SECRET="$SECRET" RUN="pg-$$" PROXY_URL="$PROXY_URL" SQL="$SQL" DB_KIND=pg \
    TRANSPORTS="${FUP_TRANSPORTS:-}" \
    IT_NODE_TIMEOUT=120 it_node_tap "PostgreSQL: " tests/integration/faults-upstream.mjs

it_done
