#!/usr/bin/env bash
# A Linux guest that runs a hosted `sesa kv`, or memcached: the peers a native node is
# compared with on equal terms (`sesa bench kv --native <kernel> --against hosted-vm`
# or `memcached-vm`). EbbRT's own comparison was this one: its native memcached against
# memcached in a Linux VM on the same hypervisor and virtual NIC (1.88x on one core).
#
# Builds OUT (default target/linux-guest) from Debian's packages, fetched with
# `apt-get download` into OUT/debs once:
#   OUT/vmlinuz     Debian's kernel (linux-image-amd64's current version)
#   OUT/initrd.img  busybox-static, the six modules virtio-net needs on QEMU's microvm
#                   machine (found there by ACPI), this sesa binary and the host's
#                   memcached (when on PATH) with the shared libraries they link, and
#                   an /init that brings eth0 up and runs `sesa kv --listen <ip>` or
#                   `memcached -l <ip>`
# The guest's address, cores, memory and server come from its kernel command line (the
# bench sets them): sesaip=A.B.C.D/NN, sesagw=A.B.C.D, sesacores=N, sesamb=M,
# sesaserver=sesa|memcached.
# Re-run it after rebuilding sesa: the guest carries its own copy.
#
#   cargo build --release -p sesa
#   scripts/linux-guest.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/linux-guest}
sesa=${SESA:-target/release/sesa}
[ -x "$sesa" ] || { echo "missing $sesa (cargo build --release -p sesa)" >&2; exit 2; }
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
updated=no
# Package lists missing or so old that their files left the mirror: refresh them once.
refresh() {
    [ $updated = no ] || return 1
    updated=yes
    echo "apt-get update (package lists missing or stale)" >&2
    $sudo apt-get update -qq
}
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
image=$(kernel_package)
[ -n "$image" ] || { refresh && image=$(kernel_package); }
[ -n "$image" ] || { echo "apt-cache knows no linux-image-amd64" >&2; exit 2; }
fetch() {
    # apt's download sandbox user cannot write most directories: fetch in /tmp.
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed') || true
    mv "$tmp"/*.deb "$out/debs/" 2>/dev/null
    local moved=$?
    rm -rf "$tmp"
    return $moved
}
for pkg in "$image" busybox-static; do
    if ! ls "$out/debs/${pkg}"_*.deb >/dev/null 2>&1; then
        fetch "$pkg" || { refresh && fetch "$pkg"; } ||
            { echo "apt-get download $pkg failed" >&2; exit 2; }
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for deb in "$out/debs/${image}"_*.deb "$out/debs/"busybox-static_*.deb; do
    dpkg-deb -x "$deb" "$work/pkg"
done
cp "$work/pkg/boot/vmlinuz-${image#linux-image-}" "$out/vmlinuz"

root=$work/root
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,lib/modules}
cp "$work/pkg/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
# In load order: virtio-net on virtio-mmio.
modules=(virtio_ring virtio virtio_mmio failover net_failover virtio_net)
for m in "${modules[@]}"; do
    f=$(find "$work/pkg/lib/modules" -name "$m.ko" | head -n1)
    [ -n "$f" ] || { echo "module $m not in $image" >&2; exit 2; }
    cp "$f" "$root/lib/modules/"
done
objcopy --strip-debug "$sesa" "$root/bin/sesa"
binaries=("$sesa")
if memcached=$(command -v memcached); then
    cp "$memcached" "$root/bin/memcached"
    binaries+=("$memcached")
    echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
else
    echo "no memcached on PATH: the guest will refuse sesaserver=memcached" >&2
fi
# The loader and libraries at the paths the binaries name.
for binary in "${binaries[@]}"; do
    ldd "$binary" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'
done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cat >"$root/init" <<EOF
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${modules[*]}; do insmod /lib/modules/\$m.ko || echo "init: insmod \$m failed"; done
ip link set lo up
ip addr add "\${sesaip:?sesaip= missing on the kernel command line}" dev eth0
ip link set eth0 up
[ -n "\${sesagw:-}" ] && ip route add default via "\$sesagw"
server=\${sesaserver:-sesa}
echo "init: eth0 \$sesaip up; \$server on \${sesacores:-1} core(s)"
# init must not exit (the kernel would panic): poweroff when the store does.
case \$server in
    sesa) /bin/sesa kv --listen "\${sesaip%/*}" --port 11211 --cores "\${sesacores:-1}" -m "\${sesamb:-64}" ;;
    memcached)
        if [ -x /bin/memcached ]; then
            /bin/memcached -l "\${sesaip%/*}" -p 11211 -U 0 -t "\${sesacores:-1}" -m "\${sesamb:-64}" -u root
        else
            echo "init: no memcached in this guest (install it and re-run scripts/linux-guest.sh)"
        fi ;;
    *) echo "init: sesaserver=\$server: not sesa or memcached" ;;
esac
echo "init: \$server exited"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$out/initrd.img"
echo "$out/vmlinuz, $out/initrd.img ($image, $(du -h "$out/initrd.img" | cut -f1))"
