# Sourced by .ci/run and scripts/build-wheels: the Debian unstable root that CPython 3.14 and
# 3.15 run in (they need a newer C library than this machine's). Needs root. The functions
# write their logs into "$work", a temporary directory the sourcing script made.
# shellcheck shell=bash disable=SC2154  # $work is the sourcing script's
#
# The root is made the first time (debootstrap from this machine's own apt mirror) and reused
# after; the machine's Rust toolchain and the checkout are bind-mounted in at the same paths
# while it is used.

# Where the root is: $CI_DEBIAN_ROOT, else a directory in this user's cache.
# shellcheck disable=SC2034  # read by the sourcing scripts
DEBIAN_ROOT="${CI_DEBIAN_ROOT:-$HOME/.cache/ferropickle-ci/debian-sid}"

# The Debian unstable root at $1, made with debootstrap if it is not there yet.
make_debian_root() {
    local root="$1" mirror
    if [ -e "$root/.ferropickle-ci-root" ]; then
        echo "=== Reusing the Debian unstable root $root"
        return
    fi
    if [ -e "$root" ]; then
        # A root made by hand the same way is reused once apt runs in it.
        if chroot "$root" apt-get --version >/dev/null 2>&1; then
            echo "=== Reusing the Debian root $root"
            touch "$root/.ferropickle-ci-root"
            return
        fi
        echo "$root exists but is not a finished root (an interrupted debootstrap?):" \
            "remove it and run again" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        # A fresh machine has none: CI installs what it needs (as root, from Debian's packages).
        echo "=== Installing debootstrap"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } \
            >"$work/apt.log" 2>&1 || {
            tail -n 20 "$work/apt.log" >&2
            echo "debootstrap is needed to make the Debian unstable root" >&2
            exit 1
        }
    fi
    # The first URI of this machine's apt sources that is not the security archive.
    mirror="$({ sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources
        sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
            /etc/apt/sources.list; } 2>/dev/null | tr ' ' '\n' | grep -v -- '-security' |
        grep -m 1 . || true)"
    if [ -z "$mirror" ]; then
        echo "No apt mirror found in /etc/apt/sources.list{,.d/*.sources}" >&2
        exit 1
    fi
    echo "=== Making a Debian unstable root at $root from $mirror (once)"
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase sid "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        exit 1
    }
    touch "$root/.ferropickle-ci-root"
}

# Mounts /proc, the Rust toolchain and this checkout into the root, each at its own path, and
# copies in the machine's resolv.conf; unmounts what it mounted when the (sub)shell that called
# it exits.
mount_debian_root() {
    local root="$1" dir
    MOUNTED=()
    trap 'for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
              umount "${MOUNTED[i]}" || umount -l "${MOUNTED[i]}"; done' EXIT
    if ! mountpoint -q "$root/proc"; then
        mount -t proc proc "$root/proc" || return 1
        MOUNTED+=("$root/proc")
    fi
    for dir in "${RUSTUP_HOME:-$HOME/.rustup}" "${CARGO_HOME:-$HOME/.cargo}" "$PWD"; do
        mkdir -p "$root$dir"
        if ! mountpoint -q "$root$dir"; then
            mount --bind "$dir" "$root$dir" || return 1
            MOUNTED+=("$root$dir")
        fi
    done
    cp /etc/resolv.conf "$root/etc/resolv.conf" || return 1
}

# pip's CA bundle ($PIP_CERT, if set) at the same path in the root: copied again before each
# leg, as installing packages in the root may rebuild the root's own bundle at that path.
copy_pip_cert() {
    if [ -n "${PIP_CERT:-}" ]; then
        mkdir -p "$1$(dirname "$PIP_CERT")" && cp "$PIP_CERT" "$1$PIP_CERT"
    fi
}

# A command in the root, with the machine's Rust toolchain on PATH (the environment, pip's
# settings among it, passes through); extra VAR=value words first.
in_root() {
    local root="$1"
    shift
    chroot "$root" /usr/bin/env \
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" "$@"
}

# apt-get in the root. Debian unstable's Release files may be past their Valid-Until date on a
# mirror snapshot; they are still the packages wanted.
apt_in_root() {
    local root="$1"
    shift
    in_root "$root" DEBIAN_FRONTEND=noninteractive \
        apt-get -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0 "$@"
}
