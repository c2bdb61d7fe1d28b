#!/usr/bin/env bash
# 29-valgrind: the CLI client and server under valgrind memcheck in the
# topology (`make valgrind-demo` runs this alone, installing valgrind first).
# A short echo run (a probe, then 8 flows x 50 datagrams of 1..1400 bytes; the
# client's --idle-timeout 5 then closes the idle flows, so the RST / close
# paths run too), then SIGTERM to both. Requires: each exits 0
# (valgrind --error-exitcode=1 turns any memcheck error, and with
# --errors-for-leak-kinds=definite any definitely lost block, into status 1),
# and each log says "ERROR SUMMARY: 0 errors" and 0 bytes definitely lost.
# Fails without valgrind (naming its package); skips for a sanitizer build (ASan and valgrind exclude
# each other).
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
if grep -qa "__asan_init\|__ubsan_handle" "$FAKETCP"; then skip "$FAKETCP is a sanitizer build"; fi
need_tool valgrind
VG=$(command -v valgrind)
topo_up

VGFLAGS=(--error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
         --track-fds=no --num-callers=30)

# start_vg VAR NS NAME ARGS...: the CLI under valgrind (log $WORK/NAME.vg), waiting
# up to 60 s for its "ready" line (valgrind starts slowly).
start_vg() {
    local var=$1 ns=$2 name=$3
    shift 3
    bg "$var" "$ns" "$name" "$VG" "${VGFLAGS[@]}" --log-file="$WORK/$name.vg" "$FAKETCP" "$@"
    log_file "$WORK/$name.vg"
    wait_for 60 _ready_or_dead "${!var}" "$WORK/$name.log" || fail "$name under valgrind: no 'ready' within 60 s"
    alive "${!var}" || fail "$name under valgrind exited during start-up ($(tail -n1 "$WORK/$name.log"))"
}

step "start the UDP echo, and the server and the client under valgrind"
start_echo ECHO "$NS_S" 127.0.0.1:7000
start_vg SRV "$NS_S" server server --local "$PUB_PORT" --tun "$TUN_S" --remote 127.0.0.1:7000 --stats-interval 2
start_vg CLI "$NS_C" client client --tun "$TUN_C" --local 127.0.0.1:5000 --remote "$S_IP4:$PUB_PORT" \
    --stats-interval 2 --idle-timeout 5

step "echo through both"
out=$(udp "$NS_C" probe --target 127.0.0.1:5000 --bind 127.0.0.1:6000 --tries 40 --interval 0.25) \
    || fail "no echo through the tunnel under valgrind: $out"
load=$(udp "$NS_C" load --target 127.0.0.1:5000 --bind 127.0.0.1:6100 --flows 8 --count 50 --min 1 --max 1400 \
    --window 4 --timeout 5 --warmup 20) || fail "echo load under valgrind: $load"
note "load: $load"

step "an idle flow is closed by the client (--idle-timeout 5): the close and reset paths run too"
wait_for 12 grep -q "idle for" "$WORK/client.log" || fail "the client closed no idle flow within 12 s"
sleep 1

step "SIGTERM both; valgrind's verdict"
stop_pid "$CLI" TERM 60
rc_c=$?
stop_pid "$SRV" TERM 60
rc_s=$?
summ() {  # NAME: "errors E, definitely lost B bytes in N blocks" from its valgrind log
    local f="$WORK/$1.vg" e dl
    e=$(grep -o 'ERROR SUMMARY: [0-9,]* errors' "$f" | tail -n1 | awk '{print $3}')
    if grep -q "All heap blocks were freed" "$f"; then dl="0 bytes (all heap blocks freed)"
    else dl=$(grep -o 'definitely lost: [0-9,]* bytes in [0-9,]* blocks' "$f" | tail -n1 | cut -d: -f2-); fi
    echo "errors ${e:-?}, definitely lost${dl:+ ${dl# }}"
}
for who in client server; do
    grep -q "ERROR SUMMARY: 0 errors" "$WORK/$who.vg" || fail "$who: valgrind: $(summ $who)"
    if ! grep -q "All heap blocks were freed" "$WORK/$who.vg"; then
        grep -q "definitely lost: 0 bytes" "$WORK/$who.vg" || fail "$who: valgrind: $(summ $who)"
    fi
done
[ "$rc_c" = 0 ] || fail "client under valgrind exited with status $rc_c ($(summ client))"
[ "$rc_s" = 0 ] || fail "server under valgrind exited with status $rc_s ($(summ server))"
for who in client server; do
    report "$who: $(summ $who); $(grep -o 'in use at exit: .*' "$WORK/$who.vg" | tail -n1);" \
        "valgrind warnings: $(grep -c 'Warning:' "$WORK/$who.vg")$(grep -m3 'Warning:' "$WORK/$who.vg" | sed 's/^==[0-9]*== / | /' | tr '\n' ' ')"
done
report "load under valgrind: $load"
ok
