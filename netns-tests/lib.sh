# netns-tests/lib.sh — shared helpers for the namespace scenarios. Sourced, not run.
#
# Topology (one per scenario run, every name carries a random suffix $SUF):
#
#   client ns                      router ns                         server ns
#   UDP app (lo)                   ip_forward, masquerade out of     DNAT tcp/$PUB_PORT on its veth
#   faketcp client, TUN            its server side, conntrack        -> TUN peer (192.168.201.2 /
#   192.168.200.1 <-> .2           strict, `ct state invalid         fcc9::2); faketcp server, TUN;
#   masquerade out of the veth     counter drop` in forward          UDP app (lo)
#   ftcv$SUF 10.77.1.2  ---------- ftrc$SUF 10.77.1.1
#            fd00:77:1::2                   fd00:77:1::1
#                                  ftrs$SUF 10.77.2.1  ------------  ftsv$SUF 10.77.2.2
#                                           fd00:77:2::1                      fd00:77:2::2
#
# The addresses exist only inside these namespaces. Nothing here touches the
# root namespace except creating/removing the namespaces themselves.
#
# Usage in a scenario:  source lib.sh "$@"  (arg 1: the faketcp binary)
#   topo_up; start_echo ECHO_PID "$NS_S" 127.0.0.1:7000; start_server SRV_PID ...; ok
#
# Result lines: exactly one of `[ OK ] name` (exit 0), `[FAIL] name: why` (exit 1),
# `[SKIP] name: reason` (exit 77, so no caller can take a skip for a pass)
# on stdout. On FAIL the tails of the logs follow, indented, and the work
# directory is kept.

set -u
set -o pipefail

