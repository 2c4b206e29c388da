#!/bin/sh
# t0912-aisdk-two-nodes.sh — the AI SDK UI message stream across two nodes
# on one PostgreSQL (docs/ai-sdk.md: no Redis; the event log is the replay):
# node A is Apache + mod_proxy_fcgi (parley.fcgi as parley-fcgi.service
# starts it), node B lighttpd, each with its own bridge and node prefix,
# PARLEY_LEASE_MS=6000. tests/integration/aisdk.mjs runs against node B
# (KILL=1: B's parley.fcgi killed mid-answer, lighttpd restarts it) with
# OTHER_BASE = node A: an answer started on A, dropped and resumed on B is
# whole, once; and, last, A's parley.fcgi SIGKILLed mid-answer (it does not
# come back): the resume on B gets the protocol's error part once the lease
# expires, never a hang.
# Needs $BUILD/parley-ws, $BUILD/parley.fcgi and PostgreSQL 15 (skips
# without the programs). TAP output; exit status 0 only if all passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - AI SDK stream on two nodes # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
IT_DB=$PG_URL
SECRET="it-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

node_config() {
    mkdir -p "$IT_TMP/node-$1"
    it_own "$IT_TMP/node-$1"
    cat >"$IT_TMP/node-$1.env" <<EOF_CONF
PARLEY_JWT_SECRET=$SECRET
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_LEASE_MS=6000
PARLEY_NODE_PREFIX=$IT_TMP/node-$1/parley
EOF_CONF
    chmod 640 "$IT_TMP/node-$1.env"
    it_own "$IT_TMP/node-$1.env"
    IT_APP_CONFIG=$IT_TMP/node-$1.env
    export IT_APP_CONFIG
}

IT_NODE=a
node_config a
start_bridge || it_die "node A: parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_proxy_fcgi "$BUILD/parley.fcgi"
NODE_A=$BASE

IT_NODE=b
node_config b
start_bridge || it_die "node B: parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
NODE_B=$BASE
it_log "node A $NODE_A (mod_proxy_fcgi), node B $NODE_B (lighttpd), PostgreSQL $PG_URL"

BASE="$NODE_B" OTHER_BASE="$NODE_A" SECRET="$SECRET" RUN="n$$" KILL=1 KILL_OTHER=1 \
    it_node_tap "two nodes: " tests/integration/aisdk.mjs

it_done
