#!/usr/bin/env bash
# 11-cli: the command line. --help/--version exit 0 on stdout; bad flags and bad
# addresses exit 2 with exactly one line "faketcp: ..." on stderr and nothing
# else; an unprivileged run exits 1 naming CAP_NET_ADMIN and the setcap fix and
# leaves no device; SIGINT exits 0 and removes the TUN. Everything runs in a
# throw-away namespace, each run bounded by `timeout`.
source "$(dirname "$0")/lib.sh" "$@"
need_root
need_binary
ns_up
BIN="$WORK/bin/faketcp"  # a copy any user can execute, wherever $FAKETCP lives
mkdir -p "$WORK/bin" && cp "$FAKETCP" "$BIN" && chmod 755 "$WORK" "$WORK/bin" "$BIN" || fail "copying the binary"
ERRORS=()
# run OUTNAME ARGS...: the CLI in $NS_X; sets RC, OUT (stdout), ERR (stderr).
run() {
    local name=$1
    shift
    timeout 10 ip netns exec "$NS_X" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    RC=$?
    OUT=$(cat "$WORK/$name.out")
    ERR=$(cat "$WORK/$name.err")
}
bad() { ERRORS+=("$*"); }

# --- help and version
step "--help and --version"
for args in "--help" "-h" "client --help" "server --help" "server --local 1 --bogus --help"; do
    run help $BIN $args
    [ "$RC" = 0 ] || bad "'$args': exit $RC, want 0"
    [ -z "$ERR" ] || bad "'$args': wrote to stderr: $ERR"
    grep -q "Usage:" <<<"$OUT" || bad "'$args': no usage text on stdout"
done
run help $BIN client --help
for want in "--idle-timeout" "--tun-peer6" "CAP_NET_ADMIN" "setcap cap_net_admin+ep" "Exit status"; do
    grep -qF -- "$want" <<<"$OUT" || bad "'client --help' does not mention $want"
done
run version $BIN --version
[ "$RC" = 0 ] && grep -q "^faketcp [0-9]" <<<"$OUT" || bad "--version: exit $RC, output '$OUT'"

# --- bad flags and bad addresses: exit 2, one line, nothing created
step "bad flags and addresses"
L=(--local 127.0.0.1:5000 --remote 10.0.0.1:4567)  # a valid client base
S=(--local 4567 --remote 127.0.0.1:7000)           # a valid server base
while IFS='|' read -r want args; do
    [ -n "$args" ] || continue
    eval "set -- $args"
    run bad $BIN "$@"
    if [ "$RC" != 2 ]; then bad "'$args': exit $RC, want 2 (stderr: $ERR)"; continue; fi
    [ "$(grep -c . <<<"$ERR")" = 1 ] || bad "'$args': want exactly one line on stderr, got: $ERR"
    [[ "$ERR" == "faketcp: "* ]] || bad "'$args': message does not start with 'faketcp: ': $ERR"
    grep -qF -- "$want" <<<"$ERR" || bad "'$args': message lacks '$want': $ERR"
    [ -z "$OUT" ] || bad "'$args': wrote to stdout: $OUT"
