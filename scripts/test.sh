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

step "unit, simulator and plugin tests"
cargo test --release --workspace --lib --bins --test scenarios --test cli --test plugins --test compare

step "end-to-end tests on real QEMU guests (one at a time: they measure CPU time)"
VCOORD_REQUIRE_E2E=1 cargo test --release --test e2e -- --test-threads=1
