#!/bin/sh
# t0850-cli.sh — the real `parley` binary through every command (issue 12
# item 1, docs/cli.md), on SQLite and then on a private PostgreSQL 15:
#   - `--help` on every command and sub-command: exit 0, the usage on
#     stdout, no database created; usage errors: exit 2, the message on
#     stderr, nothing on stdout; a failure: exit 1;
#   - brands import (share/sample-catalog.json) / list --json (parsed by
#     node) / disable / enable: a disabled brand leaves GET /brands/active
#     of a real lighttpd + parley.fcgi at once and comes back when enabled;
#   - products import: a good file replaces the brand's products; a bad one
#     is refused (exit 1) with per-record errors naming the record and the
#     field, and the catalogue is exactly what it was (same list --json);
#   - token --sub --ttl --claim: accepted by the server (201 on POST
#     /api/chat/sessions as that user), role=admin reaches
#     /api/admin/overview (200) where a plain token gets 403;
#   - tickets list/show/forget after `parley ask -t` (the simulated LLM):
#     forget deletes the cached answer as DELETE /api/tickets/ID/ai does;
#   - sessions list --user / purge --older-than (the session created through
#     the server above);
#   - usage --json, stats --json, maintain --json: JSON that parses;
#   - backup FILE: a database that opens (parley brands list, sqlite3) with
#     the rows; an existing FILE is refused; on PostgreSQL: pg_dump guidance,
#     exit 1;
#   - test_cli_import's cases on PostgreSQL (PARLEY_TEST_PG).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

CLI=$IT_ROOT/$BUILD/parley
[ -x "$CLI" ] || it_die "$CLI is not built (make)"
[ -x "$BUILD/parley.fcgi" ] || it_die "$BUILD/parley.fcgi is not built (make)"
command -v sqlite3 >/dev/null || it_die "sqlite3 (the shell) is not installed (tools/deps.sh installs it)"

it_init
it_fake_llm
it_jwt_config
DB=$IT_TMP/data/parley.db
IT_DB=$DB
IT_NO_SAMPLE_CATALOG=1          # this test imports the catalogue itself
OUT=$IT_TMP/out ERR=$IT_TMP/err

# cli ARGS... — the CLI as the app account, the servers' settings; stdout in
# $OUT, stderr in $ERR; returns its exit status.
cli() {
    # shellcheck disable=SC2086
    $AS_APP env PARLEY_CONFIG="$IT_APP_CONFIG" PARLEY_DB="$DB" OLLAMA_SERVER="$FAKE_LLM_URL" \
        ${CLI_ENV:-} "$CLI" "$@" >"$OUT" 2>"$ERR"
}
# expect RC ARGS... — cli ARGS exits RC (its output shown when not)
expect() {
    _want=$1; shift
    _rc=0; cli "$@" || _rc=$?
    [ "$_rc" = "$_want" ] && return 0
    echo "parley $*: exit $_rc, want $_want"; sed 's/^/stdout: /' "$OUT"; sed 's/^/stderr: /' "$ERR"
    return 1
}
# js EXPR — EXPR over d, the JSON document on stdin (node); prints it.
js() {
    node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8"));
             const v = eval(process.argv[1]); process.stdout.write(String(v));' "$1"
}

