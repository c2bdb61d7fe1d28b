#!/usr/bin/env bash
# 30-auto-rules: --auto-rules on both ends, in end namespaces with no NAT rule
# and forwarding off (TOPO_BARE_ENDS). Echo over IPv4 and IPv6 through the
# router; the rules exist while running and are gone after SIGTERM; the
# forwarding sysctls are back to 0; after SIGKILL a restart replaces the stale
# rules, works, and turns forwarding back off at exit for the killed one. Two
# clients with different TUN names side by side stop in either order (both
# orders are run) without touching each other's rules, and a pair stopped at
# the same moment (5 rounds) still leaves forwarding as it found it. The
# first server runs as the systemd units run it: an unprivileged user with
# CAP_NET_ADMIN as its only capability (the units' DynamicUser=yes,
# AmbientCapabilities, CapabilityBoundingSet, NoNewPrivileges), so its rules
# and both forwarding writes show that the units need nothing more.
# With FTC_NO_NFT=1 (31-auto-rules-iptables) nft is absent from PATH, so the
# iptables fallback is used.
source "$(dirname "$0")/lib.sh" "$@"
[ -z "${FTC_NO_NFT:-}" ] || NAME=31-auto-rules-iptables
need_root
need_binary
TOPO_BARE_ENDS=1
need_tool iptables ip6tables
if [ -n "${FTC_NO_NFT:-}" ]; then
    # the directory of the PATH without nft (filled below, after the topology's
    # own nft): deferred before the topology, so it goes after the namespaces
    nonft=$(mktemp -d /tmp/ftc-nonft-path.XXXXXX) || fail "mktemp"
    defer "rm -rf '$nonft'"
fi
topo_up

