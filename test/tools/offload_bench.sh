#!/bin/bash
# offload_bench.sh BENCH [COUNT] — CPU per datagram of writing 1400-byte
# fake-TCP segments to a TUN with and without GSO (root; a benchmark, not part
# of `make test`). In a throw-away namespace the TUN's packets are routed out
# of a veth into a second namespace that drops them (blackhole route), so the
# kernel does the whole forwarding path and nothing comes back.
set -u
PATH="$PATH:/usr/sbin:/sbin" command -v ethtool >/dev/null \
    || { echo "$0: needs ethtool (Debian package ethtool: sudo make deps DEPS=profile, netns-tests/deps.list)" >&2; exit 1; }
BENCH=${1:?usage: offload_bench.sh path/to/offload_bench [COUNT]}
COUNT=${2:-200000}
SFX=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
A=obA-$SFX
B=obB-$SFX
trap 'ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/veth_pair.sh"
veth_pair "$A" "$B" 192.168.78 || exit 1
ip -n "$A" route add 10.98.0.0/24 via 192.168.78.2
ip -n "$B" route add blackhole 10.98.0.0/24

run() {
    for path in device driver; do
        for mode in plain vnet gso; do
            [ "$path/$mode" = driver/vnet ] && continue
            for rep in 1 2 3; do
                ip netns exec "$A" "$BENCH" "$path" "$mode" "$COUNT" 1400
            done
        done
    done | sed 's/^/  /'
}
echo "kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== egress veth with TSO (the kernel keeps the super-packet whole, as for a NIC with TSO)"
run
ip netns exec "$A" ethtool -K vA tso off gso off tx off >/dev/null
echo "== egress veth without TSO, GSO or checksum offload (segments and checksums in software)"
run
