#!/bin/sh
# t0880-deb.sh — the Debian package (issue 12 item 4, docs/debian.md):
# `make deb`'s parley_<version>_<arch>.deb, installed, its two programs
# started exactly as its systemd units start them, Apache in front with the
# packaged /etc/parley/apache snippets, and a seed 000 ticket answered
# through it (WebSocket to the bridge, REST to parley.fcgi, one database).
#
# Two ways to install, the same checks after it:
#   extract  dpkg -x into a throw-away root under the temporary directory;
#            the package's absolute paths (/etc/parley, /usr/lib/parley,
#            /usr/share/parley, /var/lib/parley, /run/parley) are moved
#            under that root in the files read below, and what postinst
#            would do (state directory, secret, migrate) is done here, as
#            the app account (www-data as root, else the current user).
#            Nothing on the machine changes. The default.
#   install  dpkg -i for real: postinst creates the parley account, its
#            /var/lib/parley, the secret and the database; the programs run
#            as the units' User=/Group=; at the end dpkg --purge, checked
#            too (a parley account this test created is removed again).
#            As root with IT_DEB_INSTALL=1, or as root on CI (CI set, as CI
#            services do) unless IT_DEB_INSTALL=0; never when a parley
#            package is already installed (extract then).
#
# "As the units start them": from the shipped unit files, not copied here —
# parley-fcgi.socket's ListenStream=/SocketUser=/SocketGroup=/SocketMode=
# (a listening unix socket handed over on fd 0, as StandardInput=socket
# does: socket-unit.pl below), the services' User=, Group=,
# UMask=, Environment=, EnvironmentFile= and ExecStart= in a clean
# environment (systemd's PATH only). The one change: parley-ws listens on a
# free port instead of 8081 (in its ExecStart= and parley-websocket.conf),
# so that the test never collides with anything on the machine.
#
# Also: the package's contents, conffiles, Depends and version
# (packaging/changelog); maintainer scripts parse (sh -n); a release build
# (no sanitizer runtime linked); systemd-analyze verify on the units (when
# installed); lintian's errors (when lintian is installed; it is not in
# tools/deps.sh: 128 packages). IT_DEB=FILE tests that package instead of
# building one (packaging/build-deb.sh into DEB_BUILD, default build-deb).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _c in dpkg-deb perl "$APACHE_BIN"; do
    if ! command -v "$_c" >/dev/null 2>&1; then
        echo "ok 1 - the Debian package # SKIP $_c is not installed"
        echo "1..1"
        exit 0
    fi
done
if [ ! -f "$APACHE_MODULES/mod_proxy_fcgi.so" ]; then
    echo "ok 1 - the Debian package # SKIP mod_proxy_fcgi is not installed"
    echo "1..1"
    exit 0
fi

# (the seed 002 sample catalogue is not needed here)
IT_NO_SAMPLE_CATALOG=1
it_init
it_fake_llm

# --- the package --------------------------------------------------------------
DEB_BUILD=${DEB_BUILD:-build-deb}
if [ -n "${IT_DEB:-}" ]; then
    DEB=$IT_DEB
else
    if ! packaging/build-deb.sh "$DEB_BUILD" >"$IT_TMP/build-deb.log" 2>&1; then
        tail -n 30 "$IT_TMP/build-deb.log" | sed 's/^/# /'
        it_die "packaging/build-deb.sh $DEB_BUILD failed"
    fi
    DEB=$(sed -n 's/^build-deb: \(.*\.deb\) (.*$/\1/p' "$IT_TMP/build-deb.log")
fi
[ -f "$DEB" ] || it_die "no package: '$DEB'"
VERSION=$(sed -n '1s/^parley (\([^)]*\)).*$/\1/p' packaging/changelog)

MODE=extract
if [ "$(id -u)" = 0 ]; then
    case ${IT_DEB_INSTALL:-auto} in
    1) MODE=install ;;
    auto) [ -n "${CI:-}" ] && MODE=install ;;
    esac
    if [ "$MODE" = install ] && dpkg-query -W -f='${Status}' parley 2>/dev/null | grep -q ' installed'; then
        it_log "a parley package is installed on this machine: not touching it, extracting instead"
        MODE=extract
    fi
