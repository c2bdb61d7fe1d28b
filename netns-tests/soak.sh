#!/usr/bin/env bash
# netns-tests/soak.sh BINARY — the soak (make soak; SOAK_SECONDS, default 600).
#
# In the suite's topology (lib.sh): 50 UDP flows with mixed sizes (16..1400 B)
# at 20 datagrams/s each (1000/s in all) echo through the client and server
# for SOAK_SECONDS, while a fault injector beside each end (soak_inject.py, on
# its TUN) in turn writes garbage, duplicate and reordered data segments and
# random-seq RSTs into it every second; at 1/3 the server gets SIGTERM and at
# 2/3 SIGKILL, and is started again each time (injection paused meanwhile).
# Pass requires:
#  - no crash: the client, the echo and the last server are alive at the end,
#    the SIGTERMed server exited 0, the client exits 0 on SIGTERM at the end,
#    no sanitizer report in any log;
#  - every flow still echoing at the end, and every flow recovered after each
#    restart (within 15 s);
#  - no datagram lost outside a restart window (soak_flows.py: a loss is
#    explained only when sent between 0.5 s before the kill and the flow's
#    first echoed datagram sent after the new server was ready), none
#    corrupted, no foreign datagram, duplicates <= segments replayed;
#  - the client's fd count at the end equals its count after start-up, and its
#    RSS grew by less than 1 MiB after warm-up; the same RSS bound for the last
#    server from its warm-up on;
#  - no UDP receive-buffer overflow in the end namespaces.
# All counters are printed at the end (stats at exit of client and server).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
need_scapy
D=${SOAK_SECONDS:-600}
[ "$D" -ge 30 ] 2>/dev/null || fail "SOAK_SECONDS must be a whole number >= 30, got '$D'"
FLOWS_N=${SOAK_FLOWS:-50}
RATE=${SOAK_RATE:-20}
SIZES=${SOAK_SIZES:-16,64,200,512,1000,1400}
# Extra soak_inject.py flags (a word list), e.g. --allow-gso-replay to test the test.
read -r -a INJ_EXTRA <<<"${SOAK_INJECT_ARGS:-}"
# A snapshot: the server is started three times, always from the same binary.
cp "$FAKETCP" "$WORK/faketcp" && FAKETCP="$WORK/faketcp" || fail "copy of $FAKETCP"
say() { echo "    soak: $*" >&2; }
now() { date +%s.%N; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
t_plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }

topo_up
say "namespaces $NS_C / $NS_R / $NS_S; $FLOWS_N flows x $RATE/s for $D s"

step "start the UDP echo, the server and the client"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server-1 --remote 127.0.0.1:7000 --stats-interval 5
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --stats-interval 5
fd_ready=$(fds "$CLI")

step "start $FLOWS_N paced flows"
T0=$(now)
echo '[]' >"$WORK/windows.json"
bg FLOWS "$NS_C" flows $PY "$NT_DIR/soak_flows.py" run --target 127.0.0.1:5000 --bind-base 127.0.0.1:6000 \
    --flows "$FLOWS_N" --rate "$RATE" --stop-file "$WORK/stop-flows" --status "$WORK/flows.status" \
    --windows "$WORK/windows.json" --seed 7 --sizes "$SIZES"
ip netns exec "$NS_C" $PY "$NT_DIR/soak_flows.py" waitall --status "$WORK/flows.status" --since "$T0" --timeout 20 \
    >/dev/null || fail "not every flow echoed within 20 s"
# Warm-up: a few seconds of steady traffic before the baselines are taken.
WARM=$((D / 20 < 5 ? 5 : (D / 20 > 20 ? 20 : D / 20)))
sleep "$WARM"
fd0=$(fds "$CLI") rss0=$(rss_kb "$CLI") srss0=$(rss_kb "$SRV")
say "after warm-up (${WARM} s): client fds $fd0 (at ready $fd_ready), client RSS $rss0 KiB, server RSS $srss0 KiB"
[ "$fd0" = "$fd_ready" ] || say "note: client fds changed from $fd_ready at ready to $fd0 after warm-up"

step "start the fault injectors (server TUN, client TUN)"
bg INJ_S "$NS_S" inject-server $PY "$NT_DIR/soak_inject.py" --iface "$TUN_S" --stop-file "$WORK/stop-inject" \
    --pause-file "$WORK/pause" --seed 11 "${INJ_EXTRA[@]}"
