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
# `--against hosted-vm` (or `memcached-vm`) puts the peer, a hosted node (or memcached)
# in a Linux guest built by scripts/linux-guest.sh, under the same QEMU on a tap device
# of its own: sesatap1, holding 10.0.3.2/24, the guest at 10.0.3.15.
#
#   cargo build --release -p sesa
#   cargo build --release --manifest-path crates/sesa-native/Cargo.toml
#   scripts/native-tap-bench.sh [--accel kvm|tcg] [--against hosted|hosted-vm|memcached-vm] [--pipeline 1,16] [--json] ...
set -euo pipefail
cd "$(dirname "$0")/.."
sesa=${SESA:-target/release/sesa}
kernel=${SESA_KERNEL:-crates/sesa-native/target/release/sesa-kernel}
for f in "$sesa" "$kernel"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "missing $f (build it first)" >&2; exit 2; }
done
peer=(--against hosted)
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --against)
            [ $# -ge 2 ] || { echo "--against needs a value" >&2; exit 2; }
            peer=(--against "$2")
            case $2 in *-vm) peer+=(--guest-tap sesatap1) ;; esac
            shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
exec unshare -n bash -euo pipefail -c '
    ip link set lo up
    ip tuntap add dev sesatap0 mode tap
    ip addr add 10.0.2.2/24 dev sesatap0
    ip link set sesatap0 up
    ip tuntap add dev sesatap1 mode tap
    ip addr add 10.0.3.2/24 dev sesatap1
    ip link set sesatap1 up
    sesa=$1 kernel=$2; shift 2
    exec "$sesa" bench kv --native "$kernel" --tap sesatap0 "$@"
' bash "$sesa" "$kernel" "${peer[@]}" "${args[@]}"
