#!/usr/bin/env bash
# Build the tiny test guest: Debian's cloud kernel + a busybox initramfs whose init loads the
# virtio balloon and virtio-mem drivers and runs `vcwork`, a workload driven by the kernel command line
# (see scripts/guest/vcwork.c). Output: $VCOORD_GUEST_DIR/{vmlinuz,initrd.gz} (default
# /var/lib/vcoord/guest). Idempotent: rebuilds only when the sources of the image changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${VCOORD_GUEST_DIR:-/var/lib/vcoord/guest}
log() { printf 'build-guest: %s\n' "$*" >&2; }

stamp=$(cat "$here/build-guest.sh" "$here/guest/init" "$here/guest/vcwork.c" | sha256sum | cut -c1-16)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.gz" ]; then
    exit 0
fi

for p in gcc libc6-dev cpio xz-utils; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
log "downloading kernel and busybox"
apt-get download -qq linux-image-cloud-amd64 busybox-static >/dev/null
kernel_pkg=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*-cloud-amd64' | head -n1)
[ -n "$kernel_pkg" ] || { log "cannot tell which kernel linux-image-cloud-amd64 depends on"; exit 1; }
apt-get download -qq "$kernel_pkg" >/dev/null
mkdir pkg root
for deb in "$kernel_pkg"_*.deb busybox-static_*.deb; do dpkg-deb -x "$deb" pkg; done
kver=${kernel_pkg#linux-image-}

mkdir -p root/bin root/sbin root/proc root/sys root/dev root/tmp root/lib/modules root/dev/shm
cp pkg/bin/busybox root/bin/busybox
for applet in sh mount insmod sleep cat echo mkdir ls free taskset; do ln -sf busybox "root/bin/$applet"; done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon virtio_mem; do
    src=$(find "pkg/lib/modules/$kver" -name "$m.ko*" | head -n1)
    if [ -z "$src" ]; then
        log "module $m not in $kver (built in?)"
        continue
    fi
    case "$src" in
        *.xz) xz -dc "$src" > "root/lib/modules/$m.ko" ;;
        *.zst) zstd -dc "$src" > "root/lib/modules/$m.ko" ;;
        *) cp "$src" "root/lib/modules/$m.ko" ;;
    esac
done
cp "$here/guest/init" root/init
chmod +x root/init
gcc -O2 -static -pthread -o root/bin/vcwork "$here/guest/vcwork.c"

mkdir -p "$out"
(cd root && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.gz.new"
cp "pkg/boot/vmlinuz-$kver" "$out/vmlinuz.new"
mv "$out/initrd.gz.new" "$out/initrd.gz"
mv "$out/vmlinuz.new" "$out/vmlinuz"
chmod 0644 "$out/initrd.gz" "$out/vmlinuz"
echo "$stamp" > "$out/stamp"
log "guest image in $out (kernel $kver)"