# ---- --help everywhere, usage errors ----
COMMANDS="migrate|ask|maintain|token|brands import|brands list|brands disable|brands enable|products import|kb import|kb list|kb remove|tickets list|tickets show|tickets forget|sessions list|sessions purge|usage|budget set|stats|backup|db copy"
help_everywhere() {
    _nodb=$IT_TMP/never.db
    _old_ifs=$IFS; IFS='|'
    for _c in $COMMANDS; do
        IFS=$_old_ifs
        # shellcheck disable=SC2086
        _rc=0; env PARLEY_DB="$_nodb" "$CLI" $_c --help >"$OUT" 2>"$ERR" || _rc=$?
        [ "$_rc" = 0 ] || { echo "parley $_c --help: exit $_rc"; return 1; }
        head -n 1 "$OUT" | grep -q "^usage: parley $_c" || { echo "parley $_c --help: $(head -n 1 "$OUT")"; return 1; }
        [ ! -s "$ERR" ] || { echo "parley $_c --help wrote on stderr: $(cat "$ERR")"; return 1; }
        IFS='|'
    done
    IFS=$_old_ifs
    for _g in brands products kb tickets sessions budget db; do
        "$CLI" $_g --help >"$OUT" 2>"$ERR" || { echo "parley $_g --help failed"; return 1; }
        grep -q "parley $_g " "$OUT" || { echo "parley $_g --help: no sub-command listed"; return 1; }
    done
    "$CLI" --help >"$OUT" || return 1
    [ "$(grep -c '^ *parley ' "$OUT")" -ge 22 ] || { echo "parley --help lists $(grep -c '^ *parley ' "$OUT") commands"; return 1; }
    [ ! -e "$_nodb" ] || { echo "--help created the database"; return 1; }
    echo "$(echo "$COMMANDS" | tr '|' '\n' | wc -l) commands, 7 groups: --help exit 0 on stdout"
}
ok "--help on every command and sub-command: exit 0, usage on stdout, no database touched" help_everywhere

usage_errors() {
    for _args in "frobnicate" "brands" "brands frob" "brands import" "products import techpro" \
                 "tickets show" "tickets list --limit 0" "sessions purge" "sessions purge --older-than 3x" \
                 "token --ttl 1h" "token --sub a --ttl 5y" "token --sub a --claim sub=b" "backup" \
                 "budget set alice lots" "brands list --yaml" "maintain now"; do
        # shellcheck disable=SC2086
        _rc=0; cli $_args || _rc=$?
        [ "$_rc" = 2 ] || { echo "parley $_args: exit $_rc, want 2"; cat "$ERR"; return 1; }
        [ -s "$ERR" ] && [ ! -s "$OUT" ] || { echo "parley $_args: stderr empty or stdout not"; return 1; }
    done
    echo "16 usage errors: exit 2, message on stderr"
}
ok "usage errors exit 2 with the message on stderr, nothing on stdout" usage_errors


migrate_ok() { expect 0 migrate && grep -q 'schema version' "$OUT" && cat "$OUT"; }
ok "migrate creates the database (exit 0)" migrate_ok
it_own "$IT_TMP/data"

# ---- the catalogue ----
catalog_import() {
    expect 0 brands import "$IT_ROOT/share/sample-catalog.json" && cat "$OUT" &&
    expect 0 brands list --json || return 1
    _s=$(js 'd.map((b) => `${b.id}:${b.served}:${b.available}/${b.products}`).join(" ")' <"$OUT")
    echo "$_s"
    [ "$_s" = "homestyle:true:2/2 retired:false:0/0 techpro:true:6/7" ] &&
    expect 0 brands list && grep -q '^techpro  *yes  *6/7  *TechPro Solutions$' "$OUT"
}
ok "brands import share/sample-catalog.json, brands list --json (3 brands, products counted)" catalog_import

printf '%s\n' \
  '[{"id": "tp-1", "name": "Nimbus Tablet", "description": "A tablet", "category": "Tablet",' \
  '  "price": 3000000, "features": ["10-inch"], "specifications": {"storage": "64GB"}, "availability": true},' \
  ' {"id": "tp-2", "name": "Zephyr Laptop", "category": "Laptop", "price": 9000000}]' >"$IT_TMP/good.json"
products_good() {
    expect 0 products import techpro "$IT_TMP/good.json" && cat "$OUT" &&
    grep -q 'brand techpro now has 2 products (7 before)' "$OUT" &&
    expect 0 brands list --json &&
    [ "$(js 'd.find((b) => b.id === "techpro").products' <"$OUT")" = 2 ]
}
ok "products import BRAND FILE replaces the brand's products (7 -> 2)" products_good

