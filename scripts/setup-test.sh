#!/usr/bin/env bash
# What vcoord's tests need beyond scripts/setup-host.sh: the tools they check the real things
# with, and the guest image of the end-to-end tests. Idempotent; run as root (scripts/test.sh
# runs it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
require_root

# systemd: systemd-analyze for the unit checks (systemd need not run); man-db: the unit's man:
# link; prometheus: promtool, to check the metrics endpoint and the alert rules; chromium and a
# font: a real headless browser for the compare report; python3-venv: a virtualenv for
# OpenStack Watcher's own query builder (the fleet test); cpio: the guest image.
install_packages systemd man-db prometheus chromium fonts-dejavu-core python3-venv cpio

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
