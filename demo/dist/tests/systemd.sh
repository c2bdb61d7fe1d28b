#!/usr/bin/env bash
# demo/dist/tests/systemd.sh DEB — the package under a real systemd (make systemd-check, root).
#
# A minimal Debian 12 root (.ci/debroot.sh: minbase + systemd, nftables, iproute2,
# libcap2-bin, socat; cached) boots in a container, systemd-nspawn -b with its own
# network namespace, so systemd is PID 1 there as on a server. The package is installed
# with dpkg -i (its maintainer scripts see a running systemd), then, through the units
# exactly as installed:
#   1. faketcp-server@s and faketcp-client@c, both with auto-rules, start (Type=notify:
#      `systemctl start` returns once READY=1 came) and stay up; each runs as a dynamic
#      user, not root, with CAP_NET_ADMIN as its only capability, no_new_privs and a
#      seccomp filter;
#   2. datagrams sent to the client's UDP port come back from an echo service behind the
#      server, through both TUNs and the rules --auto-rules loaded (no hand-written rule).
#      Both run 2 queues (`queues 2`), so each tries to load its eBPF steering program
#      whatever the host's CPU count: bpf(2) must fail with EPERM (no CAP_BPF in the units:
#      one thread serves both queues, with a warning), never kill the process with SIGSYS;
#   3. SIGKILL: Restart=on-failure starts the server again, which replaces its stale table
#      and takes over turning forwarding back off;
#   4. the journal: warnings at priority warning (the <N> prefix), info at info, no
#      timestamp of faketcp's own;
#   5. `systemctl stop` of both: inactive, their nftables tables gone, the forwarding
#      sysctls as they were before;
#   6. a config file with an unknown key: the instance fails with the FILE:LINE error in
#      its journal and is not restarted (RestartPreventExitStatus=2).
# The container's /dev/net/tun is created mode 0600 by systemd-nspawn; a host's udev makes
# it 0666, so the test does the same before starting the units.
# One [ OK ] / [FAIL] line (with the journal's tail on failure); exit 0 / 1. Where
# systemd-nspawn cannot boot a container at all: [SKIP] with its output, exit 77.
set -uo pipefail
DEB=${1:?usage: systemd.sh DEB}
NAME=systemd-check
repo=$(cd "$(dirname "$0")/../../.." && pwd)
fail() {
    echo "[FAIL] $NAME: $*"
    if [ -n "${LEADER:-}" ]; then
        echo "    the container's journal for faketcp (last 25 lines):"
        in_ct journalctl --no-pager -u 'faketcp-*' 2>/dev/null | tail -n 25 | sed 's/^/    | /'
    fi
    exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, systemd-nspawn)"
[ -f "$DEB" ] || fail "no package $DEB"
DEB=$(realpath "$DEB")
for t in systemd-nspawn nsenter zstd; do
    command -v $t >/dev/null || fail "$t is missing: run 'sudo make deps DEPS=pkg' (netns-tests/deps.list)"
done

source "$repo/.ci/debroot.sh"
DEBROOT_WHO=$NAME
tarball=$(debroot_tarball bookworm systemd,systemd-sysv,dbus,nftables,iproute2,libcap2-bin,socat,procps) \
    || fail "could not build the minimal root"

