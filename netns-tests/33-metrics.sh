#!/usr/bin/env bash
# 33-metrics: --metrics on both ends. promtool accepts what GET /metrics serves;
# the counters move with traffic; bad flags and a taken port are clear errors;
# and abuse of the endpoint (oversized, malformed and odd requests, slow-loris
# connections past the connection limit, 1000 connections at once on each end)
# leaves the tunnel's echo working during and after, and both processes alive.
# promtool comes from Debian's `prometheus` package; without it every other
# check still runs and the result is SKIP.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
MT() { local ns=$1; shift; ip netns exec "$ns" $PY "$NT_DIR/metricstool.py" "$@"; }
C_METRICS=127.0.0.1:9464  # each end's endpoint, on its own namespace's loopback
S_METRICS=127.0.0.1:9464

step "bad --metrics values: exit 2 with one line"
for bad in nonsense 127.0.0.1 127.0.0.1:0 127.0.0.1:70000 localhost:9464 "[::1]" "::1:9464"; do
    out=$("$FAKETCP" client --local 127.0.0.1:5000 --remote 10.0.0.1:1 --metrics "$bad" 2>&1)
    rc=$?
    [ "$rc" = 2 ] || fail "--metrics '$bad': exit $rc, want 2 ($out)"
    [ "$(wc -l <<<"$out")" = 1 ] && [[ "$out" == "faketcp: --metrics: "* ]] || fail "--metrics '$bad': $out"
done
help=$("$FAKETCP" server --help) || fail "server --help failed"
grep -q -- "--metrics IP:PORT" <<<"$help" || fail "server --help does not list --metrics"

topo_up
step "start the echo, the server and the client, each with --metrics"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_server SRV server --remote 127.0.0.1:7000 --metrics "$S_METRICS"
start_client CLI client --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" --metrics "$C_METRICS"
grep -q "metrics at http://$S_METRICS/metrics" "$WORK/server.log" || fail "server: no 'metrics at' line"
grep -q "metrics at http://$C_METRICS/metrics" "$WORK/client.log" || fail "client: no 'metrics at' line"

step "a taken metrics port: exit 1, one clear line, no TUN left"
out=$(ip netns exec "$NS_C" timeout 10 "$FAKETCP" client --local 127.0.0.1:5009 --remote "$S_IP4:$PUB_PORT" \
    --tun "fttx$SUF" --metrics "$C_METRICS" 2>&1)
rc=$?
[ "$rc" = 1 ] || fail "second client on a taken metrics port: exit $rc, want 1 ($out)"
grep -q "ERROR --metrics $C_METRICS: cannot listen there: Address already in use" <<<"$out" || fail "taken port: $out"
! ip -n "$NS_C" link show "fttx$SUF" >/dev/null 2>&1 || fail "the refused client left its TUN fttx$SUF"

step "traffic, then both scrapes pass promtool"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows 4 --count 50 --seed 33) || fail "echo: $out"
MT "$NS_C" scrape --target "$C_METRICS" --out "$WORK/client.prom" || fail "client scrape failed"
MT "$NS_S" scrape --target "$S_METRICS" --out "$WORK/server.prom" || fail "server scrape failed"
have_promtool=0
if command -v promtool >/dev/null; then
    have_promtool=1
    for side in client server; do
        out=$(promtool check metrics <"$WORK/$side.prom" 2>&1) || fail "promtool check metrics ($side): $out"
    done
fi
for f in faketcp_stack_drops_total faketcp_tun_read_drops_total faketcp_tunnel_drops_total faketcp_tunnel_udp_errors_total; do
    grep -q "^$f{worker=\"0\",reason=\|^$f{worker=\"0\",kind=" "$WORK/client.prom" || fail "client: no $f samples"
done
grep -q '^faketcp_build_info{version="[^"]*",mode="server"} 1$' "$WORK/server.prom" || fail "server: build_info"

