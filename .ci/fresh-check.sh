#!/usr/bin/env bash
# .ci/fresh-check.sh — the README's two commands as a newcomer runs them (`make fresh-check`,
# and a step of .ci/run). Root only.
#
# A minimal Debian 12 root (debootstrap --variant=minbase plus only build-essential,
# iproute2, git and ca-certificates), a clone of this repository's HEAD inside it, then
# the commands of the README's "Two commands" block, as root, in that root (/proc, /sys,
# /dev bind-mounted, a fresh /run): everything else they need they must install
# themselves (`make deps`, netns-tests/deps.list). A tool missing from the list fails
# here even when this machine has it installed.
#
# The root is built once and cached as a tarball under $FRESH_CACHE
# (/var/cache/faketcp-ci), keyed by suite, mirror and package list; each run unpacks a
# throw-away copy, removed (after every mount under it is gone) on exit.
#   FRESH_KEEP_LOGS=DIR   write the two commands' logs there (default: a new /tmp dir)
# Exit status 0 only when both commands pass. On failure: the tail of the failing log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root (debootstrap, chroot, mounts): run 'sudo make fresh-check'" >&2; exit 1; }

SUITE=bookworm
INCLUDE=build-essential,iproute2,git,ca-certificates
export DEBIAN_FRONTEND=noninteractive
t_start=$(date +%s)
say() { echo "fresh-check: $*"; }

source "$repo/.ci/debroot.sh"
DEBROOT_WHO=fresh-check

# --- the cached minimal root ---------------------------------------------------
tarball=$(debroot_tarball "$SUITE" "$INCLUDE") || exit 1

# --- a throw-away copy, its mounts undone whatever happens ---------------------
ROOT=$(mktemp -d /var/tmp/ftc-fresh.XXXXXX)
MOUNTS=()
CHILD=""  # the command running in the root: its own session, so all of it can be ended
cleanup() {
    local i
    if [ -n "$CHILD" ]; then kill -TERM -- "-$CHILD" 2>/dev/null; sleep 2; kill -KILL -- "-$CHILD" 2>/dev/null; fi
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -R "${MOUNTS[i]}" 2>/dev/null || umount -R -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    debroot_remove "$ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
tar -C "$ROOT" -xf "$tarball"
# The root a mount point of its own: `ip netns exec` remounts / (--make-rslave) in its
# mount namespace, which fails on a plain directory.
mount --bind "$ROOT" "$ROOT"
MOUNTS+=("$ROOT")
bind() {  # bind SRC: the host's SRC at the same place in the root
    [ -e "$1" ] || return 0
    mkdir -p "$ROOT$1"
    mount --bind "$1" "$ROOT$1"
    MOUNTS+=("$ROOT$1")
}
bind /dev
bind /dev/pts
bind /dev/shm
bind /proc
bind /sys
mkdir -p "$ROOT/run"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/run"  # fresh: `ip netns` keeps its namespaces here
MOUNTS+=("$ROOT/run")

# Name resolution and apt as this machine has them (sources, proxy and
# validity settings), so `make deps` inside reaches the same archive.
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# debootstrap's one-line sources.list stays only when the host has none to copy.
copied=0
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] || continue
    # only sources whose keyring the root has (debian-archive-keyring), or that name none
    kr=$(awk 'tolower($1) == "signed-by:" { print $2 }' "$f" | head -n1)
    kr=${kr:-$(sed -n 's/.*signed-by=\([^] ]*\).*/\1/p' "$f" | head -n1)}
    if [ -z "$kr" ] || [ -e "$ROOT$kr" ]; then
        [ "$copied" = 1 ] || rm -f "$ROOT/etc/apt/sources.list"
        cp "$f" "$ROOT$f"
        copied=1
    fi
done
[ -e /etc/apt/apt.conf ] && cp /etc/apt/apt.conf "$ROOT/etc/apt/apt.conf"
for f in /etc/apt/apt.conf.d/*; do
    grep -qiE '^[[:space:]]*Acquire' "$f" 2>/dev/null && cp "$f" "$ROOT/etc/apt/apt.conf.d/"
done

# --- the commit under test, cloned inside with the root's own git ---------------
commit=$(git -C "$repo" rev-parse HEAD)
git -C "$repo" bundle create "$ROOT/root/faketcp.bundle" HEAD >/dev/null 2>&1 \
    || { say "git bundle of HEAD failed" >&2; exit 1; }
in_root() {  # in_root CMD: CMD by bash in the root, as root, with a login-like environment
    local keep=() v
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!v:-}" ] && keep+=("$v=${!v}")
    done
    setsid chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 USER=root LOGNAME=root \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${keep[@]}" /bin/bash -c "$1" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}
in_root "git -c advice.detachedHead=false clone -q /root/faketcp.bundle /root/faketcp && cd /root/faketcp && git -c advice.detachedHead=false checkout -q $commit" \
    || { say "cloning $commit inside the root failed" >&2; exit 1; }
say "clone of $commit in a minimal $SUITE root ($(in_root 'dpkg-query -W -f=x | wc -c') packages: minbase + $INCLUDE)"

# --- the README's two commands, exactly (run as root, so without `sudo`) ---------
mapfile -t cmds < <(awk '/^## Two commands/ { f = 1; next } f && /^```/ { if (c) exit; c = 1; next } c' "$repo/README.md" \
    | sed 's/#.*//; s/^[[:space:]]*sudo[[:space:]]\+//; s/[[:space:]]*$//' | grep .)
[ "${#cmds[@]}" = 2 ] || { say "expected two commands in the README's 'Two commands' block, found ${#cmds[@]}: ${cmds[*]}" >&2; exit 1; }
logs=${FRESH_KEEP_LOGS:-$(mktemp -d /tmp/ftc-fresh-logs.XXXXXX)}
mkdir -p "$logs"
rc_all=0
for cmd in "${cmds[@]}"; do
    log="$logs/$(tr -c 'a-z0-9\n' '-' <<<"$cmd").log"
    t0=$(date +%s)
    say "running \`$cmd\` in the minimal root (log: $log)"
    if in_root "cd /root/faketcp && $cmd" >"$log" 2>&1; then
        say "\`$cmd\` passed in the minimal root ($(( $(date +%s) - t0 )) s)"
        { grep -E '^\[SKIP\]' "$log" || true; tail -n 2 "$log"; } | sed 's/^/    | /' 
    else
        rc=$?
        say "\`$cmd\` FAILED in the minimal root (exit $rc, $(( $(date +%s) - t0 )) s); the last 40 lines of $log:" >&2
        tail -n 40 "$log" | sed 's/^/    | /' >&2
        rc_all=1
        break
    fi
done
say "total $(( $(date +%s) - t_start )) s"
exit $rc_all
