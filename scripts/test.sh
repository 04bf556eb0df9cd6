#!/usr/bin/env bash
# Everything vcoord's CI checks, from a fresh machine: installs and starts what is needed
# (scripts/setup-host.sh: build and host packages, libvirtd; scripts/setup-test.sh: the test
# tools and the guest image), then format, lints, every unit and whole-program test on the
# simulator (every tests/*.rs: none is listed by hand), and the end-to-end tests on real QEMU
# guests.
# Run as root from the repository root: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s\n' "$*"; }

step "host setup (packages, libvirtd), test tools and guest image"
bash scripts/setup-host.sh
bash scripts/setup-test.sh

step "format"
cargo fmt --all -- --check

step "build (release)"
cargo build --release --workspace --all-targets --test e2e

step "lints"
cargo clippy --release --workspace --all-targets --test e2e -- -D warnings

step "unit, simulator, plugin and service tests"
# Every test target (tests/e2e, the real guests, is not one: it runs below), the tests that
# need a tool included (ignored by a plain `cargo test`, they fail here without it); the one of
# the installed package runs once it is installed.
cargo test --release --workspace --tests -- --include-ignored --skip the_installed_package

step "package: build and install the .deb, check its unit, run the service tests on it"
deb=$(bash scripts/package.sh)
dpkg -i "$deb" >/dev/null
systemd-analyze verify /lib/systemd/system/vcoord.service
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/vcoord.service \
    | sed -n 's/.*Overall exposure level for vcoord.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.0) }' || { echo "exposure above 4.0"; exit 1; }
VCOORD_BIN=/usr/bin/vcoord cargo test --release --test service -- --include-ignored

step "end-to-end tests on real QEMU guests, the daemons being the installed package (one at a time: they measure CPU time)"
VCOORD_BIN=/usr/bin/vcoord cargo test --release --test e2e -- --include-ignored --test-threads=1