printf '%s\n' \
  '[{"id": "tp-3", "name": "Fine", "price": 1},' \
  ' {"id": "tp-4", "name": "Bad price", "price": "cheap"},' \
  ' {"id": "tp-5", "price": 5, "colour": "red"},' \
  ' {"id": "home-001", "name": "Another brand", "price": 1}]' >"$IT_TMP/bad.json"
printf '%s\n' \
  '[{"id": "tp-3", "name": "Fine", "price": 1},' \
  ' {"id": "home-001", "name": "Another brand", "price": 1}]' >"$IT_TMP/stolen.json"
products_bad() {
    expect 0 brands list --json && cp "$OUT" "$IT_TMP/before.json" &&
    expect 1 products import techpro "$IT_TMP/bad.json" || return 1
    cat "$ERR"
    grep -q 'products\[1\] (tp-4): price: must be a number >= 0, got a string' "$ERR" &&
    grep -q 'products\[2\] (tp-5): name: missing' "$ERR" &&
    grep -q "products\[2\] (tp-5): unknown field 'colour'" "$ERR" &&
    grep -q 'nothing was changed' "$ERR" && [ ! -s "$OUT" ] || return 1
    expect 0 brands list --json && cmp -s "$OUT" "$IT_TMP/before.json" || { echo "catalogue changed"; return 1; }
    # every record is fine but one id is another brand's: refused in the transaction
    expect 1 products import techpro "$IT_TMP/stolen.json" && cat "$ERR" &&
    grep -q "products\[1\] (home-001): id: 'home-001' is a product of brand 'homestyle'" "$ERR" &&
    expect 0 brands list --json && cmp -s "$OUT" "$IT_TMP/before.json" &&
    expect 1 products import nobrand "$IT_TMP/good.json" && grep -q "no brand 'nobrand'" "$ERR" &&
    printf '[{"id": ' >"$IT_TMP/broken.json" &&
    expect 1 products import techpro "$IT_TMP/broken.json" && grep -q 'broken.json:1:' "$ERR" &&
    expect 0 brands list --json && cmp -s "$OUT" "$IT_TMP/before.json"
}
ok "a bad products file is refused (exit 1, each problem with its record and field), the catalogue intact" products_bad

# ---- a real web server on the same database ----
start_lighttpd "$BUILD/parley.fcgi"
active_ids() { curl -fsS -m 10 "$BASE/brands/active" | js 'd.map((b) => b.brand_id).join(",")'; }
disable_hides() {
    _a=$(active_ids) && echo "before: $_a" && [ "$_a" = "homestyle,techpro" ] &&
    expect 0 brands disable techpro && cat "$OUT" &&
    _a=$(active_ids) && echo "disabled: $_a" && [ "$_a" = "homestyle" ] &&
    expect 0 brands list --json &&
    [ "$(js 'd.find((b) => b.id === "techpro").disabled' <"$OUT")" = true ] &&
    expect 0 brands import "$IT_ROOT/share/sample-catalog.json" &&
    _a=$(active_ids) && echo "re-imported: $_a" && [ "$_a" = "homestyle" ] &&
    expect 0 brands enable techpro &&
    _a=$(active_ids) && echo "enabled: $_a" && [ "$_a" = "homestyle,techpro" ] &&
    expect 1 brands disable nobrand && grep -q "no brand 'nobrand'" "$ERR"
}
ok "brands disable hides the brand from GET /brands/active (lighttpd), a re-import keeps it disabled, enable brings it back" disable_hides

