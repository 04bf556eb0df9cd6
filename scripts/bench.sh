#!/usr/bin/env bash
# Figures for README: collection cost per tick with N paused guests (N = 1, 8, 16, 32), policy
# decision time at scale, and a soak with guests coming and going. Run as root after
# scripts/setup-host.sh and `cargo build --release`:  bash scripts/bench.sh [soak-ticks]
set -euo pipefail
cd "$(dirname "$0")/.."
VCOORD=target/release/vcoord
IMAGE=/var/lib/vcoord/guest
SOAK_TICKS=${1:-10000}
WORK=$(mktemp -d)

guest() { # name
    cat > "$WORK/$1.xml" <<XML
<domain type='qemu'><name>$1</name>
<memory unit='MiB'>256</memory><currentMemory unit='MiB'>256</currentMemory><vcpu>2</vcpu>
<features><acpi/><apic/></features>
<os><type arch='x86_64'>hvm</type><kernel>$IMAGE/vmlinuz</kernel><initrd>$IMAGE/initrd.gz</initrd>
<cmdline>console=ttyS0 quiet no_timer_check</cmdline></os>
<devices><memballoon model='virtio'><stats period='1'/></memballoon></devices></domain>
XML
    virsh create --paused "$WORK/$1.xml" >/dev/null
}

cleanup() {
    for d in $(virsh list --all --name | grep '^vcbench-' || true); do
        virsh destroy "$d" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

echo "## Collection cost per tick (paused guests, 2 vCPUs each)"
have=0
for n in 1 8 16 32; do
    while [ "$have" -lt "$n" ]; do
        have=$((have + 1))
        guest "vcbench-$have"
    done
    echo
    "$VCOORD" bench collect --connect qemu:///system --ticks 50
done

echo
echo "## Policy decision time"
"$VCOORD" bench policies --repeat 3

echo
echo "## Soak: $SOAK_TICKS ticks at 50 ms, guests destroyed and created meanwhile"
cat > "$WORK/soak.toml" <<TOML
[[host]]
name = "soak"
uri = "qemu:///system"
interval_s = 0.05
memory_interval_s = 0.5
TOML
(
    i=0
    while sleep 3; do
        i=$((i + 1))
        victim="vcbench-$(( (i % 32) + 1 ))"
        virsh destroy "$victim" >/dev/null 2>&1 || true
        guest "$victim" 2>/dev/null || true
    done
) &
churn=$!
"$VCOORD" bench soak --config "$WORK/soak.toml" --ticks "$SOAK_TICKS" --every $((SOAK_TICKS / 10))
kill "$churn" 2>/dev/null || true
wait "$churn" 2>/dev/null || true
