#!/usr/bin/env bash
# 04-out-of-order: segments injected with reversed sequence numbers reach the
# UDP application each exactly once, in arrival order (no reordering, no
# dedup, no drop: the stack is a datagram pipe). Checked at the server's UDP
# service and, after the echo, at the client's UDP application.
#
# The injected seqs lie just below the client's next seq (old data): the
# server's ACKs then never run ahead of what the client really sent, which a
# strict conntrack on the router would (rightly) drop as INVALID.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
topo_up
APP=127.0.0.1:6000
N=12

step "start the logging UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000 --log "$WORK/server-app.hex"
start_server SRV server --remote 127.0.0.1:7000 --stats-interval 1
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT"

step "learn the flow"
learn_flow FLOW "$NS_S" "$TUN_S" "$(probe_cmd $APP)"
sleep 1.2  # the client's idle ACK goes out 1 s after the echo: let the flow go quiet
before=$(wc -l <"$WORK/server-app.hex")

# --- the client application listens on its address for the echoes
step "inject $N segments, highest seq first"
ready="$WORK/listen.ready"
bg LISTEN "$NS_C" client-app $PY "$NT_DIR/udptool.py" listen --bind $APP --count $N --seconds 10 \
    --log "$WORK/client-app.hex" --ready "$ready"
wait_for 5 test -e "$ready" || fail "the client app listener did not start"
inj=$(scapy_tool "$NS_S" ooo --iface "$TUN_S" --flow "$FLOW" --count $N --len 64 --tag r) || fail "inject: $inj"
note "$inj"
want=$($PY -c 'import json,sys; print("\n".join(o["hex"] for o in json.loads(sys.argv[1])["order"]))' "$inj")
seqs=$($PY -c 'import json,sys; print(" ".join(str(o["seq"]) for o in json.loads(sys.argv[1])["order"]))' "$inj")
note "injected seqs in order: $seqs"

# --- the server's UDP service got them all, once, in injection order
step "the server's UDP service got each once, in arrival order"
_server_app_has() { [ "$(($(wc -l <"$WORK/server-app.hex") - before))" -ge $N ]; }
wait_for 3 _server_app_has || true
got=$(tail -n +"$((before + 1))" "$WORK/server-app.hex")
[ "$got" = "$want" ] || fail "server app got $(echo "$got" | grep -c .) datagrams (want $N in injection order): $(echo "$got" | $PY -c 'import sys; print(bytes.fromhex("".join(sys.stdin.read().split())).decode("ascii", "replace"))' | tr -c '[:print:]' ' ' | head -c 300)"

# --- and the echoes reached the client application the same way
step "the client application got each echo once, in order"
_client_app_has() { [ "$(grep -c . "$WORK/client-app.hex" 2>/dev/null)" -ge $N ]; }
wait_for 5 _client_app_has || fail "client app got $(grep -c . "$WORK/client-app.hex") of $N echoes"
got=$(cat "$WORK/client-app.hex")
[ "$got" = "$want" ] || fail "client app got the echoes in another order or changed"

step "the connection is unharmed"
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind $APP --tries 3) || fail "no echo afterwards: $out"
fresh_stats "$WORK/server.log"
[ "$(stat_value "$WORK/server.log" tcp_drops)" = 0 ] || fail "server dropped: $(stat_value "$WORK/server.log" --all)"
[ "$(stat_value "$WORK/server.log" handshakes_completed)" = 1 ] || fail "the connection was replaced"
[ "$(router_invalid_drops)" = 0 ] || fail "router dropped $(router_invalid_drops) INVALID packets"
ok
