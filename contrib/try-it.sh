#!/usr/bin/env bash
# Builds pacserve-fetch, starts a local mirror (nginx on 127.0.0.1) holding a real package made with
# bsdtar, and has pacserve-fetch download it, then resume it after a simulated interruption.
# Needs no internet and no Arch, but python3, nginx and bsdtar: on Debian, run it as root once to
# install nginx and bsdtar.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need nginx || ! need bsdtar; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libarchive-tools zstd >/dev/null
    else
        echo "try-it: needs nginx and bsdtar (Debian: apt-get install nginx-light libarchive-tools zstd)" >&2
        exit 1
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v python3 >/dev/null 2>&1; then
    echo "try-it: needs python3 (to pick a free port for the local mirror; Debian: apt-get install python3)" >&2
    exit 1
fi

# PACSERVE_FETCH_BIN: use an already built binary (the test suite does) instead of building.
if [ -n "${PACSERVE_FETCH_BIN:-}" ]; then
    BIN=$PACSERVE_FETCH_BIN
else
    echo "== building pacserve-fetch (cargo build --release; the first build takes a few minutes)"
    cargo build --release --quiet
    BIN=$PWD/target/release/pacserve-fetch
fi

WORK=$(mktemp -d)
chmod 755 "$WORK"   # nginx workers run as nobody when started by root
trap '[ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/mirror/demo/os/x86_64" "$WORK/pkg/usr/share/demo" "$WORK/cache" "$WORK/tmp"

# A real package: .PKGINFO plus 4 MB of incompressible payload, zstd-compressed like Arch's.
head -c 4000000 /dev/urandom > "$WORK/pkg/usr/share/demo/data"
printf 'pkgname = demo\npkgver = 1.0-1\narch = any\nsize = 4000000\n' > "$WORK/pkg/.PKGINFO"
PKG=demo-1.0-1-any.pkg.tar.zst
bsdtar --zstd -cf "$WORK/mirror/demo/os/x86_64/$PKG" -C "$WORK/pkg" .PKGINFO usr

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/nginx.conf" <<CONF
daemon on; pid $WORK/nginx.pid; worker_processes 1;
events { worker_connections 16; }
http {
    log_format t '\$status \$body_bytes_sent bytes  range="\$http_range"  \$uri';
    access_log $WORK/access.log t;
    client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
    server { listen 127.0.0.1:$PORT; root $WORK/mirror; }
}
CONF
"$NGINX" -p "$WORK" -e "$WORK/error.log" -c "$WORK/nginx.conf"
URL=http://127.0.0.1:$PORT/demo/os/x86_64/$PKG
OUT=$WORK/cache/$PKG.part

echo "== pacserve-fetch --no-peers '$OUT' '$URL'   (mirror only: this demo is about the downloader)"
"$BIN" --no-peers -v "$OUT" "$URL"
echo "== simulate an interrupted download: keep the first 1 MB and run again"
truncate -s 1000000 "$OUT"
"$BIN" --no-peers -v "$OUT" "$URL"
cmp "$OUT" "$WORK/mirror/demo/os/x86_64/$PKG" && echo "== identical to the mirror's copy"
echo "== what the mirror sent (nginx access log):"
sed 's/^/   /' "$WORK/access.log"
