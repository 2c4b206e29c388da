#!/bin/sh
# build-deb.sh — `make deb`: the Debian package parley_<version>_<arch>.deb
# (docs/debian.md), without network.
#
#   packaging/build-deb.sh [BUILD_DIR]      (default build-deb)
#
# 1. A release build of its own in BUILD_DIR: no sanitizers, Debian's
#    hardening flags (dpkg-buildflags with hardening=+all, when dpkg-dev is
#    there), only the three programs.
# 2. The package tree in BUILD_DIR/deb/root:
#      /usr/lib/parley/{parley.fcgi,parley-ws,parley}   the programs, stripped
#      /usr/bin/parley                   packaging/parley.sh (settings, account)
#      /usr/share/man/man1/parley.1.gz   packaging/parley.1
#      /usr/share/parley/www/            www/ (+ vendor/phoenix.js from
#                                        node_modules when it is there)
#      /usr/share/parley/sample-catalog.json   share/sample-catalog.json
#      /etc/parley/parley.env            packaging/parley.env (conffile)
#      /etc/parley/apache/*.conf         apache-conf/parley-proxy-fcgi.conf and
#                                        parley-websocket.conf, placeholders
#                                        filled for the package (conffiles)
#      /lib/systemd/system/              packaging/systemd/*
#      /usr/share/doc/parley/            copyright, changelog.Debian.gz, docs
#    The SQL migrations are compiled into the programs (tools/embed-sql.sh).
# 3. DEBIAN/: control (Depends from dpkg-shlibdeps, else the list below),
#    conffiles (every file under /etc), md5sums, the maintainer scripts.
# 4. dpkg-deb --build --root-owner-group: BUILD_DIR/parley_<version>_<arch>.deb
#
# The version is the top entry of packaging/changelog (its one place);
# the Maintainer field is that entry's signer.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build-deb}
case $B in build | "") echo "build-deb: use a build directory of its own, not '$B'" >&2; exit 2 ;; esac
umask 022

VERSION=$(sed -n '1s/^parley (\([^)]*\)).*$/\1/p' packaging/changelog)
MAINTAINER=$(sed -n 's/^ -- \(.*>\)  .*$/\1/p' packaging/changelog | head -n 1)
[ -n "$VERSION" ] && [ -n "$MAINTAINER" ] || { echo "build-deb: cannot read the version from packaging/changelog" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)

# --- 1. the release build ----------------------------------------------------
if command -v dpkg-buildflags >/dev/null 2>&1; then
    CFLAGS="$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS) $(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)"
    LDFLAGS=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
else
    CFLAGS="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -D_FORTIFY_SOURCE=2"
    LDFLAGS="-Wl,-z,relro -Wl,-z,now"
fi
export CFLAGS LDFLAGS
# (CFLAGS from the environment: the Makefile appends its own to them; given
# on make's command line they would replace its -std=c11 ... instead.)
${MAKE:-make} --no-print-directory -j"$(nproc 2>/dev/null || echo 2)" BUILD="$B" SANITIZE= \
    "$B/parley.fcgi" "$B/parley-ws" "$B/parley"

# --- 2. the tree -------------------------------------------------------------
R=$B/deb/root
rm -rf "$B/deb"
mkdir -p "$R/DEBIAN" "$R/usr/lib/parley" "$R/usr/bin" "$R/usr/share/parley/www" \
    "$R/etc/parley/apache" "$R/lib/systemd/system" "$R/usr/share/doc/parley"

for p in parley.fcgi parley-ws parley; do
    strip --strip-unneeded --remove-section=.comment --remove-section=.note \
        -o "$R/usr/lib/parley/$p" "$B/$p"
    chmod 0755 "$R/usr/lib/parley/$p"
done
install -m 0755 packaging/parley.sh "$R/usr/bin/parley"
mkdir -p "$R/usr/share/man/man1"
gzip -9n <packaging/parley.1 >"$R/usr/share/man/man1/parley.1.gz"
chmod 0644 "$R/usr/share/man/man1/parley.1.gz"

(cd www && find . -type f ! -path './vendor/*' ! -name '.*') | while read -r f; do
    install -D -m 0644 "www/$f" "$R/usr/share/parley/www/$f"
done
PHX_JS=node_modules/phoenix/priv/static/phoenix.js
if [ -f "$PHX_JS" ]; then
    install -D -m 0644 "$PHX_JS" "$R/usr/share/parley/www/vendor/phoenix.js"
else
    echo "build-deb: $PHX_JS is missing (make node-deps): the package has no /vendor/phoenix.js," >&2
    echo "build-deb:   so the seed 003 pages (neuralbridge.html, seed003.html) will not load" >&2
