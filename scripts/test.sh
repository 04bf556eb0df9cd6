#!/usr/bin/env bash
# Everything vcoord's CI checks, from a fresh machine: installs and starts what is needed
# (scripts/setup-host.sh: packages, libvirtd, guest image), then format, lints, unit and
# whole-program tests on the simulator, and the end-to-end tests on real QEMU guests.
# Run as root from the repository root: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s\n' "$*"; }

step "host setup (packages, libvirtd, guest image)"
bash scripts/setup-host.sh

step "format"
cargo fmt --all -- --check

step "build (release)"
cargo build --release --workspace --all-targets

step "lints"
cargo clippy --release --workspace --all-targets -- -D warnings

step "unit, simulator, plugin and service tests"
VCOORD_REQUIRE_TOOLS=1 cargo test --release --workspace --lib --bins --test scenarios --test cli --test plugins --test compare --test service --test bad_input --test regressions --test day_in_the_life

step "package: build and install the .deb, check its unit, run the service tests on it"
deb=$(bash scripts/package.sh)
dpkg -i "$deb" >/dev/null
systemd-analyze verify /lib/systemd/system/vcoord.service
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/vcoord.service \
    | sed -n 's/.*Overall exposure level for vcoord.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.0) }' || { echo "exposure above 4.0"; exit 1; }
VCOORD_BIN=/usr/bin/vcoord VCOORD_INSTALLED=1 VCOORD_REQUIRE_TOOLS=1 cargo test --release --test service

step "end-to-end tests on real QEMU guests, the daemons being the installed package (one at a time: they measure CPU time)"
VCOORD_BIN=/usr/bin/vcoord cargo test --release --test e2e -- --include-ignored --test-threads=1