step "the counters move with traffic"
read -r c_in0 c_peers0 c_slept0 c_polled0 < <(MT "$NS_C" value --target "$C_METRICS" faketcp_tunnel_udp_receive_datagrams_total \
    faketcp_tunnel_udp_peers faketcp_loop_sleeps_total faketcp_loop_polled_wakeups_total | xargs) || fail "client values"
s_in0=$(MT "$NS_S" value --target "$S_METRICS" faketcp_stack_receive_datagrams_total) || fail "server value"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows 2 --count 300 --seed 34) || fail "echo: $out"
sleep 0.3  # a scrape within 0.1 s of the last one shows the same text
read -r c_in1 c_peers1 c_slept1 c_polled1 < <(MT "$NS_C" value --target "$C_METRICS" faketcp_tunnel_udp_receive_datagrams_total \
    faketcp_tunnel_udp_peers faketcp_loop_sleeps_total faketcp_loop_polled_wakeups_total | xargs) || fail "client values"
s_in1=$(MT "$NS_S" value --target "$S_METRICS" faketcp_stack_receive_datagrams_total) || fail "server value"
note "client UDP in $c_in0 -> $c_in1, peers $c_peers0 -> $c_peers1; server datagrams in $s_in0 -> $s_in1"
[ $((c_in1 - c_in0)) -ge 600 ] || fail "client UDP datagrams in moved by $((c_in1 - c_in0)), want >= 600"
[ $((s_in1 - s_in0)) -ge 600 ] || fail "server datagrams in moved by $((s_in1 - s_in0)), want >= 600"
[ $((c_peers1 - c_peers0)) = 2 ] || fail "client UDP peers went $c_peers0 -> $c_peers1, want 2 more"
# the event-loop counters are live: the echo woke the client's loop (sleeping or polling)
wakes=$(( (c_slept1 + c_polled1) - (c_slept0 + c_polled0) ))
note "client event-loop wake-ups during the echo: $wakes (slept $c_slept0 -> $c_slept1, polled $c_polled0 -> $c_polled1)"
[ "$wakes" -ge 1 ] || fail "client event-loop wake-up counters did not move ($wakes)"

# --- abuse, with the echo checked all along ----------------------------------
# echo_loop: rounds of 100 echoed datagrams until $WORK/abuse.done exists; one
# JSON line per round in echo-loop.out (udptool exits 1 on any loss).
step "abuse of both endpoints while the echo runs"
bg LOOP "$NS_C" echo-loop bash -c "n=0; while [ ! -e '$WORK/abuse.done' ] || [ \$n -lt 3 ]; do n=\$((n+1)); \
    $PY '$NT_DIR/udptool.py' load --target 127.0.0.1:5000 --count 100 --window 4 --seed \$n --timeout 2 \
    || echo FAILED-ROUND; done"
MT "$NS_S" statuses --target "$S_METRICS" >"$WORK/statuses-server.out" 2>&1 &
st_s=$!
MT "$NS_C" statuses --target "$C_METRICS" >"$WORK/statuses-client.out" 2>&1 &
st_c=$!
wait $st_s || fail "server statuses: $(cat "$WORK/statuses-server.out")"
wait $st_c || fail "client statuses: $(cat "$WORK/statuses-client.out")"
note "statuses: $(cat "$WORK/statuses-server.out")"

# 70 slow-loris connections on each end: 64 fill the slots and get 408 at the
# 5 s deadline, the rest 503 at once. A scrape meanwhile finds no free slot.
MT "$NS_S" slow --target "$S_METRICS" --conns 70 >"$WORK/slow-server.out" 2>&1 &
sl_s=$!
MT "$NS_C" slow --target "$C_METRICS" --conns 70 >"$WORK/slow-client.out" 2>&1 &
sl_c=$!
wait $sl_s || fail "server slow-loris: $(cat "$WORK/slow-server.out")"
wait $sl_c || fail "client slow-loris: $(cat "$WORK/slow-client.out")"
note "slow: $(cat "$WORK/slow-server.out")"
for side in server client; do
    j=$(cat "$WORK/slow-$side.out")
    [ "$(json s408 <<<"$j")" = 64 ] && [ "$(json s503 <<<"$j")" = 6 ] || fail "$side slow-loris: want 64 x 408 and 6 x 503: $j"
