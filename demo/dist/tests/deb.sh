#!/usr/bin/env bash
# demo/dist/tests/deb.sh DEB VERSION — the package make deb built, checked (make deb-check, root):
#   1. its control fields (version from demo/options.h, this machine's architecture,
#      dependencies) and exactly the expected files;
#   2. installed with dpkg --root into a throw-away root (maintainer scripts run
#      chrootless with $DPKG_ROOT): the binary runs --help and --version from there and
#      carries cap_net_admin (postinst); the units' ExecStart is /usr/bin/faketcp; the
#      copyright is machine-readable; the changelog and man page are gzipped;
#   3. systemd-analyze verify accepts both units (with their drop-ins) against that
#      root: syntax, the ExecStart binary, the man page of Documentation=;
#   4. man -l renders the installed page without a warning;
#   5. lintian reports no error (its warnings are listed);
#   6. installed again (an upgrade's configure), then purged: no file of the package
#      left, the administrator's config file kept, 'systemctl enable' links removed.
# One [ OK ] / [FAIL] line; exit 0 / 1.
set -uo pipefail
DEB=${1:?usage: deb.sh DEB VERSION}
VERSION=${2:?usage: deb.sh DEB VERSION}
NAME=deb-check
fail() { echo "[FAIL] $NAME: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg --root, setcap)"
[ -f "$DEB" ] || fail "no package $DEB"
DEB=$(realpath "$DEB")
WORK=$(mktemp -d /tmp/ftc-deb-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export PATH="$PATH:/usr/sbin:/sbin"
for t in dpkg-deb lintian systemd-analyze man getcap readelf; do
    command -v $t >/dev/null || fail "$t is missing: run 'sudo make deps DEPS=pkg' (netns-tests/deps.list)"
done

# --- 1. control fields and file list --------------------------------------------------
field() { dpkg-deb -f "$DEB" "$1"; }
[ "$(field Package)" = faketcp ] || fail "Package: $(field Package)"
[[ "$(field Version)" =~ ^${VERSION//./\\.}-[0-9]+$ ]] || fail "Version: $(field Version), want $VERSION-N (kVersion)"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture: $(field Architecture)"
for dep in 'libc6 (>= ' 'libstdc++6 (>= ' libcap2-bin; do
    [[ "$(field Depends)" == *"$dep"* ]] || fail "Depends: $(field Depends) lacks $dep"
done
[[ "$(basename "$DEB")" == "faketcp_$(field Version)_$(field Architecture).deb" ]] || fail "file name $(basename "$DEB")"
expected="etc/faketcp/
lib/systemd/system/faketcp-client@.service
lib/systemd/system/faketcp-client@.service.d/auto-rules.conf
lib/systemd/system/faketcp-server@.service
lib/systemd/system/faketcp-server@.service.d/auto-rules.conf
usr/bin/faketcp
usr/share/doc/faketcp/changelog.Debian.gz
usr/share/doc/faketcp/copyright
usr/share/doc/faketcp/examples/example.conf
usr/share/man/man8/faketcp.8.gz"
# the files, and the one directory that holds no file of the package
listing=$(dpkg-deb --fsys-tarfile "$DEB" | tar -tvf - | awk '$1 !~ /^d/ || $NF == "./etc/faketcp/" { sub(/^\.\//, "", $NF); print $NF }' | LC_ALL=C sort)
[ "$listing" = "$expected" ] || fail "the package holds: $(echo $listing) -- expected: $(echo $expected)"
dpkg-deb --fsys-tarfile "$DEB" | tar -tvf - | awk '$2 != "root/root" { exit 1 }' || fail "a file not owned by root/root"

# --- 2. installed into a throw-away root ----------------------------------------------
R=$WORK/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
touch "$R/var/lib/dpkg/status"
# dpkg --root IN THE ROOT: ARGS; the dependencies live outside the throw-away root.
dpkg_root() { dpkg --root="$R" --force-script-chrootless --force-depends "$@" >>"$WORK/dpkg.log" 2>&1 || fail "dpkg $*: $(tail -n 5 "$WORK/dpkg.log")"; }
dpkg_root -i "$DEB"
bin=$R/usr/bin/faketcp
"$bin" --help >"$WORK/help" 2>&1 || fail "the installed binary's --help exited $?"
grep -q "faketcp client --local IP:PORT --remote HOST:PORT" "$WORK/help" || fail "--help: $(head -n 3 "$WORK/help")"
"$bin" server --help >"$WORK/help" 2>&1 || fail "the installed binary's server --help exited $?"
grep -q -- "--auto-rules" "$WORK/help" || fail "the installed server --help lacks --auto-rules"
[ "$("$bin" --version)" = "faketcp $VERSION" ] || fail "--version: $("$bin" --version), want faketcp $VERSION"
[[ "$(getcap "$bin")" == *cap_net_admin=ep* ]] || fail "postinst did not grant cap_net_admin: getcap says '$(getcap "$bin")'"
readelf -S "$bin" | grep -q '\.symtab' && fail "the binary is not stripped (it has a .symtab)"
for role in client server; do
    exec_line=$(grep '^ExecStart=' "$R/lib/systemd/system/faketcp-$role@.service")
    [ "$exec_line" = "ExecStart=/usr/bin/faketcp $role --config /etc/faketcp/%i.conf" ] || fail "faketcp-$role@.service: $exec_line"
done
doc=$R/usr/share/doc/faketcp
[ "$(head -n 1 "$doc/copyright")" = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" ] \
    || fail "the copyright file is not machine-readable (DEP-5): $(head -n 1 "$doc/copyright")"
zcat "$doc/changelog.Debian.gz" | head -n 1 | grep -q "^faketcp ($(field Version))" || fail "changelog.Debian.gz does not start with this version"
cmp -s "$doc/examples/example.conf" "$(dirname "$0")/../example.conf" || fail "examples/example.conf differs from demo/dist/example.conf"

# --- 3. systemd-analyze verify, in the root ---------------------------------------------
# --recursive-errors=no: the root has no systemd of its own (sysinit.target and such);
# everything of the unit itself is checked: keys and values, its drop-ins, that the
# ExecStart binary exists in the root, and that man finds Documentation=man:faketcp(8).
for role in client server; do
    out=$(cd "$WORK" && MANPATH="$R/usr/share/man" systemd-analyze verify --root="$R" --recursive-errors=no "faketcp-$role@wg.service" 2>&1)
    rc=$?
    [ $rc = 0 ] && [ -z "$out" ] || fail "systemd-analyze verify faketcp-$role@wg.service (exit $rc): $out"
done

# --- 4. the installed man page renders without a warning ---------------------------------
out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$R/usr/share/man/man8/faketcp.8.gz" 2>&1 >"$WORK/man.txt")
[ -z "$out" ] || fail "man -l warns: $out"
grep -q "/usr/bin/faketcp" "$WORK/man.txt" || fail "the installed man page does not name /usr/bin/faketcp"

# --- 5. lintian: no error -----------------------------------------------------------------
# As an unprivileged user (lintian advises against root), on a copy it can read.
mkdir -p "$WORK/lint" && chmod 755 "$WORK" "$WORK/lint" && install -m 644 "$DEB" "$WORK/lint/"
setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/nonexistent TMPDIR=/tmp \
    lintian --pedantic --display-info --fail-on error "$WORK/lint/$(basename "$DEB")" >"$WORK/lintian" 2>&1
rc=$?
errors=$(grep -c '^E: ' "$WORK/lintian")
warnings=$(grep -c '^W: ' "$WORK/lintian")
other=$(grep -c '^[IPX]: ' "$WORK/lintian")
[ $rc = 0 ] && [ "$errors" = 0 ] || fail "lintian (exit $rc): $(cat "$WORK/lintian")"
if [ -s "$WORK/lintian" ]; then sed 's/^/    lintian: /' "$WORK/lintian" >&2; fi

# --- 6. reinstalled, then purged -------------------------------------------------------------
dpkg_root -i "$DEB"  # configure with the old version as $2, as an upgrade
[[ "$(getcap "$bin")" == *cap_net_admin=ep* ]] || fail "after reinstalling: no cap_net_admin"
printf 'local 4567\nremote 127.0.0.1:51820\n' >"$R/etc/faketcp/mine.conf"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -s /lib/systemd/system/faketcp-server@.service "$R/etc/systemd/system/multi-user.target.wants/faketcp-server@mine.service"
dpkg_root --purge faketcp
left=$(cd "$R" && find . -path ./var/lib/dpkg -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort)
[ "$left" = "./etc/faketcp/mine.conf" ] || fail "after purge: $(echo $left) (want only ./etc/faketcp/mine.conf)"
[ ! -e "$R/lib/systemd/system/faketcp-server@.service.d" ] || fail "purge left the drop-in directory"

echo "[ OK ] $NAME: $(basename "$DEB"): fields, files, dpkg --root install (setcap by postinst), --help, systemd-analyze verify, man -l, lintian $errors errors / $warnings warnings / $other other, purge"
