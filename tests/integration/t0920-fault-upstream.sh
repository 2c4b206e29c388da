#!/bin/sh
# t0920-fault-upstream.sh — issue 13 item 2, the upstream faults, on every
# transport, through real servers: lighttpd with the shipped
# apache-conf/lighttpd-parley.conf (parley.fcgi: long-poll, SSE seed 004,
# Phoenix LongPoll, OpenAI with and without stream, AI SDK) in front of
# the WebSocket bridge (parley-ws, from the shipped parley-ws.service:
# seeds 000 / 001 / 002, Phoenix WebSocket), one SQLite database, JWT
# required.
#
# The upstream is tests/integration/faults-upstream-proxy.mjs: a private
# simulated LLM whose per-request directives make it hang, drop the
# connection, send garbage or the provider's error object (after 3 tokens;
# hang, cut and garbage also before the first one), answer 500 (on both
# attempts), 429 with Retry-After: 1 (once) or 429 with a Retry-After
# beyond the total timeout — as an Ollama upstream, and (for the protocols
# whose client names the model) as an OpenAI-compatible one — behind a
# proxy that lets a
# question's fault fire only for its first request(s), so that the same
# question asked again shows whether anything partial was cached; a model
# served only by a closed port stands for an unreachable upstream; a stop
# while Parley waits for a first token or a Retry-After's end (seed 000).
# tests/integration/faults-upstream.mjs runs every fault × transport case at
# once (126 cases) and checks the client's error code (docs/errors.md) and
# message, or the transparent retry (429, a hang or a cut before the first
# token); the upstream connection closed; no partial answer cached or kept
# (the second ask makes a new upstream request and gets the full
# deterministic answer, a third comes from the cache; the answers table,
# the stored assistant messages and the history sent upstream hold only
# whole answers); each case's jobs (the faulty one failed with its error,
# none running); no job running past its lease; PRAGMA integrity_check and
# foreign_key_check; a normal answer on every transport afterwards; and
# integrity_check again once the servers stopped.
#
# Settings that bound the faults (docs/configuration.md):
#   PARLEY_IDLE_TIMEOUT_MS=1500        a hung stream ends after 1.5 s of silence
#   PARLEY_FIRST_TOKEN_TIMEOUT_MS=5000
#   PARLEY_UPSTREAM_ATTEMPTS=2, PARLEY_UPSTREAM_BACKOFF_MS=50
#   PARLEY_LEASE_MS=3000               a lost job is recovered within seconds
#   PARLEY_UPSTREAMS: main (the proxy, llama3.2), busy (the proxy again, the
#     429 beyond the total timeout: its Retry-After must not hold main's
#     retries), oai (the proxy's /v1, provider openai, model gpt-fup),
#     dead (a closed port)
# Needs $BUILD/parley-ws, $BUILD/parley.fcgi, $BUILD/parley (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - upstream faults through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
command -v sqlite3 >/dev/null 2>&1 || it_die "the sqlite3 command is not installed"
[ -d node_modules/phoenix ] || it_die "node_modules/phoenix is missing (npm ci)"

it_init

# the upstream: a private simulated LLM behind the fault proxy
_pf=$IT_TMP/fup-proxy.port
it_bg "$IT_TMP/fup-proxy.log" node tests/integration/faults-upstream-proxy.mjs --port-file "$_pf"
SETUP_PIDS=""
_i=0
while [ ! -s "$_pf" ] && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
[ -s "$_pf" ] || it_die "the fault proxy did not start: $(cat "$IT_TMP/fup-proxy.log")"
read -r PROXY_PORT FAKE_PORT <"$_pf"
PROXY_URL=http://127.0.0.1:$PROXY_PORT
FAKE_LLM_URL=http://127.0.0.1:$FAKE_PORT       # what lib.sh would use; Parley talks to the proxy
IT_UPSTREAM=$PROXY_URL
CLOSED_PORT=$(free_port)                        # nobody listens there: the upstream "dead"
export FAKE_LLM_URL

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
EOF

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
DB=$IT_TMP/data/parley.db

SQL=$(node -e 'console.log(JSON.stringify(["sqlite3", "-cmd", ".timeout 10000", process.argv[1]]))' "$DB")
BASE="$BASE" SECRET="$SECRET" RUN="sqlite-$$" PROXY_URL="$PROXY_URL" SQL="$SQL" DB_KIND=sqlite \
    IT_NODE_TIMEOUT=120 it_node_tap "" tests/integration/faults-upstream.mjs

# the web server, parley.fcgi and the bridge stopped together, then the file checked
_lt=$SETUP_PIDS
SETUP_PIDS=""
it_stop $_lt "$BRIDGE_PID"
stop_setup
ok "PRAGMA integrity_check after the servers stopped" \
    sh -c "[ \"\$(sqlite3 '$DB' 'PRAGMA integrity_check')\" = ok ]"

it_done