bg INJ_C "$NS_C" inject-client $PY "$NT_DIR/soak_inject.py" --iface "$TUN_C" --stop-file "$WORK/stop-inject" \
    --pause-file "$WORK/pause" --seed 12 "${INJ_EXTRA[@]}"

# restart N SIGNAL: pause the injectors, stop the server with SIGNAL, start it
# again, record the fault window, wait until every flow echoes again.
SRV_N=1
restart() {
    local sig=$2 t0 t1 rc old=$SRV
    step "restart $1: SIG$sig the server"
    touch "$WORK/pause"
    sleep 0.8  # an injection round in progress ends (each packet checks the pause file)
    t0=$(now)
    stop_pid "$old" "$sig" 5
    rc=$?
    if [ "$sig" = TERM ]; then
        [ "$rc" = 0 ] || fail "server-$SRV_N exited with status $rc on SIGTERM, want 0"
    fi
    grep -qE "AddressSanitizer|LeakSanitizer|runtime error:" "$WORK/server-$SRV_N.log" \
        && fail "sanitizer report in server-$SRV_N.log"
    wait_for 5 sh -c "! ip -n $NS_S link show $TUN_S >/dev/null 2>&1" || fail "TUN $TUN_S outlived server-$SRV_N"
    SRV_N=$((SRV_N + 1))
    start_server SRV "server-$SRV_N" --remote 127.0.0.1:7000 --stats-interval 5
    t1=$(now)
    $PY - "$WORK/windows.json" "$1 (SIG$sig)" "$t0" "$t1" <<'EOF'
import json, sys
p, what, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
w = json.load(open(p))
w.append(dict(what=what, t0=t0, t1=t1))
json.dump(w, open(p, "w"))
EOF
    local r
    r=$(ip netns exec "$NS_C" $PY "$NT_DIR/soak_flows.py" waitall --status "$WORK/flows.status" --since "$t1" \
        --timeout 15) || fail "after restart $1 not every flow echoed within 15 s: $r"
    say "restart $1 (SIG$sig): server down $(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }') s;" \
        "every flow echoing again $(awk -v a="$(now)" -v b="$t1" 'BEGIN { printf "%.2f", a - b }') s after ready"
    rm -f "$WORK/pause"
}

# --- the run: checks every ~10 s that nothing died
T_START=$(now)
T_R1=$(t_plus "$T_START" "$(awk -v d="$D" 'BEGIN { print d / 3 }')")
T_R2=$(t_plus "$T_START" "$(awk -v d="$D" 'BEGIN { print 2 * d / 3 }')")
T_END=$(t_plus "$T_START" "$D")
watch_until() {
    while awk -v t="$1" -v n="$(now)" 'BEGIN { exit !(n < t) }'; do
        for p in CLI SRV ECHO FLOWS INJ_S INJ_C; do
            alive "${!p}" || fail "$p (pid ${!p}) died at $(awk -v a="$(now)" -v b="$T_START" 'BEGIN { printf "%.0f", a - b }') s"
        done
        local left
        left=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.2f", (d > 10 ? 10 : (d > 0 ? d : 0)) }')
        sleep "$left"
    done
}
step "soak until the first restart"
watch_until "$T_R1"
restart 1 TERM
step "soak until the second restart"
watch_until "$T_R2"
restart 2 KILL
srss_warm_at=$(t_plus "$(now)" "$WARM")
step "soak until the end"
watch_until "$srss_warm_at"
srss1=$(rss_kb "$SRV") sfd1=$(fds "$SRV")
watch_until "$T_END"

# --- the end
step "stop the injectors and the flows"
touch "$WORK/pause" "$WORK/stop-inject"
wait "$INJ_S" || fail "server-side injector failed"
wait "$INJ_C" || fail "client-side injector failed"
is=$(tail -n1 "$WORK/inject-server.out") ic=$(tail -n1 "$WORK/inject-client.out")
fd1=$(fds "$CLI") rss1=$(rss_kb "$CLI") srss2=$(rss_kb "$SRV") sfd2=$(fds "$SRV")
sleep 1
touch "$WORK/stop-flows"
wait "$FLOWS"
fl=$(tail -n1 "$WORK/flows.out")
echo "$fl" >"$WORK/flows.json"