elif [ "${IT_DEB_INSTALL:-}" = 1 ]; then
    it_die "IT_DEB_INSTALL=1 needs root (dpkg -i)"
fi
it_log "package $DEB, mode $MODE"

check_name() {
    _b=$(basename "$DEB")
    [ "$_b" = "parley_${VERSION}_$(dpkg --print-architecture).deb" ] ||
        { echo "file name $_b, version in packaging/changelog $VERSION"; return 1; }
    _v=$(dpkg-deb -f "$DEB" Version)
    [ "$_v" = "$VERSION" ] || { echo "Version: $_v, changelog: $VERSION"; return 1; }
}
ok "the package is parley_<packaging/changelog's version>_<arch>.deb" check_name

check_contents() {
    dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|' >"$IT_TMP/contents"
    for _p in /usr/lib/parley/parley.fcgi /usr/lib/parley/parley-ws /usr/lib/parley/parley \
              /usr/bin/parley /usr/share/parley/www/index.html /usr/share/parley/www/parley.js \
              /etc/parley/parley.env /etc/parley/apache/parley-proxy-fcgi.conf \
              /etc/parley/apache/parley-websocket.conf /lib/systemd/system/parley-fcgi.socket \
              /lib/systemd/system/parley-fcgi.service /lib/systemd/system/parley-ws.service \
              /usr/share/doc/parley/copyright /usr/share/doc/parley/changelog.Debian.gz \
              /usr/share/man/man1/parley.1.gz /usr/share/parley/sample-catalog.json; do
        grep -qx "$_p" "$IT_TMP/contents" || { echo "missing: $_p"; return 1; }
    done
    # every packaged page is the one in www/
    for _f in www/*; do
        [ -f "$_f" ] || continue
        grep -qx "/usr/share/parley/$_f" "$IT_TMP/contents" || { echo "missing: /usr/share/parley/$_f"; return 1; }
    done
    # SQL is compiled in: no .sql file is needed at run time
    ! grep -q '\.sql$' "$IT_TMP/contents" || { echo "a .sql file is packaged"; return 1; }
    dpkg-deb -e "$DEB" "$IT_TMP/DEBIAN"
    for _c in /etc/parley/parley.env /etc/parley/apache/parley-proxy-fcgi.conf \
              /etc/parley/apache/parley-websocket.conf; do
        grep -qx "$_c" "$IT_TMP/DEBIAN/conffiles" || { echo "not a conffile: $_c"; return 1; }
    done
    _dep=$(dpkg-deb -f "$DEB" Depends)
    for _d in libcurl4 libjansson4 libsqlite3-0 libjwt0 libssl3 libfcgi0ldbl libwebsockets17 libpq5 adduser; do
        case ", $_dep" in *", $_d "* | *", $_d,"* | *", $_d") ;; *) echo "Depends lacks $_d: $_dep"; return 1 ;; esac
    done
    for _s in postinst prerm postrm; do
        sh -n "$IT_TMP/DEBIAN/$_s" || { echo "$_s: syntax error"; return 1; }
    done
}
ok "contents: programs, wrapper, pages, conffiles, units, docs; Depends; maintainer scripts parse" check_contents

# --- install ----------------------------------------------------------------------
ROOT=""
HAD_USER=""
if [ "$MODE" = install ]; then
    id parley >/dev/null 2>&1 && HAD_USER=1
    HAD_GROUP="" HAD_RUN=""
    getent group parley >/dev/null 2>&1 && HAD_GROUP=1
    [ -e /run/parley ] && HAD_RUN=1
    # rootify: the package's paths are where they are
    rootify() { cat; }
    check_install() {
        DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" >"$IT_TMP/dpkg-i.log" 2>&1 ||
            { cat "$IT_TMP/dpkg-i.log"; return 1; }
        id parley >/dev/null 2>&1 || { echo "no parley account"; return 1; }
        _s=$(stat -c '%U:%G %a' /var/lib/parley)
        [ "$_s" = "parley:parley 750" ] || { echo "/var/lib/parley: $_s"; return 1; }
        _s=$(stat -c '%U %s' /var/lib/parley/parley.db 2>&1)
        case $_s in "parley "[1-9]*) ;; *) echo "the database: $_s"; return 1 ;; esac
        _s=$(stat -c '%U:%G %a' /etc/parley/secret.env)
        [ "$_s" = "root:parley 640" ] || { echo "secret.env: $_s"; return 1; }
        grep -Eq '^PARLEY_JWT_SECRET=[A-Za-z0-9_-]{64}$' /etc/parley/secret.env ||
            { echo "secret.env has no generated secret"; return 1; }
        _s=$(stat -c '%U:%G %a' /etc/parley/parley.env)
        [ "$_s" = "root:parley 640" ] || { echo "parley.env: $_s (statoverride)"; return 1; }
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            [ -L /etc/systemd/system/sockets.target.wants/parley-fcgi.socket ] &&
            [ -L /etc/systemd/system/multi-user.target.wants/parley-ws.service ] ||
                { echo "units not enabled"; return 1; }
        fi
        # migrate again: nothing to do, still fine (as root: run as parley)
        /usr/bin/parley migrate >/dev/null || { echo "parley migrate failed after install"; return 1; }
        [ "$(stat -c %U /var/lib/parley/parley.db)" = parley ] || { echo "database owner changed"; return 1; }
    }
    # However this file ends, the machine is left as it was found: the
    # processes stopped, the package purged, the account this test created
    # removed (check_purge below checks the purge itself first).
    PURGED=""
    deb_undo() {
        _rc=$?
        [ -n "$SETUP_PIDS$IT_PIDS" ] && it_stop $SETUP_PIDS $IT_PIDS
        IT_PIDS="" SETUP_PIDS=""
        if [ -z "$PURGED" ] && dpkg-query -W parley >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive dpkg --purge parley >/dev/null 2>&1 || echo "# dpkg --purge parley failed"
        fi
        if [ -z "$HAD_USER" ] && id parley >/dev/null 2>&1; then
            deluser --quiet --system parley >/dev/null 2>&1 || userdel parley 2>/dev/null || true
        fi
        if [ -z "$HAD_GROUP" ] && getent group parley >/dev/null 2>&1; then
            delgroup --quiet --system parley >/dev/null 2>&1 || groupdel parley 2>/dev/null || true
        fi
        [ -z "$HAD_RUN" ] && rm -rf /run/parley
        (exit $_rc)
        it_cleanup
    }
    trap deb_undo EXIT
    ok "dpkg -i: the parley account, /var/lib/parley (parley, 0750), the database, a generated secret (root:parley 0640), parley.env 0640 by statoverride, units enabled" check_install
    SVC_USER_MAP=""
else
    ROOT=$IT_TMP/root
    mkdir -p "$ROOT"
    rootify() {
        sed -e "s|/etc/parley|$ROOT/etc/parley|g" -e "s|/usr/lib/parley|$ROOT/usr/lib/parley|g" \
            -e "s|/usr/share/parley|$ROOT/usr/share/parley|g" -e "s|/var/lib/parley|$ROOT/var/lib/parley|g" \
            -e "s|/run/parley|$ROOT/run/parley|g"
    }
    check_extract() {
        dpkg -x "$DEB" "$ROOT" || return 1
        # the files read at run time, moved under the root
        for _f in etc/parley/parley.env etc/parley/apache/parley-proxy-fcgi.conf \
                  etc/parley/apache/parley-websocket.conf usr/bin/parley; do
            rootify <"$ROOT/$_f" >"$ROOT/$_f.new" && cat "$ROOT/$_f.new" >"$ROOT/$_f" && rm "$ROOT/$_f.new"
        done
        # what postinst does, for the app account
        mkdir -p "$ROOT/var/lib/parley" "$ROOT/run"
        chmod 750 "$ROOT/var/lib/parley"
        printf 'PARLEY_JWT_SECRET=%s\n' "$(head -c 48 /dev/urandom | base64 -w 0 | tr '+/' '-_')" \
            >"$ROOT/etc/parley/secret.env"
        chmod 640 "$ROOT/etc/parley/secret.env" "$ROOT/etc/parley/parley.env"
        it_own "$ROOT/var/lib/parley" "$ROOT/etc/parley" "$ROOT/run"
        $AS_APP "$ROOT/usr/bin/parley" migrate >/dev/null || { echo "parley migrate failed"; return 1; }
        [ -s "$ROOT/var/lib/parley/parley.db" ] || { echo "no database after migrate"; return 1; }
    }
    ok "dpkg -x into a throw-away root; state directory, secret, parley migrate (as postinst does)" check_extract
    # the units' accounts: the app account here
    SVC_USER_MAP=${APP_USER:+$APP_USER:$APP_GROUP}
fi
P() { printf '%s\n' "$1" | rootify; }          # a package path, where it is now

check_release() {
    for _p in parley.fcgi parley-ws parley; do
        _l=$(ldd "$(P /usr/lib/parley/$_p)") || { echo "ldd $_p failed"; return 1; }
        case $_l in *libasan* | *libubsan* | *"not found"*) echo "$_p: $_l"; return 1 ;; esac
    done
}
ok "the programs are a release build: no sanitizer runtime, every library found" check_release

# The packaged settings, as an admin sets them (docs/debian.md): the
# simulated LLM as the upstream.
sed -i "s|^OLLAMA_SERVER=.*|OLLAMA_SERVER=$FAKE_LLM_URL|" "$(P /etc/parley/parley.env)"

# --- the units --------------------------------------------------------------------
UNITS=$IT_TMP/units
mkdir -p "$UNITS"
WSPORT=$(free_port)
UNITDIR=${ROOT:-}/lib/systemd/system
FCGI_PID="" WS_PID=""
for _u in parley-fcgi.socket parley-fcgi.service parley-ws.service; do
    [ -s "$UNITDIR/$_u" ] || it_die "the package has no $UNITDIR/$_u"
    rootify <"$UNITDIR/$_u" | sed "s|127\.0\.0\.1:8081|127.0.0.1:$WSPORT|g" >"$UNITS/$_u"
done
[ "$MODE" = extract ] && for _u in parley-fcgi.socket parley-fcgi.service parley-ws.service; do
    rootify <"$UNITDIR/$_u" >"$UNITS/$_u.verify"
done

# unit_get FILE KEY — the values of KEY= lines in FILE, one a line
unit_get() { sed -n "s/^$2=//p" "$1"; }

if command -v systemd-analyze >/dev/null 2>&1; then
    check_verify() {
        if [ "$MODE" = install ]; then
            set -- /lib/systemd/system/parley-fcgi.socket /lib/systemd/system/parley-fcgi.service \
                /lib/systemd/system/parley-ws.service
        else
            mkdir -p "$IT_TMP/verify"
            for _u in parley-fcgi.socket parley-fcgi.service parley-ws.service; do
                cp "$UNITS/$_u.verify" "$IT_TMP/verify/$_u"
            done
            set -- "$IT_TMP/verify/parley-fcgi.socket" "$IT_TMP/verify/parley-fcgi.service" \
                "$IT_TMP/verify/parley-ws.service"
        fi
        # (lines about other units are the machine's, not ours)
        _out=$(cd "$IT_TMP" && systemd-analyze verify "$@" 2>&1) || true
        if printf '%s\n' "$_out" | grep 'parley'; then return 1; fi
        return 0
    }
    ok "systemd-analyze verify: the three units" check_verify
else
    TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - systemd-analyze verify # SKIP systemd-analyze is not installed"
fi

check_unit_lines() {
    for _u in parley-fcgi.service parley-ws.service; do
        for _k in Restart=on-failure ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
                  NoNewPrivileges=yes StateDirectory=parley User=parley \
                  "EnvironmentFile=$(P /etc/parley/parley.env)"; do
            grep -qx "$_k" "$UNITS/$_u" || { echo "$_u lacks $_k"; return 1; }
        done
    done
    grep -qx 'StandardInput=socket' "$UNITS/parley-fcgi.service" || { echo "parley-fcgi.service: no StandardInput=socket"; return 1; }
    grep -qx 'Requires=parley-fcgi.socket' "$UNITS/parley-fcgi.service" || { echo "no Requires=parley-fcgi.socket"; return 1; }
}
ok "the services: Restart=on-failure, the sandbox, StateDirectory=parley, User=parley, the settings file; parley.fcgi on the socket unit's fd 0" check_unit_lines

# map_user NAME — the account a unit names, for this run
map_user() {
    if [ -n "$SVC_USER_MAP" ]; then
        case $1 in parley) echo "${SVC_USER_MAP%%:*}" ;; *) echo "$1" ;; esac
    else
        echo "$1"
    fi
}
map_group() {
    if [ -n "$SVC_USER_MAP" ]; then
        case $1 in parley) echo "${SVC_USER_MAP#*:}" ;; *) echo "$1" ;; esac
    else
        echo "$1"
    fi
}

# unit_cmd UNIT — the command line systemd would run for UNIT's service:
# a clean environment with Environment= and EnvironmentFile= (KEY=VALUE
# lines; "#" comment lines and blank lines skipped; a leading "-": may be
# missing), UMask=, then User=/Group= (as root), then ExecStart=. Printed
# as arguments, one a line (no value here has blanks).
unit_cmd() {
    IFS=' 	
'                                   # (run in $(...): the caller's IFS stays)
    _f=$UNITS/$1
    echo env; echo -i; echo "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    unit_get "$_f" Environment
    for _ef in $(unit_get "$_f" EnvironmentFile); do
        case $_ef in -*) _ef=${_ef#-}; [ -r "$_ef" ] || continue ;; esac
        grep -v '^[[:space:]]*#' "$_ef" | grep '='
    done
    if [ "$(id -u)" = 0 ]; then
        _usr=$(map_user "$(unit_get "$_f" User)")
        _grp=$(map_group "$(unit_get "$_f" Group)")
        echo setpriv; echo "--reuid=$_usr"; echo "--regid=$_grp"; echo --init-groups; echo --
    fi
    for _w in $(unit_get "$_f" ExecStart); do echo "$_w"; done
}

# The socket unit, then parley-fcgi.service on its fd 0, as systemd does
# for StandardInput=socket: the socket's directory (DirectoryMode=), the
# listening socket (SocketUser=, SocketGroup=, SocketMode=) duplicated onto
# fd 0, the service's UMask=, then its command.
#   socket-unit.pl PATH MODE DIRMODE USER|- GROUP UMASK CMD...
cat >"$IT_TMP/socket-unit.pl" <<'EOF_PL'
use strict; use warnings; use Socket; use POSIX ();
my ($path, $mode, $dirmode, $user, $group, $umask, @cmd) = @ARGV;
my @dirs; (my $d = $path) =~ s|/[^/]*$||;
until (-d $d) { unshift @dirs, $d; $d =~ s|/[^/]*$||; }
for (@dirs) { mkdir $_ or die "mkdir $_: $!\n"; chmod oct($dirmode), $_; }
unlink $path if -S $path;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n";
my $old = umask 077;
bind($s, pack_sockaddr_un($path)) or die "bind $path: $!\n";
umask $old;
listen($s, 128) or die "listen: $!\n";
if ($user ne '-') {
    my $uid = getpwnam($user); my $gid = getgrnam($group);
    defined $uid && defined $gid or die "no account $user:$group\n";
    chown $uid, $gid, $path or die "chown $path: $!\n";
}
chmod oct($mode), $path or die "chmod $path: $!\n";
defined POSIX::dup2(fileno($s), 0) or die "dup2: $!\n";
umask oct($umask);
exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!\n";
EOF_PL
SOCK=$(unit_get "$UNITS/parley-fcgi.socket" ListenStream)
start_fcgi_unit() {
    _su=-
    [ "$(id -u)" = 0 ] && _su=$(map_user "$(unit_get "$UNITS/parley-fcgi.socket" SocketUser)")
    _sg=$(map_group "$(unit_get "$UNITS/parley-fcgi.socket" SocketGroup)")
    set -- perl "$IT_TMP/socket-unit.pl" "$SOCK" \
        "$(unit_get "$UNITS/parley-fcgi.socket" SocketMode)" \
        "$(unit_get "$UNITS/parley-fcgi.socket" DirectoryMode)" "$_su" "$_sg" \
        "$(unit_get "$UNITS/parley-fcgi.service" UMask)"
    _IFS=$IFS; IFS='
'
    # shellcheck disable=SC2046
    set -- "$@" $(unit_cmd parley-fcgi.service)
    IFS=$_IFS
    it_bg "$IT_TMP/parley-fcgi.log" "$@"
    FCGI_PID=$IT_LAST_PID
    it_wait_socket "$SOCK" || true
    sleep 0.3
}
check_fcgi_unit() {
    it_alive "$FCGI_PID" && [ -S "$SOCK" ] || { cat "$IT_TMP/parley-fcgi.log"; return 1; }
    _s=$(stat -c '%G %a' "$SOCK")
    case $(id -u) in 0) _want="$(map_group "$(unit_get "$UNITS/parley-fcgi.socket" SocketGroup)") 660" ;; *) _want="$(id -gn) 660" ;; esac
    [ "$_s" = "$_want" ] || { echo "socket $SOCK: $_s, expected $_want"; return 1; }
    _u=$(stat -c %U "/proc/$FCGI_PID")
    _want=$(map_user "$(unit_get "$UNITS/parley-fcgi.service" User)")
    [ "$(id -u)" = 0 ] || _want=$(id -un)
    [ "$_u" = "$_want" ] || { echo "parley.fcgi runs as $_u, expected $_want"; return 1; }
}
# (started here, not inside ok's $(...): this shell must know the pid)
start_fcgi_unit
ok "parley.fcgi started as parley-fcgi.socket + parley-fcgi.service start it (socket on fd 0, the units' accounts)" check_fcgi_unit

start_ws_unit() {
    _IFS=$IFS; IFS='
'
    # shellcheck disable=SC2046
    set -- $(unit_cmd parley-ws.service)
    IFS=$_IFS
    it_bg "$IT_TMP/parley-ws.log" perl -e 'umask oct shift @ARGV; exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n"' \
        "$(unit_get "$UNITS/parley-ws.service" UMask)" "$@"
    WS_PID=$IT_LAST_PID
}
check_ws_unit() {
    it_wait_port "$WSPORT" "$WS_PID" || { cat "$IT_TMP/parley-ws.log"; return 1; }
    _u=$(stat -c %U "/proc/$WS_PID")
    _want=$(map_user "$(unit_get "$UNITS/parley-ws.service" User)")
    [ "$(id -u)" = 0 ] || _want=$(id -un)
    [ "$_u" = "$_want" ] || { echo "parley-ws runs as $_u, expected $_want"; return 1; }
}
start_ws_unit
ok "parley-ws started as parley-ws.service starts it" check_ws_unit

# --- Apache with the packaged snippets ------------------------------------------------
WS_PORT=$WSPORT
it_setup_dir deb "$(P /usr/lib/parley/parley.fcgi)"
for _f in parley-proxy-fcgi.conf parley-websocket.conf; do
    sed "s|127\.0\.0\.1:8081|127.0.0.1:$WSPORT|g" "$(P /etc/parley/apache/$_f)" >"$SETUP_DIR/conf/$_f"
done
APACHE_INCLUDES="parley-proxy-fcgi.conf parley-websocket.conf"
apache_conf proxy proxy_fcgi proxy_http
apache_run "packaged /etc/parley/apache snippets"
# (the units' processes are not this setup's: stop_setup leaves them)
SETUP_PIDS=$(echo " $SETUP_PIDS " | sed "s/ $FCGI_PID / /; s/ $WS_PID / /")

# --- a seed suite through it ---------------------------------------------------------
# pcli ARGS... — the packaged /usr/bin/parley as the admin runs it: as root
# when installed (it switches to parley itself), else as the app account
pcli() {
    if [ "$MODE" = install ]; then /usr/bin/parley "$@"; else $AS_APP "$ROOT/usr/bin/parley" "$@"; fi
}
TOKEN=$(pcli token --sub alice --ttl 10m 2>"$IT_TMP/token.err") || true
check_token() { [ -n "$TOKEN" ] || { cat "$IT_TMP/token.err"; return 1; }; }
ok "parley token (the packaged /usr/bin/parley with the generated secret)" check_token

check_catalog() {
    _c=$(curl -fsS -m 5 "$BASE/brands/active") || { echo "GET /brands/active failed"; return 1; }
    case $_c in *techpro*) echo "brands before the import: $_c"; return 1 ;; esac
    pcli brands import "$(P /usr/share/parley/sample-catalog.json)" || return 1
    _c=$(curl -fsS -m 5 "$BASE/brands/active") || { echo "GET /brands/active failed"; return 1; }
    case $_c in *techpro*homestyle* | *homestyle*techpro*) ;; *) echo "brands after the import: $_c"; return 1 ;; esac
}
ok "parley brands import /usr/share/parley/sample-catalog.json: the brands are served (/brands/active)" check_catalog

check_health() {
    _j=$(curl -sS -m 5 -w '\n%{http_code}' "$BASE/api/health") || return 1
    case $_j in *"
200") ;; *) echo "$_j"; return 1 ;; esac
    printf '%s\n' "$_j" | head -n 1 | grep -q '^{' || { echo "$_j"; return 1; }
}
ok "GET /api/health through Apache and the socket: 200 JSON" check_health

check_pages() {
    for _f in index.html parley.js style.css; do
        curl -fsS -m 5 "$BASE/$_f" -o "$IT_TMP/page" || { echo "GET /$_f failed"; return 1; }
        cmp -s "$IT_TMP/page" "www/$_f" || { echo "/$_f is not www/$_f"; return 1; }
    done
}
ok "the pages are the packaged www/ (DocumentRoot /usr/share/parley/www)" check_pages

check_refused() {
    _c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$BASE/api/tickets/1/ai")
    [ "$_c" = 401 ] || { echo "no token: HTTP $_c, expected 401"; return 1; }
    if node tests/integration/ws-ticket.mjs "ws://127.0.0.1:$HTTP_PORT/api/websocket/chat/8800" \
            "no token [[fake tokens=2 token_ms=10 first_ms=0]]" >"$IT_TMP/ws-notoken.log" 2>&1; then
        echo "the bridge answered without a token"; return 1
    fi
}
ok "without a token: parley.fcgi 401, the bridge refuses (the secret is in effect in both)" check_refused

TICKET=8801
check_ws() {
    node tests/integration/ws-ticket.mjs "ws://127.0.0.1:$HTTP_PORT/api/websocket/chat/$TICKET?token=$TOKEN" \
        "Packaged Parley ticket $TICKET [[fake tokens=6 token_ms=100 first_ms=0]]" --min-spread 300
}
ok "seed 000 over WebSocket through Apache to parley-ws: the answer streams" check_ws

check_rest() {
    _j=$(curl -fsS -m 5 -H "Authorization: Bearer $TOKEN" "$BASE/api/tickets/$TICKET/ai") ||
        { echo "GET /api/tickets/$TICKET/ai failed"; return 1; }
    case $_j in *'"response"'*) ;; *) echo "$_j"; return 1 ;; esac
    case $_j in *'"response":null'* | *'"response": null'*) echo "no stored answer: $_j"; return 1 ;; esac
}
ok "seed 000 REST through Apache to parley.fcgi: the bridge's answer is stored (one database)" check_rest

check_db_owner() {
    _db=$(P /var/lib/parley/parley.db)
    _want=$(map_user parley)
    [ "$(id -u)" = 0 ] || _want=$(id -un)
    for _f in "$_db" "$_db-bell" "$_db-ws.up"; do
        [ -e "$_f" ] || { echo "missing $_f"; return 1; }
        [ "$(stat -c %U "$_f")" = "$_want" ] || { echo "$_f: owner $(stat -c %U "$_f"), expected $_want"; return 1; }
    done
}
ok "the database, its doorbell and the bridge's marker in /var/lib/parley, owned by the service account" check_db_owner

check_backup() {
    _bk=$(P /var/lib/parley/t0880-backup.db)
    pcli backup "$_bk" >/dev/null || return 1
    [ -s "$_bk" ] || { echo "no backup file"; return 1; }
    if command -v sqlite3 >/dev/null 2>&1; then
        _n=$(sqlite3 "$_bk" "SELECT count(*) FROM brands") || return 1
        [ "$_n" -ge 2 ] || { echo "backup has $_n brands"; return 1; }
    fi
    rm -f "$_bk"
}
ok "parley backup into /var/lib/parley while the services run: a database with the imported brands" check_backup

# --- upgrade (install mode) --------------------------------------------------------------
if [ "$MODE" = install ]; then
    # The same package as a newer version (Version bumped in its control),
    # installed over the running installation as an upgrade is: the
    # account, the secret, the admin's parley.env (changed above), its
    # statoverride and the database stay; postinst migrates again.
    check_upgrade() {
        _up=$IT_TMP/upgrade
        rm -rf "$_up"
        dpkg-deb -R "$DEB" "$_up" || return 1
        sed -i "s/^Version: .*/Version: ${VERSION}+t0880/" "$_up/DEBIAN/control"
        dpkg-deb --root-owner-group --build "$_up" "$IT_TMP/parley-upgrade.deb" >/dev/null || return 1
        _sec=$(md5sum </etc/parley/secret.env)
        _env=$(md5sum </etc/parley/parley.env)
        DEBIAN_FRONTEND=noninteractive dpkg -i "$IT_TMP/parley-upgrade.deb" >"$IT_TMP/dpkg-up.log" 2>&1 ||
            { cat "$IT_TMP/dpkg-up.log"; return 1; }
        _v=$(dpkg-query -W -f='${Version}' parley)
        [ "$_v" = "${VERSION}+t0880" ] || { echo "installed version $_v"; return 1; }
        [ "$(md5sum </etc/parley/secret.env)" = "$_sec" ] || { echo "the secret changed"; return 1; }
        [ "$(md5sum </etc/parley/parley.env)" = "$_env" ] || { echo "the admin's parley.env was replaced"; return 1; }
        _s=$(stat -c '%U:%G %a' /etc/parley/parley.env)
        [ "$_s" = "root:parley 640" ] || { echo "parley.env after the upgrade: $_s"; return 1; }
        # the old token still works and the stored answer is still there
        check_rest
    }
    ok "upgrade (dpkg -i of a newer version): secret, the admin's parley.env (0640), database and tokens kept" check_upgrade
