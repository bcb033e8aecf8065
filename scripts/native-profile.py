#!/usr/bin/env python3
"""Functions from the native kernel's profile (`profile=<hz>` on its command line).

Reads the console lines `sesa-native: profile <address> <count>` of the last complete
report in LOG (the kernel prints one per 64 Ki samples), resolves each address with
binutils' addr2line against the kernel image that printed it (built with debug
information, as the release profile is), and prints the functions the code was compiled
into by their share of the samples (an address in code inlined from elsewhere counts for
the function it was inlined into).

    cargo build --release --manifest-path crates/sesa-native/Cargo.toml
    target/release/sesa bench kv --native crates/sesa-native/target/release/sesa-kernel \\
        --accel kvm --kernel-args profile=10000 --pipeline 16 --runs 1 --seconds 10 2> log
    scripts/native-profile.py crates/sesa-native/target/release/sesa-kernel log [--top 40]
"""
import argparse
import collections
import re
import subprocess
import sys


def last_report(log):
    report, current, expected = None, None, 0
    for line in log:
        m = re.search(r"sesa-native: profile: (\d+) samples, \d+ addresses \(the first (\d+)", line)
        if m:
            current, expected = {"total": int(m.group(1)), "addrs": []}, int(m.group(2))
            continue
        m = re.search(r"sesa-native: profile (0x[0-9a-f]+) (\d+)", line)
        if m and current is not None:
            current["addrs"].append((int(m.group(1), 16), int(m.group(2))))
            if len(current["addrs"]) == expected:
                report, current = current, None
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kernel")
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with open(args.log, errors="replace") as log:
        report = last_report(log)
    if report is None:
        sys.exit(f"{args.log}: no complete profile report (was profile=<hz> on the command line, "
                 "and did the run last until 64 Ki samples were taken?)")
    addrs = [a for a, _ in report["addrs"]]
    # Two lines per address: the function, then the place.
    out = subprocess.run(["addr2line", "-f", "-C", "-e", args.kernel] + [hex(a) for a in addrs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    names = out[0::2]
    by_function = collections.Counter()
    for name, (_, count) in zip(names, report["addrs"]):
        by_function[re.sub(r"::h[0-9a-f]{16}$", "", name)] += count
    total = report["total"]
    listed = sum(c for _, c in report["addrs"])
    print(f"{total} samples; the {len(addrs)} addresses listed hold {listed} "
          f"({100 * listed / total:.1f}%)")
    for name, count in by_function.most_common(args.top):
        print(f"{100 * count / total:6.2f}%  {name}")


if __name__ == "__main__":
    main()
