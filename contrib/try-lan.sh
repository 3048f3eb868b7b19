#!/usr/bin/env bash
# A second machine upgrading from the first, on a LAN of two network namespaces (needs root).
# host1 runs pacserved with a package in its cache; host2 runs pacserve-fetch exactly as pacman
# would, with a mirror URL that cannot answer: the package arrives from host1 over the LAN.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "try-lan: needs root (ip netns)" >&2; exit 1; }
# PACSERVE_BIN_DIR: use already built binaries (the test suite does: rebuilding would relink them
# under the other tests' feet) instead of building.
if [ -n "${PACSERVE_BIN_DIR:-}" ]; then
    BIN=$PACSERVE_BIN_DIR
else
    echo "try-lan: building (cargo build --bins)…" >&2
    cargo build --quiet --bins
    BIN=$PWD/target/debug
fi
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

# host2: which peers are there? (the bridge needs a moment after coming up)
for _ in $(seq 50); do
    ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" --list-peers | grep -q "^1 daemon answered" && break
    sleep 0.1
done
echo "== host2: pacserve-fetch --list-peers"
ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" --list-peers
echo "== host2: pacserve-fetch '%o' '%u' (the mirror is unreachable on purpose)"
# No sync database lists this made-up package, so host2 must opt in to unverified peers; with
# pacman, the sync database vouches for each file and no option is needed.
ip netns exec "${TAG}h2" "$BIN/pacserve-fetch" -v --unverified-peers "$WORK/host2/$PKG.part" "http://10.99.0.254:9/core/os/x86_64/$PKG"
cmp "$WORK/host2/$PKG.part" "$WORK/cache/$PKG" && echo "== identical to host1's copy"
echo "== host1: pacserved's log"
sed 's/^/   /' "$WORK/pacserved.log"
