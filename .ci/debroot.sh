# .ci/debroot.sh — sourced: a minimal Debian root built once by debootstrap and
# cached as a tarball, for the checks that need a whole fresh system
# (.ci/fresh-check.sh: the README's commands on a new machine;
# demo/dist/tests/systemd.sh: the package under a real systemd).
#
#   debroot_tarball SUITE INCLUDE   prints the path of the cached tarball of
#                                   `debootstrap --variant=minbase --include=INCLUDE SUITE`
#                                   from this machine's Debian mirror, building it first
#                                   when absent (about a minute; the cache is keyed by
#                                   suite, mirror, package list and architecture)
#
# Cache directory: $FRESH_CACHE (/var/cache/faketcp-ci). Messages go to stderr,
# prefixed with $DEBROOT_WHO. Root only.

DEBROOT_CACHE=${FRESH_CACHE:-/var/cache/faketcp-ci}
DEBROOT_WHO=${DEBROOT_WHO:-debroot}

debroot_say() { echo "$DEBROOT_WHO: $*" >&2; }

# The Debian mirror this machine's apt uses for SUITE (deb822 or one-line
# sources), so the root comes from where `apt-get install` here would fetch.
debroot_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk 'tolower($1) == "uris:" { u = $2 } tolower($1) == "suites:" && $0 ~ /[[:space:]]'"$suite"'([[:space:]]|$)/ && u !~ /security/ { print u; exit }
             /^[[:space:]]*$/ { u = "" }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        awk '$1 == "deb" && $0 ~ /[[:space:]]'"$suite"'[[:space:]]/ && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f"
    done
}

debroot_tarball() {
    local suite=$1 include=$2 mirror key comp ext tarball build t0
    mirror=$(debroot_mirror "$suite" | head -n1)
    mirror=${mirror:-http://deb.debian.org/debian}
    key=$(printf '%s\n' "$suite" minbase "$include" "$mirror" "$(dpkg --print-architecture)" | sha256sum | cut -c1-16)
    if command -v zstd >/dev/null; then comp=--zstd ext=tar.zst; else comp=--gzip ext=tar.gz; fi
    tarball="$DEBROOT_CACHE/debian-$suite-minbase-$key.$ext"
    if [ ! -s "$tarball" ]; then
        t0=$(date +%s)
        if ! command -v debootstrap >/dev/null; then
            debroot_say "installing debootstrap"
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } \
                || { debroot_say "apt-get install debootstrap failed"; return 1; }
        fi
        mkdir -p "$DEBROOT_CACHE"
        build=$(mktemp -d "$DEBROOT_CACHE/build.XXXXXX")
        debroot_say "building a minimal root ($suite from $mirror, minbase + $include), cached as $tarball"
        if ! debootstrap --variant=minbase --include="$include" "$suite" "$build/root" "$mirror" >"$build/debootstrap.log" 2>&1; then
            debroot_say "debootstrap failed; its last lines:"
            tail -n 30 "$build/debootstrap.log" | sed 's/^/    | /' >&2
            rm -rf --one-file-system "$build"
            return 1
        fi
        rm -rf "$build/root/var/cache/apt/archives/"*.deb
        if ! { tar -C "$build/root" $comp -cf "$build/root.$ext" . && mv "$build/root.$ext" "$tarball"; }; then
            rm -rf --one-file-system "$build"
            return 1
        fi
        rm -rf --one-file-system "$build"
        debroot_say "root built and cached in $(( $(date +%s) - t0 )) s"
    fi
    echo "$tarball"
}

# debroot_remove DIR: deletes an unpacked root, but never through a mount still
# under it (that would empty the host's /dev or /sys); says so and keeps it then.
debroot_remove() {
    if findmnt -rn -o TARGET | grep -q "^$1\(/\|$\)"; then
        debroot_say "mounts under $1 remain; not removing it"
        return 1
    fi
    rm -rf --one-file-system "$1"
}
