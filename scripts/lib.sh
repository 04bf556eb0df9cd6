#!/usr/bin/env bash
# Shared by scripts/setup-host.sh and scripts/setup-test.sh: installs Debian packages that are
# missing, idempotently. Sourced, not run.

log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# install_packages PKG...: installs those not installed yet (services they bring are installed,
# not started).
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    local extra=()
    # A backported qemu-utils conflicts with bookworm's qemu-system-x86: take both from bookworm.
    if printf '%s\n' "${missing[@]}" | grep -qx qemu-system-x86 \
        && apt-cache policy qemu-utils 2>/dev/null | grep -q 'bookworm '; then
        extra+=(qemu-utils/bookworm)
    fi
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get install -y -qq --allow-downgrades --no-install-recommends "${missing[@]}" "${extra[@]}" >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root (installs packages)"
        exit 1
    fi
}