BACKEND=nft
if [ -n "${FTC_NO_NFT:-}" ]; then
    BACKEND=iptables
    # A PATH of symlinks to everything in the usual bin dirs but nft, in a
    # directory the server running as nobody can read too.
    chmod 755 "$nonft"
    for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
        [ -d "$d" ] || continue
        # one ln per directory (a fork per file took a minute); names already
        # linked from an earlier directory are kept, as PATH order would
        ln -s "$d"/* "$nonft/" 2>/dev/null || true
    done
    rm -f "$nonft/nft"
    [ ! -e "$nonft/nft" ] && [ -e "$nonft/iptables" ] || fail "building the PATH without nft"
    export PATH="$nonft"
fi

# rules_present NS TUN: the rules of that TUN exist in NS.
rules_present() {
    if [ $BACKEND = nft ]; then
        ip netns exec "$1" nft list table inet "faketcp-$2" >/dev/null 2>&1
    else
        ip netns exec "$1" iptables -w -t nat -S "FTC-$2-NAT" >/dev/null 2>&1
    fi
}
# no_rules NS: nothing of faketcp's left in NS, in nft or iptables.
no_rules() {
    ! ip netns exec "$1" /usr/sbin/nft list ruleset 2>/dev/null | grep -q faketcp &&
        ! ip netns exec "$1" iptables -w -t nat -S 2>/dev/null | grep -q FTC- &&
        ! ip netns exec "$1" iptables -w -t filter -S 2>/dev/null | grep -q FTC- &&
        ! ip netns exec "$1" ip6tables -w -t nat -S 2>/dev/null | grep -q FTC-
}
fwd() { ip netns exec "$1" sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding | tr -d '\n'; }
echo4() { local out; out=$(udp "$NS_C" load --target 127.0.0.1:5000 --count 200 --min 1 --max 1400 --seed 3) || fail "IPv4 echo$1: $out"; }
echo6() { local out; out=$(udp "$NS_C" load --target 127.0.0.1:5001 --count 200 --min 1 --max 1400 --seed 4) || fail "IPv6 echo$1: $out"; }
echo_both() { echo4 ""; echo6 ""; }
# start_server_as_unit VAR LOGNAME ARGS...: start_server, but as the systemd units
# run faketcp: user nobody, CAP_NET_ADMIN the only capability (inheritable,
# ambient, bounding), no_new_privs. A copy of the binary in a directory nobody
# can reach (the checkout may sit under /root). The units rely on /dev/net/tun
# being mode 0666, Debian's default; where it is not (some containers), the
# process gets a 0666 node of the same device in a private mount namespace.
start_server_as_unit() {
    local var=$1 name=$2
    shift 2
    local dir tun_dev=()
    dir=$(mktemp -d /tmp/ftc-unit-bin.XXXXXX) || fail "mktemp"
    defer "rm -rf '$dir'"
    chmod 755 "$dir" && cp "$FAKETCP" "$dir/faketcp" && chmod 755 "$dir/faketcp" || fail "copying $FAKETCP to $dir"
    if [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        note "/dev/net/tun is mode $(stat -c %a /dev/net/tun) here: the server gets a 0666 node in its own mount namespace"
        mkdir "$dir/dev" || fail "mkdir $dir/dev"
        tun_dev=(unshare --mount --propagation private sh -c 'mount -t tmpfs -o mode=755 ftc-dev "$1" &&
            mknod -m 666 "$1/tun" c "$2" "$3" && mount --bind "$1/tun" /dev/net/tun && shift 3 && exec "$@"' sh
            "$dir/dev" "$((16#$(stat -c %t /dev/net/tun)))" "$((16#$(stat -c %T /dev/net/tun)))")
    fi
    bg "$var" "$NS_S" "$name" "${tun_dev[@]}" setpriv --reuid=65534 --regid=65534 --clear-groups \
        --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin --no-new-privs \
        "$dir/faketcp" server --local "$PUB_PORT" --tun "$TUN_S" "$@"
    local pid=${!var}
    wait_for 10 _ready_or_dead "$pid" "$WORK/$name.log" || fail "$name did not print 'ready' within 10 s"
    alive "$pid" || fail "$name (as nobody with CAP_NET_ADMIN) exited during start-up ($(tail -n1 "$WORK/$name.log"))"
    [ "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" = 65534 ] || fail "$name does not run as nobody"
}

step "start both ends with --auto-rules ($BACKEND), the server as nobody with CAP_NET_ADMIN only"
[ "$(fwd "$NS_C")" = 00 ] && [ "$(fwd "$NS_S")" = 00 ] || fail "forwarding not off at the start"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server_as_unit SRV server --remote 127.0.0.1:7000 --auto-rules
start_client CLI4 client4 --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --auto-rules
start_faketcp CLI6 "$NS_C" client6 client --tun "${TUN_C}6" --tun-local 192.168.202.1 --tun-peer 192.168.202.2 --tun-local6 fcca::1 --tun-peer6 fcca::2 --local 127.0.0.1:5001 --remote "[$S_IP6]:$PUB_PORT" --auto-rules
grep -q "auto-rules: .*$BACKEND" "$WORK/server.log" || fail "the server did not use $BACKEND: $(grep auto-rules "$WORK/server.log")"

step "rules present, forwarding on, echo over IPv4 and IPv6"
rules_present "$NS_S" "$TUN_S" || fail "no rules for $TUN_S in the server ns"
rules_present "$NS_C" "$TUN_C" || fail "no rules for $TUN_C in the client ns"
rules_present "$NS_C" "${TUN_C}6" || fail "no rules for ${TUN_C}6 in the client ns"
[ "$(fwd "$NS_S")" = 11 ] || fail "server ns forwarding $(fwd "$NS_S"), want 11"
echo_both

step "SIGTERM removes everything and restores forwarding (client6 stops first)"
stop_pid "$CLI6" TERM 5 || fail "client6 exit $? on SIGTERM"
rules_present "$NS_C" "$TUN_C" || fail "stopping client6 removed client4's rules"
rules_present "$NS_C" "${TUN_C}6" && fail "client6's rules outlived it"
[ "$(fwd "$NS_C")" = 11 ] || fail "client ns forwarding $(fwd "$NS_C") with client4 still running, want 11"
echo4 " through client4 after client6 stopped"
stop_pid "$CLI4" TERM 5 || fail "client4 exit $? on SIGTERM"
stop_pid "$SRV" TERM 5 || fail "server exit $? on SIGTERM"
no_rules "$NS_C" || fail "rules left in the client ns"
no_rules "$NS_S" || fail "rules left in the server ns"
[ "$(fwd "$NS_C")" = 00 ] || fail "client ns forwarding $(fwd "$NS_C") after exit, want 00"
[ "$(fwd "$NS_S")" = 00 ] || fail "server ns forwarding $(fwd "$NS_S") after exit, want 00"

step "SIGKILL leaves stale rules; a restart replaces them and works"
start_server SRV2 server2 --remote 127.0.0.1:7000 --auto-rules
kill -KILL "$SRV2"; wait "$SRV2" 2>/dev/null
rules_present "$NS_S" "$TUN_S" || fail "no stale rules after SIGKILL (the test needs them)"
start_server SRV3 server3 --remote 127.0.0.1:7000 --auto-rules
grep -q "removing the stale" "$WORK/server3.log" || fail "the restart did not log the stale rules"
start_client CLI4 client4b --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --auto-rules
start_faketcp CLI6 "$NS_C" client6b client --tun "${TUN_C}6" --tun-local 192.168.202.1 --tun-peer 192.168.202.2 --tun-local6 fcca::1 --tun-peer6 fcca::2 --local 127.0.0.1:5001 --remote "[$S_IP6]:$PUB_PORT" --auto-rules
echo_both

step "the other order: client4 stops first, client6 keeps its rules and forwarding"
stop_pid "$CLI4" TERM 5 || fail "client4 exit $? on SIGTERM"
rules_present "$NS_C" "${TUN_C}6" || fail "stopping client4 removed client6's rules"
rules_present "$NS_C" "$TUN_C" && fail "client4's rules outlived it"
[ "$(fwd "$NS_C")" = 11 ] || fail "client ns forwarding $(fwd "$NS_C") with client6 still running, want 11"
grep -q "forwarding left on: .*${TUN_C}6" "$WORK/client4b.log" \
    || fail "client4 did not log that it left forwarding on for client6: $(grep auto-rules "$WORK/client4b.log")"
echo6 " through client6 after client4 stopped"
stop_pid "$CLI6" TERM 5 || fail "client6 exit $? on SIGTERM"
stop_pid "$SRV3" TERM 5 || fail "server3 exit $?"
no_rules "$NS_S" || fail "rules left in the server ns after the restart's exit"
# server2 turned forwarding on and was killed; server3 found that in the stale table.
grep -q "had turned .* on; this one turns it back off" "$WORK/server3.log" \
    || fail "server3 did not take over turning forwarding off from the killed server2: $(grep auto-rules "$WORK/server3.log")"
[ "$(fwd "$NS_S")" = 00 ] || fail "server ns forwarding $(fwd "$NS_S") after the killed server's successor stopped, want 00"
no_rules "$NS_C" || fail "rules left in the client ns after the restart's exit"
# client4 turned forwarding on and handed turning it off to client6, the last one out.
grep -q "left turning .* back off to this one" "$WORK/client6b.log" \
    || fail "client6 did not take over turning forwarding off: $(grep auto-rules "$WORK/client6b.log")"
[ "$(fwd "$NS_C")" = 00 ] || fail "client ns forwarding $(fwd "$NS_C") after both stopped (client4 first), want 00"

# Two instances stopping at the same moment race to find each other's rules; the lock
# they share (an abstract socket per namespace) orders them, so one of them restores.
step "two instances stop at the same moment, 5 times: forwarding restored every time"
for round in 1 2 3 4 5; do
    start_faketcp PA "$NS_C" "pair-a$round" client -4 --tun "${TUN_C}a" --tun-local 192.168.203.1 --tun-peer 192.168.203.2 \
        --local 127.0.0.1:5002 --remote "$S_IP4:$PUB_PORT" --auto-rules
    start_faketcp PB "$NS_C" "pair-b$round" client -4 --tun "${TUN_C}b" --tun-local 192.168.204.1 --tun-peer 192.168.204.2 \
        --local 127.0.0.1:5003 --remote "$S_IP4:$PUB_PORT" --auto-rules
    [ "$(fwd "$NS_C")" = 10 ] || fail "round $round: client ns forwarding $(fwd "$NS_C") with both running, want 10"
    kill -TERM "$PA" "$PB"
    wait "$PA" "$PB" 2>/dev/null
    no_rules "$NS_C" || fail "round $round: rules left after both stopped"
    [ "$(fwd "$NS_C")" = 00 ] || fail "round $round: client ns forwarding $(fwd "$NS_C") after both stopped at once, want 00"
done
ok
