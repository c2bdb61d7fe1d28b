# test/tools/veth_pair.sh — sourced by the offload tools: two namespaces joined by
# a veth pair vA <-> vB, with forwarding on.
#   veth_pair NS_A NS_B NET   (NET: the first three octets, e.g. 192.168.77; A is .1, B is .2)
veth_pair() {
    local a=$1 b=$2 net=$3 n
    ip netns add "$a" && ip netns add "$b" || return 1
    ip -n "$a" link add vA type veth peer name vB netns "$b"
    ip -n "$a" addr add "$net.1/24" dev vA
    ip -n "$b" addr add "$net.2/24" dev vB
    for n in "$a" "$b"; do
        ip -n "$n" link set lo up
        ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
    done
    ip -n "$a" link set vA up
    ip -n "$b" link set vB up
}