fi

# The demo brands of seed 002, for `parley brands import` (the migrations
# no longer insert them).
if [ -f share/sample-catalog.json ]; then
    install -m 0644 share/sample-catalog.json "$R/usr/share/parley/sample-catalog.json"
fi

install -m 0644 packaging/parley.env "$R/etc/parley/parley.env"
# The snippets of apache-conf/ with the package's values for their
# placeholders (the same substitution as tests/integration/lib.sh it_subst).
for f in parley-proxy-fcgi.conf parley-websocket.conf; do
    {
        echo "# Installed by the parley package: the placeholders of Parley's"
        echo "# apache-conf/$f are filled in for the package's paths and"
        echo "# services (docs/debian.md): include this file in your <VirtualHost>."
        echo "#"
        sed -e 's|@PARLEY_BIN@|/usr/lib/parley|g' \
            -e 's|@PARLEY_WWW@|/usr/share/parley/www|g' \
            -e 's|@PARLEY_DB@|/var/lib/parley/parley.db|g' \
            -e 's|@PARLEY_NODE_PREFIX@|/var/lib/parley/parley.db|g' \
            -e 's|@PARLEY_SOCKET@|/run/parley/parley.sock|g' \
            -e 's|@OLLAMA_SERVER@|http://127.0.0.1:11434|g' \
            -e 's|@WS_PORT@|8081|g' "apache-conf/$f"
    } >"$R/etc/parley/apache/$f"
    if grep -n '^[^#]*@[A-Z_]*@' "$R/etc/parley/apache/$f" >&2; then
        echo "build-deb: apache-conf/$f: a placeholder is left (above)" >&2
        exit 1
    fi
done

install -m 0644 packaging/systemd/parley-fcgi.socket packaging/systemd/parley-fcgi.service \
    packaging/systemd/parley-ws.service "$R/lib/systemd/system/"

D=$R/usr/share/doc/parley
install -m 0644 packaging/copyright "$D/copyright"
gzip -9n <packaging/changelog >"$D/changelog.Debian.gz"
gzip -9n <README.md >"$D/README.md.gz"
for f in debian configuration operations fastcgi ws-bridge postgres errors cli admin; do
    [ -f "docs/$f.md" ] && gzip -9n <"docs/$f.md" >"$D/$f.md.gz"
done
chmod 0644 "$D"/*

# --- 3. DEBIAN/ ----------------------------------------------------------------
DEPENDS=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    # dpkg-shlibdeps wants a debian/control; give it a minimal one.
    S=$B/deb/shlibdeps
    mkdir -p "$S/debian"
    printf 'Source: parley\n\nPackage: parley\nArchitecture: any\n' >"$S/debian/control"
    DEPENDS=$(cd "$S" && dpkg-shlibdeps -O --warnings=0 \
        "$OLDPWD/$R/usr/lib/parley/parley.fcgi" "$OLDPWD/$R/usr/lib/parley/parley-ws" \
        "$OLDPWD/$R/usr/lib/parley/parley" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
    rm -rf "$S"
fi
if [ -z "$DEPENDS" ]; then
    # What dpkg-shlibdeps computes on Debian 12 (checked with dpkg -S on the
    # libraries ldd lists).
    DEPENDS="libc6 (>= 2.34), libcurl4 (>= 7.66.0), libfcgi0ldbl (>= 2.4.2), libjansson4 (>= 2.14), libjwt0 (>= 1.9.0), libpq5 (>= 14~~), libsqlite3-0 (>= 3.20.0), libssl3 (>= 3.0.0), libwebsockets17 (>= 3.2.0)"
fi
# adduser for the account (postinst); util-linux (essential) has setpriv.
DEPENDS="$DEPENDS, adduser"
SIZE=$(du -k -s --exclude=DEBIAN "$R" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@SIZE@|$SIZE|" -e "s|@DEPENDS@|$DEPENDS|" packaging/control.in >"$R/DEBIAN/control"
(cd "$R" && find etc -type f | sort | sed 's|^|/|') >"$R/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 0755 "packaging/$s" "$R/DEBIAN/$s"
done
(cd "$R" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) \
    >"$R/DEBIAN/md5sums"
chmod 0644 "$R/DEBIAN/control" "$R/DEBIAN/conffiles" "$R/DEBIAN/md5sums"
find "$R" -type d -exec chmod 0755 {} +

# --- 4. the package ------------------------------------------------------------
DEB=$B/parley_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$R" "$DEB" >/dev/null
echo "build-deb: $DEB ($(du -k "$DEB" | cut -f1) KB, version $VERSION)"
