#!/usr/bin/env python3
"""TCP round trips to a native node's echo, after idle pauses and back to back.

Boots the kernel under TCG with `-append echo` and a virtio-net device behind QEMU's
user network, connects through the forwarded port, then times 30 one-byte round trips
each after 50 ms of silence (the kernel has gone to sleep) and 300 back to back (it
polls). QEMU is waited for (the kernel exits after its one client) and killed by its
PID if it overstays.

    cargo build --release --manifest-path crates/sesa-native/Cargo.toml
    scripts/native-echo-rtt.py crates/sesa-native/target/release/sesa-kernel
"""
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    kernel = sys.argv[1]
    port = free_port()
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-M", "microvm", "-cpu", "max",
         "-nodefaults", "-no-user-config", "-display", "none", "-serial", "null",
         "-no-reboot", "-m", "256", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7",
         "-device", "virtio-net-device,netdev=n0", "-kernel", kernel, "-append", "echo"])
    try:
        deadline = time.monotonic() + 20
        while True:
            if time.monotonic() > deadline:
                sys.exit("the kernel did not echo within 20 s")
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"x")
                if s.recv(1):
                    break
            except OSError:
                time.sleep(0.02)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        idle, busy = [], []
        for _ in range(30):
            time.sleep(0.05)
            t = time.perf_counter()
            s.sendall(b"p")
            s.recv(1)
            idle.append((time.perf_counter() - t) * 1e6)
        for _ in range(300):
            t = time.perf_counter()
            s.sendall(b"p")
            s.recv(1)
            busy.append((time.perf_counter() - t) * 1e6)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        print(f"after 50 ms idle: p50 {statistics.median(idle):.0f} us, max {max(idle):.0f} us; "
              f"back to back: p50 {statistics.median(busy):.0f} us")
        qemu.wait(timeout=20)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()


if __name__ == "__main__":
    main()
