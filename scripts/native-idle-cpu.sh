#!/usr/bin/env bash
# CPU time QEMU spends while a native node idles: boots the kernel as a messenger node
# (`-append "node 2 <secret>"`, `-cpu max` for RDRAND, a virtio-net device), waits 2 s,
# then reads QEMU's user+system time from /proc over 4 s. QEMU is stopped by its PID.
#
#   cargo build --release --manifest-path crates/sesa-native/Cargo.toml
#   scripts/native-idle-cpu.sh crates/sesa-native/target/release/sesa-kernel [CPUS] [tcg|kvm]
set -euo pipefail
kernel=$1
cpus=${2:-1}
accel=${3:-tcg}
cpu=max
if [ "$accel" = kvm ]; then cpu=host,-arch-capabilities; fi
secret=$(printf '5a%.0s' {1..32})
qemu-system-x86_64 -accel "$accel" -M microvm,rtc=on -smp "$cpus" -cpu "$cpu" -nodefaults \
    -no-user-config -display none -serial null \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot -m 256 \
    -netdev user,id=n0 -device virtio-net-device,netdev=n0 \
    -kernel "$kernel" -append "node 2 $secret" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks)
sleep 4
t1=$(ticks)
hz=$(getconf CLK_TCK)
echo "QEMU CPU while the node idles (-smp $cpus, $accel): $(( (t1 - t0) * 1000 / hz )) ms in 4000 ms"