token_accepted() {
    expect 0 token --sub alice --ttl 1h && _t=$(cat "$OUT") &&
    expect 0 token --sub root --ttl 10m --claim role=admin --claim token_budget=5000 && _adm=$(cat "$OUT") || return 1
    _c=$(curl -s -o "$IT_TMP/sess.json" -w '%{http_code}' -m 10 -X POST -H "Authorization: Bearer $_t" \
         -H 'Content-Type: application/json' -d '{"title": "cli test"}' "$BASE/api/chat/sessions")
    echo "POST /api/chat/sessions as alice: $_c"
    [ "$_c" = 201 ] || [ "$_c" = 200 ] || { cat "$IT_TMP/sess.json"; return 1; }
    _c=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer $_adm" "$BASE/api/admin/overview")
    _p=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer $_t" "$BASE/api/admin/overview")
    _bad=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer ${_t}x" "$BASE/api/usage")
    echo "admin overview: role=admin $_c, plain $_p; a broken token $_bad"
    [ "$_c" = 200 ] && [ "$_p" = 403 ] && [ "$_bad" = 401 ]
}
ok "token --sub/--ttl/--claim: the server accepts it (a session created), role=admin reaches /api/admin/overview" token_accepted

# ---- tickets and sessions ----
tickets_cycle() {
    expect 0 ask -t CLI-T1 "My printer shows error E52" || return 1
    expect 0 tickets list --json &&
    [ "$(js 'd.find((t) => t.id === "CLI-T1").answers' <"$OUT")" = 1 ] &&
    expect 0 tickets show CLI-T1 --json &&
    _s=$(js '`${d.body}|${d.answers.length}|${d.jobs[0].state}|${d.events > 0}`' <"$OUT") &&
    echo "show: $_s" && [ "$_s" = "My printer shows error E52|1|done|true" ] &&
    expect 0 tickets show CLI-T1 && grep -q '^ticket CLI-T1$' "$OUT" &&
    expect 0 tickets forget CLI-T1 && cat "$OUT" && grep -q '1 cached answer deleted' "$OUT" &&
    expect 0 tickets show CLI-T1 --json && [ "$(js 'd.answers.length' <"$OUT")" = 0 ] &&
    expect 1 tickets show NO-SUCH && grep -q "no ticket 'NO-SUCH'" "$ERR" &&
    expect 0 tickets list --limit 1 --offset 0 && [ "$(wc -l <"$OUT")" = 2 ]
}
ok "tickets list/show/forget (after parley ask -t through the simulated LLM)" tickets_cycle

sessions_cycle() {
    expect 0 sessions list --user alice --json &&
    _n=$(js 'd.filter((s) => s.user === "alice" && s.kind === "chat").length' <"$OUT") &&
    echo "alice's sessions: $_n" && [ "$_n" = 1 ] &&
    expect 0 sessions list --user nobody --json && [ "$(js 'd.length' <"$OUT")" = 0 ] &&
    expect 0 sessions purge --older-than 30d && grep -q '^deleted 0 conversations' "$OUT" &&
    sleep 1.1 &&
    expect 0 sessions purge --older-than 1s --user alice && cat "$OUT" && grep -q '^deleted 1 conversation ' "$OUT" &&
    expect 0 sessions list --json && [ "$(js 'd.length' <"$OUT")" = 0 ]
}
ok "sessions list --user / purge --older-than (the session the token created)" sessions_cycle

json_outputs() {
    expect 0 usage alice --json && echo "usage: $(js '`${d.user} today ${d.today.tokens}`' <"$OUT")" &&
    expect 0 stats --json && echo "stats: $(js '`tickets ${d.counts.tickets}, done ${d.generations.done}`' <"$OUT")" &&
    [ "$(js 'd.counts.tickets >= 1 && d.generations.done >= 1' <"$OUT")" = true ] &&
    expect 0 stats && grep -q 'counts.tickets' "$OUT" &&
    expect 0 maintain --json && [ "$(js 'd.ok' <"$OUT")" = true ] && echo "maintain: $(js 'd.optimize' <"$OUT")" &&
    expect 0 kb list --json && [ "$(js 'Array.isArray(d)' <"$OUT")" = true ]
}
ok "usage, stats, maintain, kb list: --json parses" json_outputs

