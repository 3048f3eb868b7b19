#!/usr/bin/env bash
# Builds pacman 7.1.0 — the pacman Arch Linux ships, with DownloadUser and its sandbox — into a private prefix on
# Debian 12, without touching Debian's own pacman 6.0.2 (/usr/bin/pacman, /etc/pacman.conf). The end-to-end tests in
# tests/it/pacman7.rs run it (found through PACSERVE_PACMAN7); .ci/run calls this script.
#
# usage: .ci/pacman7.sh [PREFIX]    PREFIX defaults to /opt/pacman7; prints PREFIX/bin/pacman on success
# env:   PACMAN7_TARBALL=path       the source as `git archive` of tag v7.1.0 (default: ../shared/pacman7's, else a
#                                   shallow clone of the tag from gitlab.archlinux.org); either is checked against
#                                   the tag's commit id
#        FORCE=1 rebuilds; NO_APT=1 skips installing build dependencies (needs root otherwise)
#
# Idempotent: when PREFIX already holds 7.1.0 it only prints the path. Built as Arch builds it (curl, gpgme, openssl,
# libseccomp, landlock; no docs, no translations); sysconfdir and localstatedir stay under PREFIX.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${1:-/opt/pacman7}
VERSION=7.1.0
COMMIT=5683f8477a0afcc6b331766175a83445b2dcfe89   # tag v7.1.0 of https://gitlab.archlinux.org/pacman/pacman
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pacman7-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log() { printf 'pacman7.sh: %s\n' "$*" >&2; }

if [[ ${FORCE:-0} != 1 && -x $PREFIX/bin/pacman ]] && "$PREFIX/bin/pacman" --version 2>/dev/null | grep -q "Pacman v$VERSION "; then
    echo "$PREFIX/bin/pacman"; exit 0
fi

DEPS=(meson ninja-build pkg-config gcc libarchive-dev libcurl4-openssl-dev libgpgme-dev libssl-dev libseccomp-dev python3 git)
if [[ ${NO_APT:-0} != 1 ]]; then
    missing=()
    for p in "${DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || { log "need root to install: ${missing[*]}"; exit 1; }
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

TARBALL=${PACMAN7_TARBALL:-$HERE/../../shared/pacman7/pacman-$VERSION.tar.gz}
if [[ -f $TARBALL ]]; then
    got=$(gzip -dc "$TARBALL" | git get-tar-commit-id || true)
    [[ $got == "$COMMIT" ]] || { log "$TARBALL is commit '$got', not v$VERSION ($COMMIT)"; exit 1; }
    tar -xzf "$TARBALL" -C "$WORK"
else
    log "no local tarball; cloning tag v$VERSION"
    git clone -q --depth 1 --branch "v$VERSION" https://gitlab.archlinux.org/pacman/pacman.git "$WORK/pacman-$VERSION"
    got=$(git -C "$WORK/pacman-$VERSION" rev-parse HEAD)
    [[ $got == "$COMMIT" ]] || { log "tag v$VERSION is commit $got, expected $COMMIT"; exit 1; }
fi
cd "$WORK/pacman-$VERSION"
LDFLAGS="${LDFLAGS:-} -Wl,-rpath,$PREFIX/lib" meson setup build --prefix="$PREFIX" --libdir=lib \
    --sysconfdir="$PREFIX/etc" --localstatedir="$PREFIX/var" --buildtype=plain \
    -Ddoc=disabled -Ddoxygen=disabled -Di18n=false -Dcurl=enabled -Dgpgme=enabled -Dcrypto=openssl \
    -Dscriptlet-shell=/bin/bash -Dldconfig=/sbin/ldconfig -Dmakepkg-template-dir="$PREFIX/share/makepkg-template" \
    >"$WORK/setup.log" 2>&1 || { tail -40 "$WORK/setup.log" >&2; exit 1; }
ninja -C build >"$WORK/ninja.log" 2>&1 || { tail -40 "$WORK/ninja.log" >&2; exit 1; }
DESTDIR="$WORK/stage" meson install -C build --no-rebuild >"$WORK/install.log" 2>&1 || { tail -40 "$WORK/install.log" >&2; exit 1; }
mkdir -p "$PREFIX"
cp -a "$WORK/stage$PREFIX/." "$PREFIX/"
"$PREFIX/bin/pacman" --version | grep -q "Pacman v$VERSION " || { log "built pacman does not report v$VERSION"; exit 1; }
echo "$PREFIX/bin/pacman"