step "stop the client and the server (SIGTERM): stats at exit"
for p in CLI SRV ECHO; do alive "${!p}" || fail "$p died before the end"; done
stop_pid "$CLI" TERM 5
rc_cli=$?
stop_pid "$SRV" TERM 5
rc_srv=$?

# --- report, then judge
say "injector (server TUN): $is"
say "injector (client TUN): $ic"
say "flows: $($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join("%s=%s" % (k, d[k]) for k in ("sent","received","lost","unexplained","dup","corrupt","foreign","refused","send_errors","late","rtt_ms_p50","rtt_ms_p99","rtt_ms_max")))' "$WORK/flows.json")"
$PY -c 'import json,sys
for w in json.load(open(sys.argv[1]))["windows"]:
    print("    soak: window %s: lost %d, worst flow back %.2f s after ready, unrecovered %s" % (w["what"], w["lost"], w["recovery_worst"], w["unrecovered_flows"]))' "$WORK/flows.json" >&2
say "client fds: after start-up $fd0, at the end $fd1; client RSS: after warm-up $rss0 KiB, at the end $rss1 KiB ($((rss1 - rss0)) KiB)"
say "server-$SRV_N: RSS after warm-up $srss1 KiB, at the end $srss2 KiB ($((srss2 - srss1)) KiB); fds $sfd1 -> $sfd2 (first server after warm-up: RSS $srss0 KiB)"
say "UDP RcvbufErrors: client ns $(udp_rcvbuf_errors "$NS_C"), server ns $(udp_rcvbuf_errors "$NS_S"); router INVALID drops $(router_invalid_drops)"
for f in "$WORK/client.log" "$WORK/server-$SRV_N.log"; do
    grep -E "stats at exit: " "$f" | sed -E 's/^[^ ]+ INFO /    soak: '"$(basename "$f" .log)"': /' >&2
done

step "judge"
[ "$rc_cli" = 0 ] || fail "the client exited with status $rc_cli on SIGTERM"
[ "$rc_srv" = 0 ] || fail "server-$SRV_N exited with status $rc_srv on SIGTERM"
if grep -lE "AddressSanitizer|LeakSanitizer|runtime error:" "$WORK"/*.log; then fail "sanitizer report in a log"; fi
j() { json "$1" <"$WORK/flows.json"; }
[ "$(j unexplained)" = 0 ] || fail "$(j unexplained) datagrams lost outside the restart windows, first: $(j unexplained_first)"
[ "$(j corrupt)" = 0 ] || fail "$(j corrupt) corrupted datagrams, first: $(j corrupt_first)"
[ "$(j foreign)" = 0 ] || fail "$(j foreign) foreign datagrams reached the application"
replayed=$(($(json replayed <<<"$is") + $(json replayed <<<"$ic")))
[ "$(j dup)" -le "$replayed" ] || fail "$(j dup) duplicates, but only $replayed segments were replayed"
[ -z "$(j flows_silent_at_end | tr -d '[] ')" ] || fail "flows silent at the end: $(j flows_silent_at_end)"
[ -z "$(j flows_never_echoed | tr -d '[] ')" ] || fail "flows never echoed: $(j flows_never_echoed)"
for k in garbage rsts replayed; do
    [ "$(json $k <<<"$is")" -gt 0 ] || fail "the server-side injector injected no $k ($is)"
    [ "$(json $k <<<"$ic")" -gt 0 ] || fail "the client-side injector injected no $k ($ic)"
done
[ "$fd1" = "$fd0" ] || fail "client fds: $fd0 after start-up, $fd1 at the end"
[ $((rss1 - rss0)) -lt 1024 ] || fail "client RSS grew by $((rss1 - rss0)) KiB after warm-up ($rss0 -> $rss1)"
[ $((srss2 - srss1)) -lt 1024 ] || fail "server RSS grew by $((srss2 - srss1)) KiB after warm-up ($srss1 -> $srss2)"
[ "$(udp_rcvbuf_errors "$NS_C")" = 0 ] || fail "UDP receive-buffer overflows in the client ns"
[ "$(udp_rcvbuf_errors "$NS_S")" = 0 ] || fail "UDP receive-buffer overflows in the server ns"
ok