done

# 1000 connections at once on each end.
MT "$NS_S" flood --target "$S_METRICS" --conns 1000 >"$WORK/flood-server.out" 2>&1 &
fl_s=$!
MT "$NS_C" flood --target "$C_METRICS" --conns 1000 >"$WORK/flood-client.out" 2>&1 &
fl_c=$!
wait $fl_s || fail "server flood: $(cat "$WORK/flood-server.out")"
wait $fl_c || fail "client flood: $(cat "$WORK/flood-client.out")"
note "flood: server $(cat "$WORK/flood-server.out") client $(cat "$WORK/flood-client.out")"
touch "$WORK/abuse.done"
wait_for 60 bash -c "! kill -0 $LOOP 2>/dev/null" || fail "the echo loop did not finish"
rounds=$(grep -c '"sent"' "$WORK/echo-loop.out")
note "echo during the abuse: $rounds rounds of 100, $(grep -c FAILED-ROUND "$WORK/echo-loop.out") failed"
! grep -q FAILED-ROUND "$WORK/echo-loop.out" || fail "the echo lost datagrams during the abuse: $(grep -v '"lost": 0,' "$WORK/echo-loop.out" | head -3)"
[ "$rounds" -ge 3 ] || fail "only $rounds echo rounds ran during the abuse"

step "after the abuse: both alive, echo and scrapes work, the endpoint counted it all"
alive "$SRV" || fail "the server died"
alive "$CLI" || fail "the client died"
out=$(udp "$NS_C" load --target 127.0.0.1:5000 --flows 4 --count 100 --seed 35) || fail "echo after the abuse: $out"
for side in client server; do
    ns=$NS_C target=$C_METRICS
    [ $side = server ] && ns=$NS_S target=$S_METRICS
    MT "$ns" scrape --target "$target" --out "$WORK/$side-after.prom" || fail "$side scrape after the abuse"
    if [ $have_promtool = 1 ]; then
        out=$(promtool check metrics <"$WORK/$side-after.prom" 2>&1) || fail "promtool after the abuse ($side): $out"
    fi
    read -r timeouts rejected c431 c400 c405 c404 c505 < <(MT "$ns" value --target "$target" \
        faketcp_metrics_timeouts_total faketcp_metrics_connections_rejected_total \
        'faketcp_metrics_responses_total{code="431"}' 'faketcp_metrics_responses_total{code="400"}' \
        'faketcp_metrics_responses_total{code="405"}' 'faketcp_metrics_responses_total{code="404"}' \
        'faketcp_metrics_responses_total{code="505"}' | xargs)
    note "$side: timeouts $timeouts rejected $rejected 431:$c431 400:$c400 405:$c405 404:$c404 505:$c505"
    [ "${timeouts:-0}" -ge 64 ] || fail "$side: faketcp_metrics_timeouts_total $timeouts, want >= 64"
    [ "${rejected:-0}" -ge 6 ] || fail "$side: faketcp_metrics_connections_rejected_total $rejected, want >= 6"
    [ "$c431" = 2 ] && [ "$c400" = 5 ] && [ "$c405" = 1 ] && [ "$c404" = 1 ] && [ "$c505" = 1 ] \
        || fail "$side: responses 431:$c431 400:$c400 405:$c405 404:$c404 505:$c505, want 2 5 1 1 1"
done

step "SIGTERM: both exit 0"
stop_pid "$CLI" TERM 5 || fail "client exited with status $? on SIGTERM"
stop_pid "$SRV" TERM 5 || fail "server exited with status $? on SIGTERM"
[ $have_promtool = 1 ] || skip "promtool missing (apt-get install prometheus): every other check passed, the exposition was not checked by promtool"
ok
