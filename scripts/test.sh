#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#   ./scripts/test.sh
# Needs the Rust toolchain; installs (apt-get, as root or through sudo) what the tests
# run besides it: memcached (the peer of `sesa bench kv --against memcached`),
# libmemcached-tools (memccapable, the protocol conformance suite run against sesa kv)
# and qemu-system-x86 (the native kernel's boot tests).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every `cargo test` output also goes here, for the closing count.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "tools the tests use"
need=()
command -v memcached >/dev/null || need+=(memcached)
command -v memccapable >/dev/null || need+=(libmemcached-tools)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# ip (iproute2): the native tests' tap device, in a network namespace of their own.
command -v ip >/dev/null || need+=(iproute2)
# python3 and addr2line (binutils): the native kernel's profile script, in its test.
command -v python3 >/dev/null || need+=(python3)
command -v addr2line >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
memcached -V
qemu-system-x86_64 --version | head -n 1

# The native kernel is a workspace of its own (built with panic = "abort"), and so is
# every application's native image (examples/wordfreq/native), built into the kernel's
# target directory to share its dependencies.
native=(--manifest-path crates/sesa-native/Cargo.toml)
wordfreq_native=(--manifest-path examples/wordfreq/native/Cargo.toml --target-dir crates/sesa-native/target)
tally_native=(--manifest-path examples/tally/native/Cargo.toml --target-dir crates/sesa-native/target)

step "formatting"
cargo fmt --all --check
cargo fmt "${native[@]}" --check
cargo fmt --manifest-path examples/wordfreq/native/Cargo.toml --check
cargo fmt --manifest-path examples/tally/native/Cargo.toml --check

step "lints (all targets, and the shuttle builds)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p sesa-ebb -p sesa-hosted --features sesa-ebb/shuttle,sesa-hosted/shuttle \
    --all-targets --locked -- -D warnings
cargo clippy "${native[@]}" --release --locked -- -D warnings
cargo clippy "${wordfreq_native[@]}" --release --locked -- -D warnings
cargo clippy "${tally_native[@]}" --release --locked -- -D warnings

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
RUSTDOCFLAGS="-D warnings" cargo doc "${native[@]}" --no-deps --locked --quiet

step "the portable crates build without std"
cargo build -p sesa-ebb -p sesa-event -p sesa-wire -p sesa-exec --locked --quiet
# An application's node side alone (what a native image links) is no_std too.
cargo build -p sesa-counter -p sesa-cat -p sesa-kv -p wordfreq -p tally --no-default-features --locked --quiet

step "tests"
cargo test --workspace --locked 2>&1 | tee -a "$results"

step "concurrency checks under shuttle (randomized schedules)"
cargo test -p sesa-ebb --features shuttle --test shuttle_ebb --locked 2>&1 | tee -a "$results"
cargo test -p sesa-hosted --features shuttle --test shuttle_inbox --locked 2>&1 | tee -a "$results"

step "a bounded sweep of the simulator: 200 seeds of each workload (idmap, counter, kv, store, names) under faults"
# Release build: a seed of the counter workload is ~0.1 s there, ~1 s in a debug build.
cargo build --release -p sesa --locked --quiet
./target/release/sesa sim --seeds 200
# And the store under the widest faults, its clients deleting too.
./target/release/sesa sim --workload store --seeds 200 --faults wide --deletes
# And the naming service of global EBBs under the widest faults.
./target/release/sesa sim --workload names --seeds 200 --faults wide

step "a short fuzz run of every outside-bytes decoder (fuzz/, cargo-fuzz)"
if cargo +nightly --version >/dev/null 2>&1; then
    ./scripts/fuzz.sh 20
else
    echo "NOT RUN: no nightly toolchain here; cargo-fuzz needs one (./scripts/fuzz.sh)"
fi

# The closing line: every test the cargo runs above executed.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$results"
