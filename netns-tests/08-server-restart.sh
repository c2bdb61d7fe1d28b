#!/usr/bin/env bash
# 08-server-restart: the server goes away and comes back; the client's flow
# recovers by itself, without restarting the client or its application.
#  A) SIGTERM: the server resets its connections, removes its TUN, exits 0; the
#     client sees the RST and reconnects on the flow's next datagram.
#  B) SIGKILL: no RST; the new server answers the client's stale segments with
#     an RST (no_listener), the client drops the connection and reconnects.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
topo_up
APP=127.0.0.1:6000
probe() { udp "$NS_C" probe --target 127.0.0.1:5000 --bind $APP "$@"; }

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server-a --remote 127.0.0.1:7000
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"
out=$(probe --tries 8) || fail "no echo before the restart: $out"

# --- A: SIGTERM
step "SIGTERM the server"
stop_pid "$SRV" TERM 5
rc=$?
[ "$rc" = 0 ] || fail "the server exited with status $rc on SIGTERM, want 0"
grep -q "SIGTERM received: reset 1 connection," "$WORK/server-a.log" || fail "the server did not log resetting 1 connection"
grep -q "TUN $TUN_S removed" "$WORK/server-a.log" || fail "the server did not log removing its TUN"
ip -n "$NS_S" link show "$TUN_S" >/dev/null 2>&1 && fail "TUN $TUN_S still exists after the server exited"
wait_for 2 grep -q "reset by the peer; it is opened again" "$WORK/client.log" \
    || fail "the client did not see the server's RST"

step "restart the server; the flow recovers"
start_server SRV server-b --remote 127.0.0.1:7000 --stats-interval 1
out=$(probe --tries 20 --interval 0.25) || fail "the flow did not recover within 5 s: $out"
note "after SIGTERM: $out"

# --- B: SIGKILL (no RST reaches the client)
step "SIGKILL the server and restart it"
stop_pid "$SRV" KILL 5
wait_for 3 sh -c "! ip -n $NS_S link show $TUN_S >/dev/null 2>&1" || fail "TUN $TUN_S outlived the killed server"
start_server SRV server-c --remote 127.0.0.1:7000 --stats-interval 1
step "the client's stale segments draw an RST; the flow recovers"
out=$(probe --tries 20 --interval 0.25) || fail "the flow did not recover within 5 s: $out"
note "after SIGKILL: $out"
fresh_stats "$WORK/server-c.log"
[ "$(stat_value "$WORK/server-c.log" no_listener)" -ge 1 ] || fail "the new server answered no stale segment"
[ "$(stat_value "$WORK/server-c.log" handshakes_completed)" = 1 ] || fail "the new server has no new connection"
[ "$(grep -c "lost: reset by the peer; it is opened again" "$WORK/client.log")" -ge 2 ] \
    || fail "the client logged fewer than 2 resets"
alive "$CLI" || fail "the client died"
note "router INVALID drops during the restarts: $(router_invalid_drops)"
ok