ROOT=$(mktemp -d /var/tmp/ftc-systemd.XXXXXX)
MACHINE=ftc-sd-$$
NSPAWN=""
LEADER=""
cleanup() {
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        [ -n "$LEADER" ] && in_ct systemctl poweroff --no-block >/dev/null 2>&1
        for _ in $(seq 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NSPAWN" 2>/dev/null
        wait "$NSPAWN" 2>/dev/null
    fi
    debroot_remove "$ROOT"
    rm -f "$ROOT.console" "$ROOT.dpkg.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
tar -C "$ROOT" -xf "$tarball" || fail "unpacking $tarball"
cp "$DEB" "$ROOT/root/faketcp.deb"
echo "$MACHINE" >"$ROOT/etc/hostname"

# in_ct CMD...: CMD inside the booted container (all its namespaces), as its root.
in_ct() { nsenter --target "$LEADER" --all "$@"; }
# ct_sh SCRIPT: a shell script inside the container.
ct_sh() { in_ct /bin/sh -c "$1"; }

# --- boot ------------------------------------------------------------------------------
# --keep-unit / --register=no: this host need not run systemd itself.
systemd-nspawn --quiet -D "$ROOT" -M "$MACHINE" -b --private-network --keep-unit --register=no \
    >"$ROOT.console" 2>&1 &
NSPAWN=$!
for _ in $(seq 100); do
    LEADER=$(pgrep -P "$NSPAWN" | head -n1)
    [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ] && break
    LEADER=""
    kill -0 "$NSPAWN" 2>/dev/null || break
    sleep 0.1
done
# A machine where systemd-nspawn cannot boot a container (no cgroup rights, inside
# another container) cannot run this check at all: a loud skip, not a verdict on the package.
skip_no_boot() {
    echo "[SKIP] $NAME: $1; systemd-nspawn's last lines:"
    tail -n 8 "$ROOT.console" | sed 's/^/    | /'
    exit 77
}
[ -n "$LEADER" ] || skip_no_boot "systemd-nspawn could not boot a container on this machine"
# Until PID 1 has its control socket, systemctl fails at once: ask again.
state=""
deadline=$(( $(date +%s) + 90 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(timeout 20 nsenter --target "$LEADER" --all systemctl is-system-running --wait 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
done
case "$state" in
running | degraded) ;;
*) skip_no_boot "systemd in the container did not finish booting (state '$state')" ;;
esac

# --- the package, the test bed ---------------------------------------------------------
ct_sh 'dpkg -i /root/faketcp.deb' >"$ROOT.dpkg.log" 2>&1 || fail "dpkg -i: $(tail -n 5 "$ROOT.dpkg.log" | tr '\n' ' ')"
ct_sh 'chmod 0666 /dev/net/tun && ip link set lo up && ip addr add 10.99.0.1/32 dev lo' || fail "test bed set-up"
cat >"$ROOT/etc/systemd/system/udpecho.service" <<'EOF'
[Unit]
Description=UDP echo on 127.0.0.1:6000, the service behind the faketcp server
[Service]
ExecStart=/usr/bin/socat UDP4-RECVFROM:6000,bind=127.0.0.1,fork EXEC:/bin/cat
EOF
printf '# server: fake TCP on port 4567, the echo service behind it\nlocal 4567\nremote 127.0.0.1:6000\ntun ftcs\nqueues 2\nauto-rules\n' \
    >"$ROOT/etc/faketcp/s.conf"
printf '# client: UDP on 127.0.0.1:5000, the server at 10.99.0.1 (this container)\nlocal 127.0.0.1:5000\nremote 10.99.0.1:4567\ntun ftcc\nqueues 2\nauto-rules\n' \
    >"$ROOT/etc/faketcp/c.conf"
chmod 0644 "$ROOT"/etc/faketcp/*.conf
ct_sh 'systemctl daemon-reload && systemctl start udpecho' || fail "the echo service did not start"
fwd_before=$(ct_sh 'sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding' | xargs)

prop() { in_ct systemctl show -p "$2" --value "$1"; }
grep_journal() { in_ct journalctl --no-pager -o cat -u faketcp-server@s | grep -q "$1"; }
# echo_ok TAG: three datagrams through the tunnel, each echoed
echo_ok() {
    local i got
    for i in 1 2 3; do
        got=$(ct_sh "echo $1-$i | timeout 5 socat -t 3 - UDP4:127.0.0.1:5000") || return 1
        [ "$got" = "$1-$i" ] || return 1
    done
}

# --- 1. both units up, with the rights they promise ------------------------------------
# The server first: it finds forwarding off and turns it on, so the duty to turn it back
# off is the server's (step 3 kills it and checks its successor takes that over).
ct_sh 'systemctl start faketcp-server@s && systemctl start faketcp-client@c' \
    || fail "systemctl start of faketcp-server@s and faketcp-client@c failed"
sleep 1
for u in faketcp-server@s faketcp-client@c; do
    [ "$(prop $u ActiveState)/$(prop $u SubState)" = active/running ] || fail "$u is $(prop $u ActiveState)/$(prop $u SubState)"
    [ "$(prop $u NRestarts)" = 0 ] || fail "$u restarted $(prop $u NRestarts) times"
    pid=$(prop $u MainPID)
    status=$(ct_sh "cat /proc/$pid/status")
    uid=$(awk '/^Uid:/ { print $3 }' <<<"$status")
    [ "${uid:-0}" -ge 61184 ] && [ "$uid" -le 65519 ] || fail "$u runs as uid $uid, not a dynamic user"
    [ "$(awk '/^CapEff:/ { print $2 }' <<<"$status")" = 0000000000001000 ] || fail "$u capabilities: $(grep '^Cap' <<<"$status" | xargs)"
    [ "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")" = 1 ] || fail "$u: no_new_privs not set"
    [ "$(awk '/^Seccomp:/ { print $2 }' <<<"$status")" = 2 ] || fail "$u: no seccomp filter"
done

# --- 2. the echo through both tunnels, on the rules --auto-rules loaded ----------------
echo_ok first || fail "no echo through faketcp-client@c -> faketcp-server@s"
tables=$(ct_sh 'nft list tables' | xargs)
[ "$tables" = "table inet faketcp-ftcs table inet faketcp-ftcc" ] || [ "$tables" = "table inet faketcp-ftcc table inet faketcp-ftcs" ] \
    || fail "nftables tables while running: '$tables'"

# --- 3. SIGKILL: restarted, the stale table replaced -----------------------------------
in_ct systemctl kill -s KILL faketcp-server@s || fail "systemctl kill"
for _ in $(seq 50); do [ "$(prop faketcp-server@s NRestarts)" = 1 ] && [ "$(prop faketcp-server@s SubState)" = running ] && break; sleep 0.2; done
[ "$(prop faketcp-server@s NRestarts)/$(prop faketcp-server@s SubState)" = 1/running ] \
    || fail "after SIGKILL: restarts $(prop faketcp-server@s NRestarts), state $(prop faketcp-server@s SubState)"
grep_journal 'removing the stale nftables table faketcp-ftcs' \
    || fail "the restarted server did not report replacing its stale table"
grep_journal 'turned /proc/sys/net/ipv4/ip_forward on' || fail "the first server did not turn forwarding on (was '$fwd_before')"
grep_journal 'had turned .* on; this one turns it back off' \
    || fail "the killed server had turned forwarding on, and its successor did not take over turning it back off"
echo_ok restarted || fail "no echo after the server's restart"

# --- 4. the journal: priorities, no second timestamp -----------------------------------
warn=$(in_ct journalctl --no-pager -o cat -p warning -u faketcp-server@s | grep -m1 'removing the stale nftables table') \
    || fail "the stale-table warning is not in the journal at priority warning"
[[ "$warn" == WARN\ auto-rules:* ]] || fail "journal line carries more than the level and message: '$warn'"
in_ct journalctl --no-pager -o cat -p info -u faketcp-server@s | grep -q '^INFO server ready' || fail "no 'server ready' line at priority info"
in_ct journalctl --no-pager -o cat -p warning -u faketcp-server@s | grep -q 'server ready' && fail "'server ready' logged at priority warning or above"
ready=$(in_ct journalctl --no-pager -o cat -u faketcp-server@s | grep 'server ready' | tail -n1)
case "$ready" in
*"with 2 queues, one thread each"*) ;;  # a host that lets an unprivileged user load socket filters
*"with 2 queues, one thread for all"*)
    in_ct journalctl --no-pager -o cat -p warning -u faketcp-server@s | grep -q 'cannot steer connections to queues' \
        || fail "one thread for both queues, but no warning saying why" ;;
*) fail "server ready line: '$ready'" ;;
esac

in_ct journalctl --no-pager -o cat -u 'faketcp-*' | grep -q 'cannot take the lock' \
    && fail "an instance could not take the auto-rules lock under its unit"

# --- 5. stop: rules and forwarding as before ---------------------------------------------
ct_sh 'systemctl stop faketcp-client@c faketcp-server@s' || fail "systemctl stop"
for u in faketcp-server@s faketcp-client@c; do
    [ "$(prop $u ActiveState)" = inactive ] || fail "$u is $(prop $u ActiveState) after stop"
done
tables=$(ct_sh 'nft list tables' | xargs)
[ -z "$tables" ] || fail "tables left after stop: '$tables'"
fwd_after=$(ct_sh 'sysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding' | xargs)
[ "$fwd_after" = "$fwd_before" ] || fail "forwarding sysctls '$fwd_before' before, '$fwd_after' after"

# --- 6. a bad config: one line in the journal, no restart loop ---------------------------
printf 'local 4567\nremote 127.0.0.1:6000\ntun ftcb\nno-such-flag 1\n' >"$ROOT/etc/faketcp/bad.conf"
chmod 0644 "$ROOT/etc/faketcp/bad.conf"
ct_sh 'systemctl start faketcp-server@bad' >/dev/null 2>&1 && fail "faketcp-server@bad started with an unknown key"
sleep 3  # RestartSec=2: a restart would have come by now
[ "$(prop faketcp-server@bad NRestarts)" = 0 ] || fail "faketcp-server@bad restarted $(prop faketcp-server@bad NRestarts) times"
[ "$(prop faketcp-server@bad ExecMainStatus)" = 2 ] || fail "faketcp-server@bad exit status $(prop faketcp-server@bad ExecMainStatus), want 2"
in_ct journalctl --no-pager -o cat -u faketcp-server@bad | grep -q '/etc/faketcp/bad.conf:4: ' \
    || fail "no FILE:LINE error for the bad key in the journal"

echo "[ OK ] $NAME: the package under systemd $(in_ct systemctl --version | head -n1 | awk '{print $2}') as PID 1: both units up as dynamic users with CAP_NET_ADMIN only, echo through --auto-rules, bpf(2) refused without SIGSYS, restart after SIGKILL, journal priorities, clean stop, a bad config not restarted"
