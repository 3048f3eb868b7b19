#!/usr/bin/env bash
# A second machine upgrading from the first, on a LAN of two network namespaces.
# host1 runs pacserved with a package in its cache; host2 runs pacserve-fetch exactly as pacman
# would, with a mirror URL that cannot answer: the package arrives from host1 over the LAN.
# Everything a user may set is in usage() below, which --help prints.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: ./contrib/try-lan.sh [--no-build]

Builds pacserve-fetch and pacserved (cargo build --bins), then makes a LAN of two network
namespaces on a bridge (nothing touches the real network): host1 shares a package with
pacserved, host2 lists the peers and downloads the package from host1 while its mirror is
unreachable. The namespaces need root: run as yourself, the script builds as you and then runs
itself again through sudo; run as root, it builds as root (if root has cargo).

  --no-build          use the binaries cargo has built already (debug, else release), from
                      cargo's target directory, instead of building
  -h, --help          this text

Environment:
  PACSERVE_BIN_DIR    a directory holding built pacserve-fetch and pacserved: nothing is built
                      or looked up
  CARGO_TARGET_DIR    where cargo puts what it builds; honoured, as are build.target-dir in
                      .cargo/config.toml and CARGO_BUILD_TARGET_DIR (the script asks cargo
                      metadata where the target directory is)
  CARGO               the cargo program to run (default: cargo)
USAGE
}

die() {
    echo "try-lan: $*" >&2
    exit 1
}

build=yes
for arg in "$@"; do
    case $arg in
        -h | --help) usage; exit 0 ;;
        --no-build) build=no ;;
        *) echo "try-lan: unknown argument '$arg' (see ./contrib/try-lan.sh --help)" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# Where cargo puts binaries: ask cargo rather than assume ./target, so CARGO_TARGET_DIR and
# cargo's configuration are honoured exactly as cargo honours them.
target_dir() {
    need python3 || die "needs python3 to read cargo metadata (or set PACSERVE_BIN_DIR)"
    "$CARGO" metadata --format-version 1 --no-deps --offline 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null
}

# The binaries, checked before anything is set up: a missing one is one line, not a LAN of
# failing commands.
if [ -n "${PACSERVE_BIN_DIR:-}" ]; then
    BIN=$PACSERVE_BIN_DIR
    for prog in pacserve-fetch pacserved; do
        [ -f "$BIN/$prog" ] && [ -x "$BIN/$prog" ] ||
            die "PACSERVE_BIN_DIR=$BIN holds no executable $prog"
    done
else
    CARGO=${CARGO:-cargo}
    if ! need "$CARGO"; then
        [ "$(id -u)" = 0 ] &&
            die "root has no cargo (sudo resets PATH): run ./contrib/try-lan.sh as yourself (it builds, then asks sudo), or set PACSERVE_BIN_DIR"
        die "needs cargo to build (https://rustup.rs; Arch: pacman -S rust), or PACSERVE_BIN_DIR=/dir/with/the/binaries"
    fi
    if [ "$build" = yes ]; then
        echo "try-lan: building (cargo build --bins)…" >&2
        "$CARGO" build --quiet --bins || die "cargo build failed (its errors are above)"
    fi
    TARGET=$(target_dir) && [ -n "$TARGET" ] ||
        die "cargo metadata cannot say where cargo's target directory is; set PACSERVE_BIN_DIR instead"
    profiles=debug
    [ "$build" = no ] && profiles="debug release"
    BIN=
    for profile in $profiles; do
        if [ -x "$TARGET/$profile/pacserve-fetch" ] && [ -x "$TARGET/$profile/pacserved" ]; then
            BIN=$TARGET/$profile
            break
        fi
    done
    [ -n "$BIN" ] || die "no pacserve-fetch and pacserved in $TARGET/{${profiles// /,}} (cargo's target directory); build them with cargo build --bins, or set PACSERVE_BIN_DIR"
fi
BIN=$(cd "$BIN" && pwd)

if [ "$(id -u)" != 0 ]; then
    need sudo || die "needs root for ip netns: run it as root with PACSERVE_BIN_DIR=$BIN"
    echo "try-lan: the namespaces need root; running the rest through sudo" >&2
    exec sudo env "PACSERVE_BIN_DIR=$BIN" "$PWD/contrib/try-lan.sh"
fi
need ip || die "needs ip (Debian: apt-get install iproute2; Arch: pacman -S iproute2)"
echo "== using $BIN/pacserve-fetch and $BIN/pacserved"

TAG=tl$$
WORK=$(mktemp -d)
cleanup() {
    for ns in "${TAG}h1" "${TAG}h2" "${TAG}sw"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The LAN: a bridge in its own namespace, two hosts, IPv4 and IPv6, nothing on the real network.
ip netns add "${TAG}sw"
ip -n "${TAG}sw" link add br0 type bridge mcast_snooping 0 stp_state 0
ip -n "${TAG}sw" link set br0 up
for i in 1 2; do
    ns=${TAG}h$i
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name p$i
    ip -n "$ns" link set p$i netns "${TAG}sw"
    ip -n "${TAG}sw" link set p$i master br0
    ip -n "${TAG}sw" link set p$i up
    ip -n "$ns" addr add 10.99.0.$i/24 dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
done

# host1: a cache holding one package, shared by pacserved.
mkdir -p "$WORK/cache" "$WORK/host2"
PKG=hello-1.0-1-x86_64.pkg.tar.zst
head -c 2000000 /dev/urandom > "$WORK/cache/$PKG"
ip netns exec "${TAG}h1" "$BIN/pacserved" --cache-dir "$WORK/cache" --state-dir "$WORK/state" \
    > "$WORK/pacserved.log" 2>&1 &
for _ in $(seq 50); do grep -q "listening for queries" "$WORK/pacserved.log" && break; sleep 0.1; done
grep -q "listening for queries" "$WORK/pacserved.log" ||
    die "pacserved did not start on host1: $(tail -n 1 "$WORK/pacserved.log")"

# host2: which peers are there? (the bridge needs a moment after coming up)
for _ in $(seq 50); do
    ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" --list-peers 2>/dev/null | grep -q "^1 daemon answered" && break
    sleep 0.1
done
echo "== host2: pacserve-fetch --list-peers"
ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" --list-peers ||
    die "host2 never heard host1's pacserved (exit status 1 of --list-peers: no daemon answered)"
echo "== host2: pacserve-fetch '%o' '%u' (the mirror is unreachable on purpose)"
# No sync database lists this made-up package, so host2 must opt in to unverified peers; with
# pacman, the sync database vouches for each file and no option is needed.
ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" -v --unverified-peers "$WORK/host2/$PKG.part" "http://10.99.0.254:9/core/os/x86_64/$PKG"
cmp "$WORK/host2/$PKG.part" "$WORK/cache/$PKG" && echo "== identical to host1's copy"
echo "== host1: pacserved's log"
sed 's/^/   /' "$WORK/pacserved.log"