done <<'CASES'
missing subcommand|
unknown subcommand 'bogus'|bogus
unknown flag '--bogus'|client "${L[@]}" --bogus
unknown flag '-x'|server "${S[@]}" -x
--local is required|client --remote 10.0.0.1:4567
--remote is required|server --local 4567
--local: expected IP:PORT|client --local 127.0.0.1 --remote 10.0.0.1:4567
--local: expected IP:PORT|client --local 127.0.0.1:70000 --remote 10.0.0.1:4567
--local: expected IP:PORT|client --local localhost:5000 --remote 10.0.0.1:4567
--local: expected a port number|server --local 0 --remote 127.0.0.1:7000
--local: expected a port number|server --local 65536 --remote 127.0.0.1:7000
--remote: expected HOST:PORT|client --local 127.0.0.1:5000 --remote 10.0.0.1:0
--remote: expected HOST:PORT|client --local 127.0.0.1:5000 --remote 10.0.0.1
--remote: expected HOST:PORT|client --local 127.0.0.1:5000 --remote fd00::1:4567
--remote: expected HOST:PORT|server --local 4567 --remote '[10.0.0.1]:7000'
--remote|client --local 127.0.0.1:5000 --remote 999.1.1.1:4567
--remote|server --local 4567 --remote 127.0.0.300:7000
unspecified|client --local 127.0.0.1:5000 --remote 0.0.0.0:4567
--tun-local: expected an IPv4 address|server "${S[@]}" --tun-local 300.1.1.1
--tun-peer: expected an IPv4 address|client "${L[@]}" --tun-peer fcc8::2
--tun-peer: must differ|server "${S[@]}" --tun-peer 192.168.201.1
--tun-local6: expected an IPv6 address|client "${L[@]}" --tun-local6 10.1.1.1
--tun-peer6: expected an IPv6 address|server "${S[@]}" --tun-peer6 fcc9::zz
--tun:|client "${L[@]}" --tun a/b
--tun:|client "${L[@]}" --tun waytoolongname0123
conflicts with --tun-local6|client "${L[@]}" -4 --tun-local6 fcc8::1
is IPv6|client --local 127.0.0.1:5000 --remote '[fd00::1]:4567' -4
--log-level: expected error, warn, info or debug|server "${S[@]}" --log-level loud
--idle-timeout: expected a whole number|client "${L[@]}" --idle-timeout -1
--queues: expected a number 1-256|server "${S[@]}" --queues 0
--queues: expected a number 1-256|server "${S[@]}" --queues 257
--busy-poll: expected microseconds 0-1000|client "${L[@]}" --busy-poll 1001
--busy-poll: expected microseconds 0-1000|server "${S[@]}" --busy-poll 5us
--stats-interval: expected a whole number|server "${S[@]}" --stats-interval 1.5
--keepalive: expected a whole number of seconds 0-86400|client "${L[@]}" --keepalive 86401
--keepalive: expected a whole number of seconds 0-86400|server "${S[@]}" --keepalive 5s
--keepalive-probes: expected a number 1-255|client "${L[@]}" --keepalive-probes 0
--keepalive-probes: expected a number 1-255|server "${S[@]}" --keepalive-probes 256
given more than once|server "${S[@]}" --local 4568
missing value|server --local 4567 --remote
takes no value|client "${L[@]}" --ipv4-only=yes
unexpected argument|server "${S[@]}" extra
--handshake-packet: cannot read|client "${L[@]}" --handshake-packet /nonexistent/x
CASES
[ "$(ip -n "$NS_X" -o link | grep -vc ': lo:')" = 0 ] || bad "a bad-flag run left a device: $(ip -n "$NS_X" -o link)"

# --- unprivileged: exit 1, CAP_NET_ADMIN and the setcap fix named, nothing left
step "unprivileged run"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all)
for mode in server client; do
    if [ $mode = server ]; then args=("${S[@]}"); else args=(--local 127.0.0.1:5000 --remote 10.0.0.1:4567); fi
    run unpriv "${NOBODY[@]}" $BIN $mode "${args[@]}" --tun ftun$SUF
    [ "$RC" = 1 ] || bad "unprivileged $mode: exit $RC, want 1 ($ERR)"
    grep -q "CAP_NET_ADMIN" <<<"$ERR" || bad "unprivileged $mode: no mention of CAP_NET_ADMIN: $ERR"
    grep -qF "setcap cap_net_admin+ep" <<<"$ERR" || bad "unprivileged $mode: no 'setcap cap_net_admin+ep' hint: $ERR"
    ! grep -q "ready" <<<"$ERR" || bad "unprivileged $mode: printed ready"
done
[ "$(ip -n "$NS_X" -o link | grep -vc ': lo:')" = 0 ] || bad "an unprivileged run left a device"

# --- SIGINT: RST all, TUN removed, exit 0
step "SIGINT"
bg SIG "$NS_X" sigint $BIN server "${S[@]}" --tun ftun$SUF
wait_for 10 grep -q ready "$WORK/sigint.log" || fail "the server did not get ready"
ip -n "$NS_X" link show ftun$SUF >/dev/null 2>&1 || bad "the TUN ftun$SUF does not exist while the server runs"
stop_pid "$SIG" INT 5
rc=$?
[ "$rc" = 0 ] || bad "SIGINT: exit $rc, want 0"
grep -q "SIGINT received" "$WORK/sigint.log" || bad "SIGINT: not logged"
grep -q "stats at exit: stack:" "$WORK/sigint.log" || bad "SIGINT: no stats at exit"
ip -n "$NS_X" link show ftun$SUF >/dev/null 2>&1 && bad "SIGINT: the TUN is still there"

if [ ${#ERRORS[@]} -gt 0 ]; then
    CUR_STEP="${#ERRORS[@]} problem(s)"
    fail "$(printf '%s; ' "${ERRORS[@]}")"
fi
ok
