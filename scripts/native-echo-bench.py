#!/usr/bin/env python3
"""QEMU launch to the native kernel's first serial byte and to its first TCP answer.

Boots the kernel N times under TCG with a virtio-net device behind QEMU's user network
(`echo` on its command line), connects through the forwarded port as soon as the kernel
says it listens, and times the first byte echoed back. Every QEMU is waited for (the
kernel exits after serving one client) and killed if it overstays.

    cargo build --release --manifest-path crates/sesa-native/Cargo.toml
    scripts/native-echo-bench.py crates/sesa-native/target/release/sesa-kernel 15
"""
import socket
import statistics
import subprocess
import sys
import time


def boot(kernel, port):
    started = time.monotonic()
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-M", "microvm", "-nodefaults",
         "-no-user-config", "-display", "none", "-serial", "stdio",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot", "-m", "256",
         "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7",
         "-device", "virtio-net-device,netdev=n0", "-kernel", kernel, "-append", "echo"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out = qemu.stdout.read(1)
        first = time.monotonic() - started
        while b"echo on port" not in out:
            byte = qemu.stdout.read(1)
            if not byte:
                raise RuntimeError(f"the kernel ended before listening: {out!r}")
            out += byte
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"x")
            s.recv(1)
            answered = time.monotonic() - started
        qemu.wait(timeout=10)
        return first * 1000, answered * 1000
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()


def main():
    kernel, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15
    results = [boot(kernel, 17200 + i) for i in range(runs)]
    for name, values in (("first serial byte", [r[0] for r in results]),
                         ("first TCP answer", [r[1] for r in results])):
        print(f"{name}: median {statistics.median(values):.1f} ms "
              f"({min(values):.1f}-{max(values):.1f}, {runs} boots)")


if __name__ == "__main__":
    main()
