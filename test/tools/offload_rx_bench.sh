#!/bin/bash
# offload_rx_bench.sh BENCH [COUNT] — CPU per datagram of a StackDriver
# receiving 1400-byte fake-TCP segments from an offload TUN (root; a
# benchmark, not part of `make test`). Both TUNs live in one throw-away
# namespace that forwards between them; nothing leaves it.
set -u
BENCH=${1:?usage: offload_rx_bench.sh path/to/offload_rx_bench [COUNT]}
COUNT=${2:-200000}
SFX=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
N=orx-$SFX
trap 'ip netns del $N 2>/dev/null' EXIT
ip netns add "$N" || exit 1
ip -n "$N" link set lo up
ip netns exec "$N" sysctl -qw net.ipv4.ip_forward=1

echo "kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for mode in gro partial plain; do
    for rep in 1 2 3; do
        ip netns exec "$N" "$BENCH" "$mode" "$COUNT" 1400
    done
done | sed 's/^/  /'