NT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3  # the one with scapy; `python3` on PATH may be another
NAME=$(basename "$0" .sh)
FAKETCP=${1:-${FAKETCP:-}}
if [[ -n "$FAKETCP" && "$FAKETCP" != /* ]]; then FAKETCP="$PWD/$FAKETCP"; fi

PUB_PORT=4567          # the server's public fake-TCP port
SRV_TUN4=192.168.201.2 # CLI defaults: the server stack's addresses
SRV_TUN6=fcc9::2
CLI_TUN4=192.168.200.2
CLI_TUN6=fcc8::2
C_IP4=10.77.1.2;  C_IP6=fd00:77:1::2
RC_IP4=10.77.1.1; RC_IP6=fd00:77:1::1
RS_IP4=10.77.2.1; RS_IP6=fd00:77:2::1
S_IP4=10.77.2.2;  S_IP6=fd00:77:2::2

T_START=$(date +%s.%N)
CUR_STEP="setup"
_LOGS=()      # files whose tails are shown on failure
_CLEANUP=()   # commands, run in reverse order on exit

# --- cleanup ---------------------------------------------------------------
# defer CMD: run CMD (eval'd) when the script exits, last deferred first.
defer() { _CLEANUP+=("$*"); }
_run_cleanup() {
    local i
    for ((i = ${#_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${_CLEANUP[i]}" >/dev/null 2>&1 || true
    done
    _CLEANUP=()
}
trap '_run_cleanup' EXIT
trap 'fail "interrupted by a signal"' INT TERM HUP

WORK=$(mktemp -d "/tmp/ftc-netns.$NAME.XXXXXX")
_KEEP_WORK=0
defer '[ "$_KEEP_WORK" = 1 ] || rm -rf "$WORK"'

# --- results ---------------------------------------------------------------
step() {
    CUR_STEP="$*"
    if [ -n "${NETNS_VERBOSE:-}" ]; then echo "    - $*" >&2; fi
}
note() { if [ -n "${NETNS_VERBOSE:-}" ]; then echo "      $*" >&2; fi; }
elapsed() { echo "$(date +%s.%N) $T_START" | awk '{printf "%.1f", $1 - $2}'; }

# A sanitizer build (make netns-test-asan, or a TSan build) may report and go
# on (UBSan, TSan without halt_on_error): no scenario passes with a report in
# any of its logs.
ok() {
    local reports
    reports=$(grep -l -E "(Address|Thread|Leak|UndefinedBehavior)Sanitizer|runtime error:" "$WORK"/*.log 2>/dev/null)
    [ -z "$reports" ] || fail "sanitizer report in $(basename -a $reports | xargs): $(grep -h -m1 -E "Sanitizer|runtime error:" $reports | head -n1)"
    echo "[ OK ] $NAME"
    exit 0
}
skip() { echo "[SKIP] $NAME: $*"; exit 77; }
# report TEXT: a figure worth reading after a pass, on stderr (run.sh shows it).
report() { echo "    $NAME: $*" >&2; }
fail() {
    echo "[FAIL] $NAME: $CUR_STEP: $*"
    _KEEP_WORK=1
    local f
    for f in "${_LOGS[@]}"; do
        [ -s "$f" ] && [ "${NETNS_TAIL:-15}" != 0 ] || continue
        echo "    --- tail of $f"
        tail -n "${NETNS_TAIL:-15}" "$f" | sed 's/^/    | /'
    done
    echo "    (logs kept in $WORK)"
    exit 1
}
log_file() { _LOGS+=("$1"); }

need_root() { [ "$(id -u)" = 0 ] || skip "needs root (network namespaces, TUN)"; }
need_binary() {
    [ -n "$FAKETCP" ] || fail "usage: $0 path/to/faketcp"
    [ -x "$FAKETCP" ] || fail "$FAKETCP is not an executable"
}
# need_tool CHECK...: each tool (a command, or an absolute path as in deps.list) is
# installed, or the scenario FAILS naming it and the Debian package deps.list gives
# for it. A fail, not a skip: `make test` installs the list first, so a missing tool
# there is a missing install step, and a skip would let the suite pass without it.
DEPS_LIST="$NT_DIR/deps.list"
need_tool() {
    local t pkg
    for t in "$@"; do
        dep_present "$t" && continue
        read -r pkg group <<<"$(dep_package "$t")"
        if [ -n "$pkg" ]; then
            [ "$group" = test ] && group="" || group=" DEPS=$group"
            fail "needs $t (Debian package $pkg), which is not installed: run 'sudo make deps$group' (it installs netns-tests/deps.list)"
        fi
        fail "needs $t, which is not installed, and netns-tests/deps.list names no package for it (add a line: $t <debian-package>)"
    done
}
# dep_present CHECK: a command on PATH (plus /usr/sbin, /sbin), or an existing path/glob.
dep_present() {
    case "$1" in
        /*) compgen -G "$1" >/dev/null ;;
        *) PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1 ;;
    esac
}
# dep_package CHECK: "PACKAGE GROUP" deps.list gives for CHECK (empty when it lists none).
dep_package() {
    awk -v t="$1" '!/^[[:space:]]*(#|$)/ && $1 == t { print $2, ($3 == "" ? "test" : $3); exit }' "$DEPS_LIST" 2>/dev/null
}
need_scapy() { need_tool "$PY" /usr/lib/python3/dist-packages/scapy/__init__.py; $PY -c 'import scapy' 2>/dev/null || fail "$PY cannot import scapy (Debian package python3-scapy)"; }

# --- processes ----------------------------------------------------------------
# Everything a scenario creates that could outlive it is recorded in
# $NETNS_TRACKFILE when run.sh set one, so run.sh can check that nothing did
# (and tell this run's leftovers from anyone else's):
#   pid PID STARTTIME WHAT   (the start time, /proc/PID/stat field 22, tells our
#                             process from a later one that reuses the PID)
#   ns NAME | sock PATH
_track() {
    if [ -n "${NETNS_TRACKFILE:-}" ]; then echo "$*" >>"$NETNS_TRACKFILE"; fi
    return 0
}
_track_pid() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}')
    [ -z "$st" ] || _track pid "$1" "$st" "$NAME/$2"
}
# stop_pid PID [SIG] [TIMEOUT_S]: signal one process we started, wait for it,
# SIGKILL it if it outlives the timeout. Returns its exit status.
stop_pid() {
    local pid=$1 sig=${2:-TERM} t=${3:-5} i
    if alive "$pid"; then
        kill -"$sig" "$pid"
        for ((i = 0; i < t * 20; i++)); do
            alive "$pid" || break
            sleep 0.05
        done
        alive "$pid" && kill -KILL "$pid"
    fi
    wait "$pid"
} 2>/dev/null  # also hides bash's "Killed" job notice
# alive PID: PID is still running and still our child (so never a reused PID).
alive() {
    local st
    st=$(ps -o ppid=,stat= -p "$1" 2>/dev/null) || return 1
    set -- $st
    [ "$1" = "$$" ] && [ "${2:0:1}" != Z ]
}

# wait_for TIMEOUT_S CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
    local t=$1 i
    shift
    for ((i = 0; i < t * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

# bg VAR NS LOGNAME CMD...: run CMD in namespace NS in the background, its
# stdout in $WORK/LOGNAME.out and stderr in $WORK/LOGNAME.log; the PID goes to
# VAR and is stopped on exit. (`ip netns exec` execs, so the PID is CMD's.)
bg() {
    local var=$1 ns=$2 name=$3
    shift 3
    : >"$WORK/$name.log"
    ip netns exec "$ns" "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    local pid=$!
    _track_pid "$pid" "$name"
    defer "stop_pid $pid KILL 2"
    defer "stop_pid $pid TERM 3"
    log_file "$WORK/$name.log"
    printf -v "$var" '%s' "$pid"
}

# --- paced flows: echo traffic that must survive what a scenario injects -------
# paced_flows_start N BIND_BASE: N flows of 50 datagrams/s from the client
# namespace (sources BIND_BASE, +1, ...) to the client CLI's UDP port 5000 and
# back, until paced_flows_stop; returns once every flow has echoed.
paced_flows_start() {
    bg _PACED_PID "$NS_C" flows $PY "$NT_DIR/soak_flows.py" run --target 127.0.0.1:5000 --bind-base "$2" \
        --flows "$1" --rate 50 --stop-file "$WORK/stop-flows" --status "$WORK/flows.status"
    ip netns exec "$NS_C" $PY "$NT_DIR/soak_flows.py" waitall --status "$WORK/flows.status" --since "$(date +%s.%N)" \
        --timeout 10 >/dev/null || fail "the paced flows did not echo within 10 s"
}
# paced_flows_stop: stop them and set PACED to their summary (one JSON line).
paced_flows_stop() {
    touch "$WORK/stop-flows"
    wait "$_PACED_PID"
    PACED=$(tail -n1 "$WORK/flows.out")
    note "paced flows: $PACED"
}
# paced_flows_zero KEY...: each of these counts in PACED is 0 (lost, dup, ...).
paced_flows_zero() {
    local k
    for k in "$@"; do
        [ "$(json "$k" <<<"$PACED")" = 0 ] || fail "paced flows: $k = $(json "$k" <<<"$PACED") ($PACED)"
    done
}

# start_faketcp VAR NS LOGNAME ROLE ARGS...: start the CLI, wait (bounded) for its
# "ready" line. The TUN it creates dies with it (and with the namespace).
start_faketcp() {
    local var=$1 ns=$2 name=$3 role=$4
    shift 4
    : >"$WORK/$name.log"
    bg "$var" "$ns" "$name" "$FAKETCP" "$role" "$@"
    local pid=${!var}
    wait_for 10 _ready_or_dead "$pid" "$WORK/$name.log" || fail "$name did not print 'ready' within 10 s"
    alive "$pid" || fail "$name exited during start-up ($(tail -n1 "$WORK/$name.log"))"
}
_ready_or_dead() { grep -q ready "$2" || ! alive "$1"; }

# start_server VAR LOGNAME ARGS...: faketcp server in the server ns, public port
# $PUB_PORT, TUN ftts$SUF. start_client VAR LOGNAME ARGS...: likewise in the client ns.
start_server() {
    local var=$1 name=$2
    shift 2
    start_faketcp "$var" "$NS_S" "$name" server --local "$PUB_PORT" --tun "$TUN_S" "$@"
}
start_client() {
    local var=$1 name=$2
    shift 2
    start_faketcp "$var" "$NS_C" "$name" client --tun "$TUN_C" "$@"
}

# start_echo VAR NS BIND [udptool echo options]: the UDP echo application.
start_echo() {
    local var=$1 ns=$2 bind=$3
    shift 3
    local ready="$WORK/echo.$RANDOM.ready"
    bg "$var" "$ns" "echo-${bind//[^0-9a-z]/_}" $PY "$NT_DIR/udptool.py" echo --bind "$bind" --ready "$ready" "$@"
    wait_for 5 test -e "$ready" || fail "UDP echo on $bind did not start"
}

# udp NS SUBCOMMAND ARGS...: run udptool in a namespace, in the foreground.
udp() {
    local ns=$1
    shift
    ip netns exec "$ns" $PY "$NT_DIR/udptool.py" "$@"
}
# scapy_tool NS SUBCOMMAND ARGS...: the scapy injector / sniffer / checker.
scapy_tool() {
    local ns=$1
    shift
    ip netns exec "$ns" $PY "$NT_DIR/ftscapy.py" "$@"
}
# json FIELD < line: one field of a JSON object.
json() { $PY -c 'import json,sys; v=json.loads(sys.stdin.read() or "{}"); print(v.get(sys.argv[1], ""))' "$1"; }

# --- the topology -------------------------------------------------------------
topo_up() {
    step "create the topology"
    need_tool ip nft conntrack sysctl ps "$PY"
    SUF=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    NS_C=ftns-$SUF-c NS_R=ftns-$SUF-r NS_S=ftns-$SUF-s
    V_C=ftcv$SUF V_RC=ftrc$SUF V_RS=ftrs$SUF V_S=ftsv$SUF  # veths
    TUN_C=fttc$SUF TUN_S=ftts$SUF                          # the CLIs' TUNs
    local ns
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        ip netns add "$ns" || fail "ip netns add $ns"
        defer "ip netns del $ns"
        _track ns "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$V_C" netns "$NS_C" type veth peer name "$V_RC" netns "$NS_R" || fail "veth $V_C"
    ip link add "$V_S" netns "$NS_S" type veth peer name "$V_RS" netns "$NS_R" || fail "veth $V_S"

    # Client ns: the host side of the client's TUN forwards out of the veth, masqueraded.
    ip -n "$NS_C" addr add "$C_IP4/24" dev "$V_C"
    ip -n "$NS_C" addr add "$C_IP6/64" dev "$V_C" nodad
    ip -n "$NS_C" link set "$V_C" up
    ip -n "$NS_C" route add default via "$RC_IP4"
    ip -n "$NS_C" -6 route add default via "$RC_IP6"
    _sysctls "$NS_C"
    ip netns exec "$NS_C" nft -f - <<EOF || fail "nft in the client ns"
table inet ftc {
    chain post { type nat hook postrouting priority srcnat; policy accept;
        oifname "$V_C" masquerade
    }
}
EOF

    # Router ns: forwards, NATs the client (masquerade out of its server side),
    # strict conntrack, drops and counts INVALID.
    ip -n "$NS_R" addr add "$RC_IP4/24" dev "$V_RC"
    ip -n "$NS_R" addr add "$RC_IP6/64" dev "$V_RC" nodad
    ip -n "$NS_R" addr add "$RS_IP4/24" dev "$V_RS"
    ip -n "$NS_R" addr add "$RS_IP6/64" dev "$V_RS" nodad
    ip -n "$NS_R" link set "$V_RC" up
    ip -n "$NS_R" link set "$V_RS" up
    _sysctls "$NS_R"
    ip netns exec "$NS_R" sysctl -qw net.netfilter.nf_conntrack_tcp_be_liberal=0 \
        net.netfilter.nf_conntrack_tcp_loose=0 || fail "conntrack sysctls in the router ns"
    ip netns exec "$NS_R" nft -f - <<EOF || fail "nft in the router ns"
table inet ftc {
    counter invalid_drops { }
    chain forwarding { type filter hook forward priority filter; policy accept;
        ct state invalid counter name "invalid_drops" drop
    }
    chain post { type nat hook postrouting priority srcnat; policy accept;
        oifname "$V_RS" masquerade
    }
}
EOF

    # Server ns: DNAT of the public port to the server stack behind its TUN.
    ip -n "$NS_S" addr add "$S_IP4/24" dev "$V_S"
    ip -n "$NS_S" addr add "$S_IP6/64" dev "$V_S" nodad
    ip -n "$NS_S" link set "$V_S" up
    ip -n "$NS_S" route add default via "$RS_IP4"
    ip -n "$NS_S" -6 route add default via "$RS_IP6"
    _sysctls "$NS_S"
    ip netns exec "$NS_S" nft -f - <<EOF || fail "nft in the server ns"
table inet ftc {
    chain pre { type nat hook prerouting priority dstnat; policy accept;
        iifname "$V_S" ip daddr $S_IP4 tcp dport $PUB_PORT dnat ip to $SRV_TUN4
        iifname "$V_S" ip6 daddr $S_IP6 tcp dport $PUB_PORT dnat ip6 to $SRV_TUN6
    }
}
EOF
    # A first packet each way so neighbour discovery is done before timing starts.
    udp "$NS_C" ping --host "$S_IP4" --count 1 >/dev/null || fail "no IPv4 path client -> server"
    udp "$NS_C" ping --host "$S_IP6" --count 1 >/dev/null || fail "no IPv6 path client -> server"
}
_sysctls() {
    ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0 \
        || fail "sysctls in $1"
}

# Packets dropped as conntrack-INVALID by the router so far.
router_invalid_drops() {
    ip netns exec "$NS_R" nft list counter inet ftc invalid_drops | awk '/packets/ {print $2}'
}
# Established TCP conntrack entries towards the public port, in the router.
router_established() {
    need_tool conntrack
    ip netns exec "$NS_R" conntrack -L -p tcp --dport "$PUB_PORT" --state ESTABLISHED 2>/dev/null | grep -c ESTABLISHED
}

# --- the CLI's stats ----------------------------------------------------------
# stat_value LOGFILE NAME: the value of counter NAME in the last stats dump of
# the log (empty when there is none). See stats_line for the format.
stat_value() {
    $PY "$NT_DIR/ftstats.py" "$1" "$2"
}
# _new_dump LOG N: the log holds more than N stats dumps.
_new_dump() { [ "$(stat_value "$1" --count)" -gt "$2" ]; }
_server_open_zero() { [ "$(stat_value "$WORK/server.log" open_connections)" = 0 ]; }
# UDP receive-buffer overflows in a namespace so far (/proc/net/snmp RcvbufErrors).
udp_rcvbuf_errors() {
    ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}
# fresh_stats LOG: wait (bounded, 4 s) for one more stats dump than LOG holds now,
# so the counters read next postdate everything done so far (needs --stats-interval 1).
fresh_stats() {
    local n0
    n0=$(stat_value "$1" --count)
    wait_for 4 _new_dump "$1" "$n0" || fail "no new stats dump in $(basename "$1") within 4 s"
}

# --- scapy flows --------------------------------------------------------------
# learn_flow VAR IFACE_NS IFACE TRIGGER...: sniff the flow to $PUB_PORT on IFACE
# (in namespace IFACE_NS) while TRIGGER runs; VAR gets the flow JSON (ftscapy.py).
learn_flow() {
    local var=$1 ns=$2 iface=$3
    shift 3
    local j
    j=$(scapy_tool "$ns" learn --iface "$iface" --port "$PUB_PORT" --trigger "$*") \
        || fail "learning the flow on $iface: $j"
    printf -v "$var" '%s' "$j"
}
# probe_cmd BIND: a shell command (for triggers) that sends probes from the client
# app's UDP address BIND to the client CLI on 127.0.0.1:5000 until one echoes.
probe_cmd() {
    echo "ip netns exec $NS_C $PY $NT_DIR/udptool.py probe --target 127.0.0.1:5000 --bind $1 --tries ${2:-20}"
}
# stats_delta BEFORE.json AFTER.json: "name=delta" for every counter that changed.
stats_delta() {
    $PY -c 'import json,sys
b, a = (json.load(open(f)) for f in sys.argv[1:3])
print(" ".join("%s=%d" % (k, a[k] - b.get(k, 0)) for k in sorted(a)
               if isinstance(a[k], int) and not isinstance(a[k], bool) and a[k] != b.get(k, 0)))' "$1" "$2"
}
# delta_of NAME "DELTAS": one value from stats_delta's output (0 when absent).
delta_of() { local v; v=$(tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"); echo "${v:-0}"; }
# capture VAR NS IFACE FILE: tcpdump of the fake-TCP port on IFACE into FILE
# (background, stopped by PID); returns once tcpdump is listening.
capture() {
    local var=$1 ns=$2 iface=$3 file=$4
    need_tool tcpdump
    bg "$var" "$ns" "tcpdump-$iface" tcpdump -Z root -U -n -s 0 -i "$iface" -w "$file" "tcp port $PUB_PORT"
    wait_for 5 grep -q "listening on" "$WORK/tcpdump-$iface.log" || fail "tcpdump on $iface did not start"
}
# ns_up: one bare namespace $NS_X (loopback only), for runs that need no topology.
ns_up() {
    need_tool ip ps
    SUF=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    NS_X=ftns-$SUF-x
    ip netns add "$NS_X" || fail "ip netns add $NS_X"
    defer "ip netns del $NS_X"
    _track ns "$NS_X"
    ip -n "$NS_X" link set lo up
}