fi

# --- lintian ---------------------------------------------------------------------------
if command -v lintian >/dev/null 2>&1; then
    check_lintian() {
        lintian --tag-display-limit 0 "$DEB" >"$IT_TMP/lintian.log" 2>&1 || true
        grep -E '^[EWI]: ' "$IT_TMP/lintian.log" | head -n 40
        grep -qE '^(E|W): ' "$IT_TMP/lintian.log" ||
            grep -q '^running\|^N: \|^$' "$IT_TMP/lintian.log" || { cat "$IT_TMP/lintian.log"; return 1; }
        ! grep -q '^E: ' "$IT_TMP/lintian.log"
    }
    ok "lintian: no error (warnings are listed in docs/debian.md)" check_lintian
else
    TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - lintian # SKIP lintian is not installed"
fi

# --- purge -------------------------------------------------------------------------------
if [ "$MODE" = install ]; then
    stop_setup
    it_stop "$WS_PID" "$FCGI_PID"
    check_purge() {
        DEBIAN_FRONTEND=noninteractive dpkg --purge parley >"$IT_TMP/dpkg-purge.log" 2>&1 ||
            { cat "$IT_TMP/dpkg-purge.log"; return 1; }
        for _p in /var/lib/parley /etc/parley /usr/lib/parley /usr/bin/parley /lib/systemd/system/parley-ws.service \
                  /etc/systemd/system/sockets.target.wants/parley-fcgi.socket; do
            [ -e "$_p" ] || [ -L "$_p" ] && { echo "left after purge: $_p"; return 1; }
        done
        ! dpkg-statoverride --list /etc/parley/parley.env >/dev/null 2>&1 || { echo "statoverride left"; return 1; }
        id parley >/dev/null 2>&1 || { echo "the parley account was removed (docs/debian.md says it stays)"; return 1; }
    }
    ok "dpkg --purge: files, state, secret, statoverride and unit links gone; the account stays" check_purge
    PURGED=1
fi

it_done
