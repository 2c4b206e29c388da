#!/bin/sh
# run.sh — `make run`: set up and serve the demo.
#
# Until the FastCGI front lands this: picks an upstream (OLLAMA_SERVER or
# OPENAI_BASE_URL if one answers, else the simulated LLM on 127.0.0.1:$PORT,
# said loudly), creates/migrates the database, streams one demo answer
# through Parley's core (runner -> event log -> doorbell -> viewer), and then
# keeps the simulated LLM serving until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PORT=${PORT:-8080}
export PARLEY_DB=${PARLEY_DB:-$PWD/parley.db}
FAKE_PID=""
cleanup() {
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
    echo "parley: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

upstream_ok() {
    case "${PARLEY_PROVIDER:-ollama}" in
    openai) url="${OPENAI_BASE_URL:-}"; [ -n "$url" ] && curl -fsS -m 3 -o /dev/null \
                ${OPENAI_API_KEY:+-H "Authorization: Bearer $OPENAI_API_KEY"} "${url%/chat/completions}/models" ;;
    *)      url="${OLLAMA_SERVER:-http://127.0.0.1:11434}"; url=${url%/api/generate}; url=${url%/api/chat}
            curl -fsS -m 3 -o /dev/null "${url%/}/api/tags" ;;
    esac
}

if upstream_ok 2>/dev/null; then
    echo "parley: using the configured upstream"
else
    echo "################################################################"
    echo "# parley: no LLM upstream answers (OLLAMA_SERVER / OPENAI_BASE_URL)"
    echo "# parley: starting the SIMULATED LLM (tests/fake-llm) instead"
    echo "################################################################"
    node tests/fake-llm/server.mjs --port "$PORT" --host 127.0.0.1 &
    FAKE_PID=$!
    i=0
    until curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$PORT/api/version" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 50 ] && { echo "parley: simulated LLM did not start" >&2; exit 1; }
        sleep 0.1
    done
    export PARLEY_PROVIDER=ollama OLLAMA_SERVER="http://127.0.0.1:$PORT"
fi

"$BUILD/parley" migrate
echo "parley: demo — ticket 1, streamed through the runner and the event log:"
"$BUILD/parley" ask -t 1 "My printer says PC LOAD LETTER. What does it mean?" || true
echo "parley: asking again is answered from the cache:"
"$BUILD/parley" ask -t 1 "My printer says PC LOAD LETTER. What does it mean?" || true
echo
echo "parley: the FastCGI front and WebSocket bridge are not built yet;"
if [ -n "$FAKE_PID" ]; then
    echo "parley: the simulated LLM serves http://127.0.0.1:$PORT (Ollama and OpenAI APIs)."
    echo "parley: try: $BUILD/parley ask \"hello\"   (with OLLAMA_SERVER=http://127.0.0.1:$PORT)"
    echo "parley: Ctrl-C stops it."
    wait "$FAKE_PID"
fi
