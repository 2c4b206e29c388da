#!/bin/sh
# t0911-aisdk-browser.sh — the AI SDK UI message stream in headless
# Chromium (issue 15's Tests): a test-only page (tests/browser/aisdk-page/:
# the `ai` package's DefaultChatTransport and readUIMessageStream, loaded
# from copies of node_modules through an import map — no build step, never
# served by make run) against Apache + mod_fcgid (the shipped snippets) + parley.fcgi,
# JWT required; tests/integration/aisdk-browser.mjs reloads it mid-answer
# and expects the whole answer once, resumed.
# Needs $BUILD/parley.fcgi, $BUILD/parley-ws, Debian's chromium and
# node_modules/playwright-core (skips without them). TAP output.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
for _f in "$BUILD/parley.fcgi" "$BUILD/parley-ws" "$CHROMIUM"; do
    if [ ! -x "$_f" ]; then
        echo "ok 1 - the AI SDK page in Chromium # SKIP $_f is missing"
        echo "1..1"
        exit 0
    fi
done
for _p in playwright-core ai zod; do
    [ -f "node_modules/$_p/package.json" ] || it_die "node_modules/$_p is missing (npm ci)"
done

it_init
it_fake_llm
it_jwt_config
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0" >>"$IT_APP_CONFIG"

# The page and the packages it imports, under the document root.
_p=$IT_TMP/www/aisdk
mkdir -p "$_p/nm/ai/dist" "$_p/nm/@ai-sdk" "$_p/nm/@opentelemetry/api"
cp tests/browser/aisdk-page/* "$_p/"
cp node_modules/ai/dist/index.mjs "$_p/nm/ai/dist/"
for _s in gateway provider provider-utils; do
    mkdir -p "$_p/nm/@ai-sdk/$_s/dist"
    cp "node_modules/@ai-sdk/$_s/dist/index.mjs" "$_p/nm/@ai-sdk/$_s/dist/"
done
cp -R node_modules/@opentelemetry/api/dist "$_p/nm/@opentelemetry/api/"
cp -R node_modules/eventsource-parser "$_p/nm/"
cp -R node_modules/zod "$_p/nm/"
it_own "$IT_TMP/www"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
# Apache (TypesConfig /etc/mime.types) serves .mjs as text/javascript, which
# module scripts need; the lighttpd test setup maps .js only.
start_fcgid "$BUILD/parley.fcgi"
PARLEY_BASE="$BASE" PARLEY_JWT_SECRET="$SECRET" FAKE_LLM_URL="$FAKE_LLM_URL" \
    PARLEY_SETUP=fcgid CHROMIUM="$CHROMIUM" PARLEY_SHOTS="$PWD/$BUILD/browser" \
    it_node_tap "apache mod_fcgid: " tests/integration/aisdk-browser.mjs
stop_setup

it_done
