#!/usr/bin/env bash
# Prepare this machine to build vcoord and to run a real libvirtd with QEMU guests.
# Idempotent; run as root. Installs packages, creates what libvirtd needs, starts virtlogd and
# libvirtd when they are not running, and builds the test guest image (scripts/build-guest.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages and starts libvirtd)"
    exit 1
fi

# systemd: systemd-analyze for the unit checks (systemd need not run); man-db: the unit's man: link;
# prometheus: promtool, to check the metrics endpoint and the alert rules; chromium and a font:
# a real headless browser for the compare report; python3-venv: a virtualenv for OpenStack
# Watcher's own query builder (the fleet test).
packages=(pkg-config libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
          qemu-system-x86 cpio systemd man-db prometheus chromium fonts-dejavu-core python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    extra=()
    # A backported qemu-utils conflicts with bookworm's qemu-system-x86: take both from bookworm.
    if apt-cache policy qemu-utils 2>/dev/null | grep -q 'bookworm '; then
        extra+=(qemu-utils/bookworm)
    fi
    # Packages with services (prometheus) are installed, not started.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get install -y -qq --allow-downgrades --no-install-recommends "${missing[@]}" "${extra[@]}" >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# libvirtd's QEMU driver refuses to start without these (normally made by libvirt-daemon-system).
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt

# A /dev/kvm that only root may open makes libvirt judge KVM unusable for the QEMU user while
# its capability probe (run as root) saw it enabled: the capability cache is then stale on every
# call and each domain start re-probes QEMU (~40 s here). Give the kvm group access, as udev
# does on a normal install. Guests still run as <domain type='qemu'>.
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if ! pgrep -x virtlogd >/dev/null; then
    log "starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d
fi
for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -c qemu:///system version >/dev/null || { log "libvirtd does not answer"; exit 1; }

# OpenStack Watcher from the Python registry, in a virtualenv of its own: the fleet test builds
# its Prometheus queries with Watcher's own code.
watcher_venv=/var/lib/vcoord/watcher-venv
watcher_module=watcher.decision_engine.datasources.prometheus_base
if ! "$watcher_venv/bin/python" -c "import $watcher_module" 2>/dev/null; then
    log "installing python-watcher into $watcher_venv"
    mkdir -p "$(dirname "$watcher_venv")"
    python3 -m venv "$watcher_venv"
    "$watcher_venv/bin/pip" install -q --disable-pip-version-check python-watcher==17.0.0
    "$watcher_venv/bin/python" -c "import $watcher_module"
fi

"$here/build-guest.sh"
log "ready"
