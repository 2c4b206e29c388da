#!/bin/sh
# t0525-cli-readme.sh — README.md's list of CLI commands is the CLI's own
# (issue 8 defect k: README listed compact and recover, the CLI has
# maintain and token). Every synopsis line of `parley --help` appears in
# README's "Command-line tool" section and vice versa, and the Layout
# table's short list names the same commands. `parley --help` exits 0,
# prints to stdout and creates no database.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
CLI=$BUILD/parley
[ -x "$CLI" ] || it_die "$CLI is not built (make)"
it_init

# The synopsis lines of --help, without "usage:" and the indentation.
cli_synopsis() {
    "$CLI" --help | sed -n 's/^\(usage:\)\{0,1\} *\(parley .*\)$/\2/p' | sort -u
}
# The `parley ...` items of README's "## Command-line tool" section.
readme_synopsis() {
    sed -n '/^## Command-line tool/,/^## /p' README.md |
        sed -n 's/^- `\(parley [^`]*\)`.*$/\1/p' | sort -u
}
# Command names of the Layout row of cli/: "(a, b, c; see below)".
readme_layout_names() {
    sed -n 's/^| `cli\/` |.*(\([^)]*\)).*$/\1/p' README.md | sed 's/;.*//' | tr -d ' ' | tr ',' '\n' | sort -u
}

help_ok() {
    ( cd "$IT_TMP" && PARLEY_DB="$IT_TMP/help.db" "$OLDPWD/$CLI" --help >out 2>err ) || { echo "exit status $?"; return 1; }
    [ -s "$IT_TMP/out" ] || { echo "nothing on stdout"; return 1; }
    [ ! -e "$IT_TMP/help.db" ] || { echo "--help created the database"; return 1; }
}
ok "parley --help exits 0 on stdout and touches no database" help_ok

same_list() {
    _a=$(cli_synopsis); _b=$(readme_synopsis)
    [ -n "$_a" ] || { echo "no synopsis in parley --help"; return 1; }
    [ "$_a" = "$_b" ] && return 0
    echo "parley --help:"; printf '%s\n' "$_a" | sed 's/^/  /'
    echo "README.md:"; printf '%s\n' "$_b" | sed 's/^/  /'
    return 1
}
ok "README's command list is parley --help's synopsis" same_list

same_names() {
    _a=$(cli_synopsis | awk '{print $2}' | grep -v '^-' | sort -u)
    _b=$(readme_layout_names)
    [ "$_a" = "$_b" ] && return 0
    echo "parley --help: $(echo $_a)"; echo "README Layout: $(echo $_b)"
    return 1
}
ok "README's Layout row names the same commands" same_names
it_done
