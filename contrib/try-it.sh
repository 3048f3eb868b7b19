#!/usr/bin/env bash
# Builds pacserve-fetch, starts a local mirror (nginx on 127.0.0.1) holding a real package made with
# bsdtar, and has pacserve-fetch download it, then resume it after a simulated interruption.
# Everything a user may set is in usage() below, which --help prints.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: ./contrib/try-it.sh [--no-build]

Builds pacserve-fetch (cargo build --release), serves a real package from nginx on 127.0.0.1,
and has pacserve-fetch download it, then resume it after a simulated interruption, printing
the mirror's access log as proof. Needs no internet and no Arch, but nginx, bsdtar and python3;
run as root on Debian, it installs nginx-light, libarchive-tools and zstd itself.

  --no-build          use the pacserve-fetch cargo has built already (release, else debug),
                      from cargo's target directory, instead of building
  -h, --help          this text

Environment:
  PACSERVE_FETCH_BIN  an already built pacserve-fetch: nothing is built or looked up
  CARGO_TARGET_DIR    where cargo puts what it builds; honoured, as are build.target-dir in
                      .cargo/config.toml and CARGO_BUILD_TARGET_DIR (the script asks cargo
                      metadata where the target directory is)
  CARGO               the cargo program to run (default: cargo)
USAGE
}

die() {
    echo "try-it: $*" >&2
    exit 1
}

build=yes
for arg in "$@"; do
    case $arg in
        -h | --help) usage; exit 0 ;;
        --no-build) build=no ;;
        *) echo "try-it: unknown argument '$arg' (see ./contrib/try-it.sh --help)" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need nginx || ! need bsdtar; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libarchive-tools zstd >/dev/null
    else
        die "needs nginx and bsdtar (Debian: apt-get install nginx-light libarchive-tools zstd; Arch: pacman -S nginx libarchive)"
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
need python3 || die "needs python3 (to pick a free port for the local mirror; Debian: apt-get install python3)"

# Where cargo puts binaries: ask cargo rather than assume ./target, so CARGO_TARGET_DIR and
# cargo's configuration are honoured exactly as cargo honours them.
target_dir() {
    "$CARGO" metadata --format-version 1 --no-deps --offline 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null
}

if [ -n "${PACSERVE_FETCH_BIN:-}" ]; then
    [ -f "$PACSERVE_FETCH_BIN" ] && [ -x "$PACSERVE_FETCH_BIN" ] ||
        die "PACSERVE_FETCH_BIN=$PACSERVE_FETCH_BIN is not an executable file"
    BIN=$PACSERVE_FETCH_BIN
else
    CARGO=${CARGO:-cargo}
    need "$CARGO" || die "needs cargo to build pacserve-fetch (https://rustup.rs; Arch: pacman -S rust), or PACSERVE_FETCH_BIN=/path/to/pacserve-fetch"
    if [ "$build" = yes ]; then
        echo "== building pacserve-fetch (cargo build --release; the first build takes a few minutes)"
        "$CARGO" build --release --quiet --bin pacserve-fetch || die "cargo build --release failed (its errors are above)"
    fi
    TARGET=$(target_dir) && [ -n "$TARGET" ] ||
        die "cargo metadata cannot say where cargo's target directory is; set PACSERVE_FETCH_BIN instead"
    profiles=release
    [ "$build" = no ] && profiles="release debug"
    BIN=
    for profile in $profiles; do
        if [ -x "$TARGET/$profile/pacserve-fetch" ]; then
            BIN=$TARGET/$profile/pacserve-fetch
            break
        fi
    done
    [ -n "$BIN" ] || die "no pacserve-fetch in $TARGET/{${profiles// /,}} (cargo's target directory); build it with cargo build --release, or set PACSERVE_FETCH_BIN"
fi
echo "== using $BIN"

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