backup_ok() {
    _b=$IT_TMP/data/backup.db
    expect 0 backup "$_b" && cat "$OUT" || return 1
    _n=$(sqlite3 "$_b" "SELECT count(*) FROM brands; SELECT count(*) FROM tickets WHERE id = 'CLI-T1'" | tr '\n' ' ')
    echo "backup: brands and CLI-T1: $_n"
    [ "$_n" = "3 1 " ] || return 1
    $AS_APP env PARLEY_CONFIG= PARLEY_DB="$_b" "$CLI" brands list >"$OUT" 2>"$ERR" && grep -q '^techpro ' "$OUT" &&
    expect 1 backup "$_b" && grep -q 'exists' "$ERR"
}
ok "backup FILE: a database that opens with the rows; an existing FILE is refused (exit 1)" backup_ok
stop_setup

# ---- PostgreSQL ----
it_postgres
DB=$PG_URL
mkdir -p "$IT_TMP/pgnode" && it_own "$IT_TMP/pgnode"
CLI_ENV="PARLEY_NODE_PREFIX=$IT_TMP/pgnode/parley"

unit_pg() {
    PARLEY_TEST_PG=$PG_URL timeout 120 "$BUILD/tests/test_cli_import" >"$IT_TMP/unit.out" 2>&1 ||
        { tail -n 30 "$IT_TMP/unit.out"; return 1; }
    grep -q 'backend: PostgreSQL' "$IT_TMP/unit.out" && ! grep -q '^not ok' "$IT_TMP/unit.out" &&
        echo "$(grep -c '^ok' "$IT_TMP/unit.out") cases passed"
}
ok "PostgreSQL: test_cli_import's cases (import validation, atomic replacement, disable)" unit_pg

pg_commands() {
    expect 0 migrate && expect 0 brands import "$IT_ROOT/share/sample-catalog.json" &&
    expect 0 brands list --json && [ "$(js 'd.map((b) => b.id).join(",")' <"$OUT")" = "homestyle,retired,techpro" ] &&
    expect 1 products import techpro "$IT_TMP/stolen.json" && grep -q "is a product of brand 'homestyle'" "$ERR" &&
    expect 1 products import techpro "$IT_TMP/bad.json" && grep -q 'products\[1\] (tp-4): price' "$ERR" &&
    expect 0 products import techpro "$IT_TMP/good.json" &&
    expect 0 brands disable techpro && expect 0 brands list --json &&
    [ "$(js 'd.find((b) => b.id === "techpro").served' <"$OUT")" = false ] &&
    expect 0 brands enable techpro &&
    expect 0 ask -t PG-T1 "Router code R7" && expect 0 tickets show PG-T1 --json &&
    [ "$(js 'd.answers.length' <"$OUT")" = 1 ] && expect 0 tickets forget PG-T1 &&
    grep -q '1 cached answer deleted' "$OUT" &&
    expect 0 tickets list --json && [ "$(js 'd[0].id' <"$OUT")" = PG-T1 ] &&
    expect 0 sessions list --json && expect 0 sessions purge --older-than 1d &&
    expect 0 stats --json && [ "$(js 'd.counts.tickets' <"$OUT")" = 1 ] &&
    expect 0 maintain --json && echo "maintain: $(js 'd.optimize' <"$OUT")" &&
    expect 0 usage --json && expect 0 token --sub pg-user --claim role=admin
}
ok "PostgreSQL: migrate, brands, products, tickets, sessions, stats, maintain, usage, token" pg_commands

pg_backup() {
    expect 1 backup "$IT_TMP/pg.dump" && cat "$ERR" &&
    grep -q 'pg_dump --format=custom' "$ERR" && [ ! -e "$IT_TMP/pg.dump" ] && [ ! -s "$OUT" ]
}
ok "PostgreSQL: backup prints the pg_dump guidance and exits 1" pg_backup

it_done
