#!/usr/bin/env python3
"""QEMU launch to a native node registered with its frontend, as `sesa run` sees it.

Runs `sesa run counter --nodes 1 --native` N times and times, on the frontend's
stderr, the line saying node 1 started (QEMU launched) to the line saying it joined
(booted, network up, the messenger's authenticated handshake, SWIM membership, the
control EBB served, registered). The frontend stops its QEMU when the count is done.

    cargo build --release -p sesa
    cargo build --release --manifest-path crates/sesa-native/Cargo.toml
    scripts/native-join-time.py 15 [tcg|kvm]    # default: the frontend's choice
"""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    accel = ["--accel", sys.argv[2]] if len(sys.argv) > 2 else []
    env = dict(os.environ)
    env.setdefault("SESA_KERNEL", os.path.join(ROOT, "crates/sesa-native/target/release/sesa-kernel"))
    sesa = os.path.join(ROOT, "target/release/sesa")
    times = []
    for _ in range(runs):
        frontend = subprocess.Popen(
            [sesa, "run", "counter", "--nodes", "1", "--native", "--incs", "1000", *accel],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        started = None
        try:
            for line in frontend.stderr:
                now = time.monotonic()
                if "node 1 started" in line:
                    started = now
                elif "node 1 joined" in line and started is not None:
                    times.append((now - started) * 1000)
            frontend.wait(timeout=60)
        finally:
            if frontend.poll() is None:
                frontend.kill()
                frontend.wait()
    if not times:
        sys.exit("no native node joined")
    times.sort()
    print(f"QEMU launch to the native node registered: median {statistics.median(times):.1f} ms "
          f"({times[0]:.1f}-{times[-1]:.1f}, {len(times)} runs)")


if __name__ == "__main__":
    main()
