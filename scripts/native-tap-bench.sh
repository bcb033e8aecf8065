#!/usr/bin/env bash
# The data store on a native node reached through a tap device instead of QEMU's user
# network (slirp), against a hosted node under the same load.
#
# Runs `sesa bench kv --native <kernel> --tap sesatap0 --against hosted [ARGS...]` in a
# network namespace of its own (`unshare -n`: needs root or CAP_SYS_ADMIN), where
# sesatap0 holds 10.0.2.2/24, the gateway address the kernel expects. Clients then reach
# the guest at 10.0.2.15 through the host kernel's TCP stack and QEMU's tap backend, the
# way a NIC carries them; the hosted node is on the namespace's loopback. Everything
# ends with the namespace: the bench stops its QEMU and servers by PID. The script execs
# into the benchmark (unshare and bash exec too), so its PID is the benchmark's.
#
#   cargo build --release -p sesa
#   cargo build --release --manifest-path crates/sesa-native/Cargo.toml
#   scripts/native-tap-bench.sh [--accel kvm|tcg] [--pipeline 1,16] [--json] ...
set -euo pipefail
cd "$(dirname "$0")/.."
sesa=${SESA:-target/release/sesa}
kernel=${SESA_KERNEL:-crates/sesa-native/target/release/sesa-kernel}
for f in "$sesa" "$kernel"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "missing $f (build it first)" >&2; exit 2; }
done
exec unshare -n bash -euo pipefail -c '
    ip link set lo up
    ip tuntap add dev sesatap0 mode tap
    ip addr add 10.0.2.2/24 dev sesatap0
    ip link set sesatap0 up
    sesa=$1 kernel=$2; shift 2
    exec "$sesa" bench kv --native "$kernel" --tap sesatap0 --against hosted "$@"
' bash "$sesa" "$kernel" "$@"
