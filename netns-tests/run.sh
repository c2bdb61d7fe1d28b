#!/usr/bin/env bash
# netns-tests/run.sh BINARY — the network-namespace integration suite.
#
# Runs every NN-*.sh scenario in order against BINARY (a snapshot copy, so a
# rebuild during the run cannot change it under the tests), prints each
# scenario's result line with its run time, then checks that nothing was left
# behind (namespaces, devices, processes, wireguard sockets) and prints
#   netns: N passed, M failed, K skipped
# Exit status: 0 when nothing failed. Needs root; each scenario skips without it.
# A scenario exits 0 with `[ OK ]`, 1 with `[FAIL]`, $SKIP_STATUS (77) with
# `[SKIP]`; any other pairing is a failure.
#   run.sh --list      every scenario with the first sentence of its header
#   NETNS_VERBOSE=1    step headings and measurements on stderr
#   NETNS_ONLY=03      run only scenarios whose name contains this
#   NETNS_SCENARIO_TIMEOUT=150   seconds before a scenario is stopped (TERM: it cleans up)
set -u
here=$(cd "$(dirname "$0")" && pwd)
SKIP_STATUS=77  # lib.sh's skip() exits with it

# The first sentence of a scenario's header comment (the lines after #!).
describe() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); text = text " " $0; next } { exit }
         END { sub(/^ /, "", text); if (match(text, /\.( |$)/)) text = substr(text, 1, RSTART); print text }' "$1"
}
if [ "${1:-}" = --list ]; then
    for script in "$here"/[0-9][0-9]-*.sh; do describe "$script"; done
    exit 0
fi

bin=${1:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "usage: $0 path/to/faketcp (build it first: make build/faketcp)" >&2
    exit 2
fi
run_dir=$(mktemp -d /tmp/ftc-netns-run.XXXXXX) || exit 1
trap 'rm -rf "$run_dir"' EXIT
chmod 755 "$run_dir"
cp "$bin" "$run_dir/faketcp" && chmod 755 "$run_dir/faketcp" || exit 1
export NETNS_TRACKFILE="$run_dir/created"
: >"$NETNS_TRACKFILE"
limit=${NETNS_SCENARIO_TIMEOUT:-150}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

pass=0 failed=0 skipped=0
t_all=$(now)
for script in "$here"/[0-9][0-9]-*.sh; do
    name=$(basename "$script" .sh)
    if [ -n "${NETNS_ONLY:-}" ] && [[ "$name" != *"$NETNS_ONLY"* ]]; then continue; fi
    t0=$(now)
    out=$(timeout --kill-after=10 "$limit" bash "$script" "$run_dir/faketcp" 2> >(tee "$run_dir/$name.stderr" >&2))
    rc=$?
    dt=$(secs "$t0" "$(now)")
    line=$(grep -m1 -E '^\[( OK |FAIL|SKIP)\] ' <<<"$out")
    rest=$(grep -v -F -x -- "$line" <<<"$out")
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        line="[FAIL] $name: timed out after $limit s${line:+ (last: $line)}"
    elif [ -z "$line" ]; then
        line="[FAIL] $name: exited with status $rc without a result line"
    elif [[ "$line" == "[SKIP]"* ]]; then
        [ "$rc" = "$SKIP_STATUS" ] || line="[FAIL] $name: skipped with status $rc, not $SKIP_STATUS: $line"
    elif [ "$rc" != 0 ] && [[ "$line" != "[FAIL]"* ]]; then
        line="[FAIL] $name: exited with status $rc after: $line"
    elif [ "$rc" = 0 ] && [[ "$line" != "[ OK ]"* ]]; then
        line="[FAIL] $name: exited with status 0 after: $line"
    fi
    case "$line" in
        "[ OK ]"*) pass=$((pass + 1)) ;;
        "[SKIP]"*) skipped=$((skipped + 1)) ;;
        *) failed=$((failed + 1)) ;;
    esac
    echo "$line  ($dt s)"
    if [[ "$line" == "[FAIL]"* ]]; then
        [ -n "$rest" ] && echo "$rest"
        if [ -s "$run_dir/$name.stderr" ] && [ -z "${NETNS_VERBOSE:-}" ]; then
            echo "    --- stderr of $name"
            tail -n 10 "$run_dir/$name.stderr" | sed 's/^/    | /'
        fi
    fi
done

# --- nothing this run created may outlive it (others may use the machine
#     concurrently: only what the scenarios recorded is checked)
leftover=()
while read -r kind a b c; do
    case "$kind" in
        ns) if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$a"; then
                leftover+=("namespace $a")
                ip netns del "$a"  # ours: remove it after saying so
            fi ;;
        sock) [ -e "$a" ] && leftover+=("socket $a") && rm -f "$a" ;;
        pid)
            cur=$(sed 's/.*) //' "/proc/$a/stat" 2>/dev/null | awk '{print $20}')
            if [ -n "$cur" ] && [ "$cur" = "$b" ]; then
                leftover+=("process $a ($c)")
                kill -KILL "$a" 2>/dev/null  # ours (same PID and start time): end it
            fi ;;
    esac
done <"$NETNS_TRACKFILE"
# Devices live in the namespaces; none may have landed in this one.
strays=$(ip -o link 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^ft[a-z]{2}[0-9a-f]{6}$' \
    | while read -r d; do grep -q "${d:4}" "$NETNS_TRACKFILE" && echo "$d"; done)
[ -n "$strays" ] && leftover+=("devices in the root namespace: $(echo $strays)")
if [ ${#leftover[@]} -gt 0 ]; then
    failed=$((failed + 1))
    echo "[FAIL] cleanup: left behind: $(printf '%s; ' "${leftover[@]}")"
fi
echo "netns: total $(secs "$t_all" "$(now)") s"
echo "netns: $pass passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
